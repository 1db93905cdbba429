// Field-level encryption with the transit engine.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ErrorCodes, Palisade } from '../dist/esm/index.js';
import { leaked, startServer } from './helpers.mjs';

let server;
let client;
const messages = [];
before(async () => {
  server = await startServer();
  await server.api('POST', 'sys/mounts/transit', { type: 'transit' });
  await server.api('POST', 'transit/keys/customers', {});
  await server.api('POST', 'transit/keys/tenants', { derived: true });
  client = new Palisade({ address: server.addr, auth: server.root });
});
after(async () => {
  await client?.close();
  await server?.stop();
});

test('encryptField and decryptField round-trip; the ciphertext is not the plaintext', async () => {
  const t = client.transit();
  const ct = await t.encryptField('customers', 'alice@example.com');
  assert.match(ct, /^vault:v1:/);
  assert.ok(!ct.includes('alice'));
  assert.equal(await t.decryptField('customers', ct), 'alice@example.com');
  const bytes = Buffer.from([0, 1, 2, 255]);
  assert.deepEqual(await t.decryptFieldBytes('customers', await t.encryptField('customers', bytes)), bytes);
  // the same plaintext twice: two different ciphertexts (random nonces)
  assert.notEqual(await t.encryptField('customers', 'x'), await t.encryptField('customers', 'x'));
});

test('a derived key binds the context: another tenant cannot decrypt', async () => {
  const t = client.transit();
  const ct = await t.encryptField('tenants', 'secret-of-tenant-a', { context: 'tenant-a' });
  assert.equal(await t.decryptField('tenants', ct, { context: 'tenant-a' }), 'secret-of-tenant-a');
  await assert.rejects(t.decryptField('tenants', ct, { context: 'tenant-b' }), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.BAD_REQUEST && e.status === 400;
  });
  await assert.rejects(t.encryptField('tenants', 'x'), (e) => e.code === ErrorCodes.BAD_REQUEST);
});

test('encryptFields / decryptFields: one request for a record, other fields untouched', async () => {
  const t = client.transit();
  let requests = 0;
  const orig = client.transport.request.bind(client.transport);
  client.transport.request = (...a) => {
    requests++;
    return orig(...a);
  };
  const record = { id: 7, email: 'bob@example.com', ssn: '078-05-1120', note: null };
  const enc = await t.encryptFields('customers', record, ['email', 'ssn', 'note']);
  assert.equal(requests, 1);
  assert.equal(enc.id, 7);
  assert.equal(enc.note, null);
  assert.match(enc.email, /^vault:v1:/);
  assert.match(enc.ssn, /^vault:v1:/);
  assert.deepEqual(record.email, 'bob@example.com', 'the input is not changed');
  const dec = await t.decryptFields('customers', enc, ['email', 'ssn', 'note']);
  assert.deepEqual(dec, record);
  assert.equal(requests, 2);
  client.transport.request = orig;
  const batch = await t.encryptBatch('customers', ['a', 'b', 'c']);
  assert.deepEqual(await t.decryptBatch('customers', batch), ['a', 'b', 'c']);
  assert.deepEqual(await t.encryptBatch('customers', []), []);
  await assert.rejects(t.encryptFields('customers', { n: 5 }, ['n']), (e) => e.code === ErrorCodes.INVALID_ARGUMENT);
});

test('a tampered ciphertext fails (and a batch names the item, never the value)', async () => {
  const t = client.transit();
  const ct = await t.encryptField('customers', 'tamper-me-please');
  const raw = Buffer.from(ct.slice('vault:v1:'.length), 'base64');
  raw[raw.length - 1] ^= 1;
  const bad = `vault:v1:${raw.toString('base64')}`;
  await assert.rejects(t.decryptField('customers', bad), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.BAD_REQUEST;
  });
  await assert.rejects(t.decryptBatch('customers', [ct, bad]), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.BAD_REQUEST && /item 1/.test(e.message);
  });
  await assert.rejects(t.decryptField('customers', 'plaintext-not-ciphertext'), (e) => e.code === ErrorCodes.INVALID_ARGUMENT);
});

test('a token without transit rights: ERR_PALISADE_PERMISSION_DENIED', async () => {
  const weak = (await server.api('POST', 'auth/token/create', { policies: ['default'] })).auth.client_token;
  const c = new Palisade({ address: server.addr, auth: weak });
  await assert.rejects(c.transit().encryptField('customers', 'x'), (e) => e.code === ErrorCodes.PERMISSION_DENIED);
  await c.close();
});

test('no plaintext appears in error messages', () => {
  assert.deepEqual(leaked(messages.join('\n'), ['secret-of-tenant-a', 'tamper-me-please', server.root]), []);
});
