// KV v2 reads, the watched-secret cache, stale serving and its limit, change events.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ErrorCodes, Palisade, PalisadeError } from '../dist/esm/index.js';
import { leaked, sleep, startConfiguredServer, startServer } from './helpers.mjs';

let server;
const messages = [];
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** Counts the client's requests by path. */
function counting(client) {
  const counts = new Map();
  const orig = client.transport.request.bind(client.transport);
  client.transport.request = (method, path, ...rest) => {
    counts.set(`${method} ${path}`, (counts.get(`${method} ${path}`) ?? 0) + 1);
    return orig(method, path, ...rest);
  };
  return counts;
}

test('kv get and put, and the errors for a missing secret and a denied path', async () => {
  const client = new Palisade({ address: server.addr, auth: server.root });
  const kv = client.kv('secret');
  const v = await kv.put('app/db', { password: 'first-password-1' });
  assert.equal(v, 1);
  const got = await kv.get('app/db');
  assert.deepEqual(got.data, { password: 'first-password-1' });
  assert.equal(got.version, 1);
  await assert.rejects(kv.get('app/none'), (e) => e instanceof PalisadeError && e.code === ErrorCodes.NOT_FOUND && e.status === 404);
  // a token whose policy grants nothing: 403 permission denied, not a re-login
  const weak = (await server.api('POST', 'auth/token/create', { policies: ['default'], no_default_policy: false })).auth.client_token;
  const limited = new Palisade({ address: server.addr, auth: weak });
  await assert.rejects(limited.kv().get('app/db'), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.PERMISSION_DENIED && e.status === 403;
  });
  // a path that tries to leave its mount is refused before any request
  assert.throws(() => kv.watch('../sys/seal'), (e) => e.code === ErrorCodes.INVALID_ARGUMENT);
  await assert.rejects(kv.get('app/%2e%2e'), (e) => e.code === ErrorCodes.INVALID_ARGUMENT);
  await client.close();
  await limited.close();
});

test('a watched secret is read once while fresh, and a new version is announced', async () => {
  const client = new Palisade({ address: server.addr, auth: server.root });
  const counts = counting(client);
  const kv = client.kv();
  await kv.put('app/api', { key: 'k1-xxxxxxxx' });
  const w = kv.watch('app/api', { refreshMs: 300, followRotation: false, background: false });
  const [a, b] = await Promise.all([w.get(), w.get()]);
  assert.equal(a.data.key, 'k1-xxxxxxxx');
  assert.equal(b.version, a.version);
  await w.get();
  assert.equal(counts.get('GET secret/data/app/api'), 1, 'three gets while fresh, one read');
  // callers share the cached object: it cannot be changed under the others
  assert.throws(() => {
    a.data.key = 'changed';
  }, TypeError);
  assert.equal((await w.get()).data.key, 'k1-xxxxxxxx');
  const changed = new Promise((r) => w.once('change', r));
  await kv.put('app/api', { key: 'k2-xxxxxxxx' });
  assert.equal((await w.get()).data.key, 'k1-xxxxxxxx', 'still fresh: the cached version');
  await sleep(350);
  const c = await w.get();
  assert.equal(c.data.key, 'k2-xxxxxxxx');
  const ev = await changed;
  assert.deepEqual([ev.previousVersion, ev.version], [a.version, a.version + 1]);
  w.close();
  await client.close();
});

test('a sealed server: the cached value is served, marked stale, then ERR_PALISADE_STALE', async () => {
  const sealed = await startServer();
  const client = new Palisade({ address: sealed.addr, auth: sealed.root });
  const kv = client.kv();
  await kv.put('app/sealed', { password: 'sealed-password-1' });
  const w = kv.watch('app/sealed', { refreshMs: 100, maxStaleMs: 1200, followRotation: false, background: false });
  const first = await w.get();
  assert.equal(first.stale, false);
  const errors = [];
  w.on('refresh-error', (e) => errors.push(e));
  await sealed.api('PUT', 'sys/seal');
  try {
    await sleep(150);
    const s = await w.get();
    assert.equal(s.stale, true);
    assert.equal(s.data.password, 'sealed-password-1');
    assert.equal(errors.at(-1)?.code, ErrorCodes.SEALED);
    // a direct read says sealed
    await assert.rejects(kv.get('app/sealed'), (e) => e.code === ErrorCodes.SEALED && e.status === 503);
    await sleep(1200);
    await assert.rejects(w.get(), (e) => {
      messages.push(e.message);
      return e.code === ErrorCodes.STALE && e.cause?.code === ErrorCodes.SEALED && /maxStaleMs/.test(e.message);
    });
  } finally {
    w.close();
    await client.close();
    await sealed.stop();
  }
});

test('a server that is down: stale within maxStaleMs, then ERR_PALISADE_STALE; fresh again when it is back', async () => {
  let down = await startServer();
  const { port, root } = down;
  const client = new Palisade({ address: down.addr, auth: root, timeoutMs: 2000 });
  const kv = client.kv();
  await kv.put('app/down', { password: 'down-password-1' });
  const w = kv.watch('app/down', { refreshMs: 100, maxStaleMs: 1000, followRotation: false, background: false });
  await w.get();
  await down.stop('SIGKILL');
  await sleep(120);
  const s = await w.get();
  assert.deepEqual([s.stale, s.data.password], [true, 'down-password-1']);
  await sleep(1000);
  await assert.rejects(w.get(), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.STALE && e.cause?.code === ErrorCodes.UNAVAILABLE;
  });
  await assert.rejects(kv.get('app/down'), (e) => e.code === ErrorCodes.UNAVAILABLE && /unreachable/.test(e.message));
  // back (a new dev server on the same port and root token, the secret written again)
  down = await startServer({ port, root });
  try {
    await kv.put('app/down', { password: 'down-password-2' });
    const back = await w.get();
    assert.deepEqual([back.stale, back.data.password], [false, 'down-password-2']);
  } finally {
    w.close();
    await client.close();
    await down.stop();
  }
});

test('a deleted secret or a revoked permission is never served stale, not even during a later outage', async () => {
  const own = await startServer();
  const client = new Palisade({ address: own.addr, auth: own.root });
  const kv = client.kv();
  await kv.put('app/gone', { v: 'gone-value-1' });
  await kv.put('app/denied', { v: 'denied-value-1' });
  await own.api('POST', 'sys/policies/acl/reader', { policy: 'path "secret/data/app/denied" { capabilities = ["read"] }' });
  const reader = (await own.api('POST', 'auth/token/create', { policies: ['reader'] })).auth.client_token;
  const limited = new Palisade({ address: own.addr, auth: reader });
  const opts = { refreshMs: 50, maxStaleMs: 60_000, followRotation: false, background: false };
  const gone = kv.watch('app/gone', opts);
  const denied = limited.kv().watch('app/denied', opts);
  try {
    await gone.get();
    await denied.get();
    await own.api('DELETE', 'secret/metadata/app/gone');
    await own.api('POST', 'sys/policies/acl/reader', { policy: 'path "secret/data/other" { capabilities = ["read"] }' });
    await sleep(60);
    await assert.rejects(gone.get(), (e) => e.code === ErrorCodes.NOT_FOUND);
    await assert.rejects(denied.get(), (e) => e.code === ErrorCodes.PERMISSION_DENIED);
    // then the server goes away: the values it refused are not served from the cache
    await own.stop('SIGKILL');
    await assert.rejects(gone.get(), (e) => e.code === ErrorCodes.UNAVAILABLE);
    await assert.rejects(denied.get(), (e) => e.code === ErrorCodes.UNAVAILABLE);
  } finally {
    gone.close();
    denied.close();
    await client.close();
    await limited.close();
    await own.stop();
  }
});

test("a rotation policy: the watcher refreshes right after the rotation, well inside its overlap", async () => {
  // a producer the server's configuration lists (an API user cannot name another)
  const producer = `process.stdout.write(JSON.stringify({ data: { password: require('node:crypto').randomBytes(12).toString('hex') } }))`;
  const s = await startConfiguredServer(`[rotation.commands]\nnew-password = ["${process.execPath}", "-e", ${JSON.stringify(producer)}]\n`);
  const client = new Palisade({ address: s.addr, auth: s.root });
  try {
    const kv = client.kv();
    await kv.put('app/rotating', { password: 'initial-password-1' });
    // rotated now, by the producer: version 2
    await s.api('POST', 'secret/rotation/app/rotating', { period: '1h', overlap: '10m', command: 'new-password' });
    const rotated = await s.api('POST', 'secret/rotate/app/rotating', {});
    assert.equal(rotated.data.version, 2);
    const policy = (await (await fetch(`${s.addr}/v1/secret/rotation/app/rotating`, { headers: { 'x-vault-token': s.root } })).json()).data;
    const next = Date.parse(policy.next_rotation);
    const w = kv.watch('app/rotating', { refreshMs: 24 * 3600_000 });
    const v = await w.get();
    assert.equal(v.version, 2);
    assert.notEqual(v.data.password, 'initial-password-1');
    // the refresh is due just after the next rotation (≤ 5 s), long before the overlap (10 min) ends,
    // although refreshMs alone would wait a day
    const due = w.nextRefreshAt.getTime();
    // (a few ms of slack: the delay is computed from one reading of the clock and the due time from the next)
    assert.ok(due >= next && due <= next + 5_000 + 250, `due ${new Date(due).toISOString()}, rotation ${policy.next_rotation}`);
    // without followRotation: refreshMs alone
    const plain = kv.watch('app/rotating', { refreshMs: 24 * 3600_000, followRotation: false });
    await plain.get();
    assert.ok(plain.nextRefreshAt.getTime() > Date.now() + 23 * 3600_000);
    w.close();
    plain.close();
    assert.deepEqual(leaked(s.output(), [v.data.password]), []);
  } finally {
    await client.close();
    await s.stop();
  }
});

test('no secret value or token appears in any error message', () => {
  const text = messages.join('\n');
  assert.ok(messages.length >= 3);
  assert.deepEqual(leaked(text, [server.root, 'first-password-1', 'sealed-password-1', 'down-password-1']), []);
});
