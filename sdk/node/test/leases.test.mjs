// Dynamic secrets (PostgreSQL credentials from the database engine): the
// lease renewed at two thirds, new credentials before the max TTL, the lease
// revoked on close. Needs PostgreSQL at $PALISADE_TEST_PG_URL (default
// postgres://postgres@127.0.0.1:5432/test): skipped without it, unless
// PALISADE_REQUIRE_SERVICES=1.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { ErrorCodes, Palisade } from '../dist/esm/index.js';
import { leaked, sleep, startServer } from './helpers.mjs';

const pgUrl = new URL(process.env.PALISADE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test');
const reachable = await new Promise((resolve) => {
  const s = net.connect(Number(pgUrl.port || 5432), pgUrl.hostname);
  s.once('connect', () => (s.destroy(), resolve(true)));
  s.once('error', () => resolve(false));
});
if (!reachable && process.env.PALISADE_REQUIRE_SERVICES === '1') {
  throw new Error(`PostgreSQL is not reachable at ${pgUrl.host} and PALISADE_REQUIRE_SERVICES=1`);
}
const skip = reachable ? false : `PostgreSQL is not reachable at ${pgUrl.host}`;

let server;
let client;
before(async () => {
  if (skip) return;
  server = await startServer();
  await server.api('POST', 'sys/mounts/database', { type: 'database' });
  const user = decodeURIComponent(pgUrl.username || 'postgres');
  await server.api('POST', 'database/config/pg', {
    plugin_name: 'postgresql-database-plugin',
    connection_url: `postgres://{{username}}:{{password}}@${pgUrl.host}${pgUrl.pathname}`,
    username: user,
    password: decodeURIComponent(pgUrl.password || 'unused-with-trust-auth'),
    allowed_roles: '*',
  });
  await server.api('POST', 'database/roles/app', {
    db_name: 'pg',
    // the lease starts before the database role is created, so on a loaded
    // machine the SDK sees it late; renewing at two thirds leaves a third
    // (2 s) of slack for that
    default_ttl: '6s',
    max_ttl: '9s',
    creation_statements: `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
  });
  client = new Palisade({ address: server.addr, auth: server.root });
});
after(async () => {
  await client?.close();
  await server?.stop();
});

const lookup = async (leaseId) => {
  const r = await fetch(`${server.addr}/v1/sys/leases/lookup`, {
    method: 'PUT',
    headers: { 'x-vault-token': server.root, 'content-type': 'application/json' },
    body: JSON.stringify({ lease_id: leaseId }),
  });
  return r.status;
};

test('a lease is renewed, replaced before its max TTL, and revoked on close', { skip }, async () => {
  const creds = client.leased('database/creds/app');
  const events = [];
  creds.on('renewed', () => events.push('renewed'));
  const changed = new Promise((r) => creds.once('change', r));
  const first = await creds.get();
  assert.match(String(first.data.username), /\S/);
  assert.ok(first.leaseId.startsWith('database/creds/app/'));
  assert.equal(await lookup(first.leaseId), 200);
  // renewed at 4 s (two thirds of 6 s), granted what the max TTL (9 s)
  // leaves as long as that is a third of what was asked; once less is left
  // (at about 8 s): new credentials
  const next = await changed;
  assert.ok(events.includes('renewed'), JSON.stringify(events));
  assert.notEqual(next.data.username, first.data.username);
  assert.notEqual(next.leaseId, first.leaseId);
  assert.equal((await creds.get()).leaseId, next.leaseId);
  await sleep(200);
  assert.equal(await lookup(first.leaseId), 400, 'the replaced lease is revoked');
  await creds.close();
  assert.equal(await lookup(next.leaseId), 400, 'close() revokes the lease');
  await assert.rejects(creds.get(), (e) => e.code === ErrorCodes.CLOSED);
  // the server log never shows the generated passwords
  assert.deepEqual(leaked(server.output(), [String(first.data.password), String(next.data.password)]), []);
});

test('a lease revoked behind the SDK: new credentials at the next renewal', { skip }, async () => {
  const creds = client.leased('database/creds/app');
  const first = await creds.get();
  await server.api('PUT', 'sys/leases/revoke', { lease_id: first.leaseId });
  const changed = new Promise((r) => creds.once('change', r));
  await creds.renew();
  const next = await changed;
  assert.notEqual(next.leaseId, first.leaseId);
  await creds.close();
});
