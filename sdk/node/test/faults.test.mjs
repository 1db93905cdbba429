// Faults a real server does not produce on demand, from a fake one on
// loopback: answers that echo the request (no secret may reach a message),
// malformed leases (no request storm).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { ClientCredentials, ErrorCodes, Palisade, appRole } from '../dist/esm/index.js';
import { leaked, sleep } from './helpers.mjs';

let fake;
let addr;
let handler = () => ({ status: 404, body: {} });
const seen = [];
before(async () => {
  fake = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      seen.push(`${req.method} ${req.url}`);
      const { status, body } = handler(req, raw);
      res.statusCode = status;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(body));
    });
  });
  await new Promise((r) => fake.listen(0, '127.0.0.1', r));
  addr = `http://127.0.0.1:${fake.address().port}`;
});
after(() => fake?.close());

/** Every error text the server gives repeats what it was sent (body and authorization). */
const echo = (req, raw) => {
  const auth = req.headers.authorization ?? req.headers['x-vault-token'] ?? '';
  // the request, quoted in every encoding a server might use
  const forms = [raw, Buffer.from(raw).toString('hex'), Buffer.from(raw).toString('hex').toUpperCase(), JSON.stringify(raw),
    JSON.stringify(raw).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`),
    encodeURIComponent(raw).toLowerCase(), new URLSearchParams({ v: raw }).toString(), Buffer.from(raw).toString('base64').replace(/(.{16})/g, '$1\n')];
  return { status: 400, body: { errors: forms.map((f) => `cannot use ${f} (auth ${auth})`), error: `bad ${raw} ${auth}` } };
};

test('an echoing server: secret values, short secret IDs, client secrets in any encoding are redacted', async () => {
  handler = echo;
  const messages = [];
  const secrets = ['Sup3r-Secret-Passw0rd', 'pw12345', 'tenant-ctx-42', 'pso_clientsecret+/=%', 'plain-field-value', 'Pa"ss\\wörd 918', '918273645'];
  const client = new Palisade({ address: addr, auth: 'hvs.fixedtoken1234' });
  await assert.rejects(client.kv().put('app/db', { password: secrets[0] }), (e) => (messages.push(e.message, ...e.errors), e.code === ErrorCodes.BAD_REQUEST));
  await assert.rejects(client.kv().put('app/db', { password: secrets[5], pin: 918273645 }), (e) => (messages.push(e.message, ...e.errors), e.code === ErrorCodes.BAD_REQUEST));
  await assert.rejects(client.transit().encryptField('k', secrets[4], { context: secrets[2] }), (e) => (messages.push(e.message), true));
  const login = new Palisade({ address: addr, auth: appRole({ roleId: 'role', secretId: secrets[1] }) });
  await assert.rejects(login.kv().get('x'), (e) => (messages.push(e.message), e.code === ErrorCodes.AUTH_FAILED));
  for (const authMethod of ['client_secret_basic', 'client_secret_post']) {
    const cc = new ClientCredentials({ tokenUrl: `${addr}/token`, clientId: 'svc', clientSecret: secrets[3], authMethod });
    await assert.rejects(cc.getToken(), (e) => (messages.push(e.message), e.code === ErrorCodes.AUTH_FAILED));
  }
  const text = messages.join('\n');
  const forms = secrets.flatMap((s) => [s, encodeURIComponent(s), Buffer.from(s).toString('base64'), Buffer.from(`svc:${encodeURIComponent(s)}`).toString('base64'),
    Buffer.from(s).toString('hex'), Buffer.from(s).toString('hex').toUpperCase(), JSON.stringify(s).slice(1, -1), encodeURIComponent(s).toLowerCase()]);
  assert.deepEqual(leaked(text, forms), [], text);
  assert.deepEqual(leaked(text, ['hvs.fixedtoken1234']), []);
  assert.match(text, /withheld/);
  // a plain-worded refusal is kept: the operator still learns why
  handler = () => ({ status: 400, body: { errors: ['invalid role ID or secret ID'] } });
  const again = new Palisade({ address: addr, auth: appRole({ roleId: 'role', secretId: secrets[1] }) });
  await assert.rejects(again.kv().get('x'), (e) => e.code === ErrorCodes.AUTH_FAILED && /invalid role ID or secret ID/.test(e.message) && !/withheld/.test(e.message));
  await again.close();
  await client.close();
  await login.close();
});

test('a lease without lease_duration is a bad answer, and causes no request storm', async () => {
  seen.length = 0;
  handler = (req) => (req.url.startsWith('/v1/database/creds') ? { status: 200, body: { lease_id: 'database/creds/app/x1', data: { username: 'u', password: 'p-123456' } } } : { status: 204, body: {} });
  const client = new Palisade({ address: addr, auth: 'hvs.fixedtoken1234' });
  const creds = client.leased('database/creds/app');
  await assert.rejects(creds.get(), (e) => e.code === ErrorCodes.BAD_RESPONSE);
  await sleep(300);
  assert.equal(seen.length, 1, seen.join(', '));
  await creds.close();
  // lease_duration 0: a lease without expiry, read once, never renewed or revoked while in use
  seen.length = 0;
  handler = (req) =>
    req.url.startsWith('/v1/database/creds')
      ? { status: 200, body: { lease_id: `database/creds/app/${seen.length}`, lease_duration: 0, data: { username: 'u', password: 'p-123456' } } }
      : { status: 204, body: {} };
  const forever = client.leased('database/creds/app', { revokeOnClose: false });
  const a = await forever.get();
  const b = await forever.get();
  await sleep(300);
  assert.equal(a.leaseId, b.leaseId);
  assert.deepEqual(seen, ['GET /v1/database/creds/app']);
  await forever.close();
  await client.close();
});
