// Express and Fastify middleware: tokens from Palisade's OAuth2 provider
// verified against its JWKS (rotation included), the gateway's forwarded
// identity trusted only from the gateway's certificate, the trust-proxy
// helper, and the pino redaction preset.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import https from 'node:https';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import express from 'express';
import Fastify from 'fastify';
import { SignJWT } from 'jose';
import pino from 'pino';
import { ErrorCodes, PalisadeError, TokenVerifier, expressAuth, fastifyAuth, pinoRedaction, requireScopes, trustProxy } from '../dist/esm/index.js';
import { freePort, leaked, sleep, startServer } from './helpers.mjs';

let server;
let issuer;
let clientA;
const tokens = [];
const logs = [];
const logger = { warn: (o) => logs.push(JSON.stringify(o)) };

before(async () => {
  server = await startServer();
  await server.api('POST', 'identity/oidc/key/default', { algorithm: 'EdDSA' });
  await server.api('POST', 'identity/oidc/provider/default', { issuer: server.addr, allowed_client_ids: '*' });
  clientA = (await server.api('POST', 'identity/oidc/client/a', { allowed_scopes: ['orders:read', 'orders:write'], allowed_audiences: ['orders'] })).data;
  issuer = `${server.addr}/v1/identity/oidc/provider/default`;
});
after(async () => {
  await server?.stop();
});

async function token(scope = 'orders:read') {
  const basic = Buffer.from(`${clientA.client_id}:${clientA.client_secret}`).toString('base64');
  const r = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope }),
  });
  assert.equal(r.status, 200);
  const t = (await r.json()).access_token;
  tokens.push(t);
  return t;
}

/** Serve `app` (a request listener) on loopback; answers its base URL and a closer. */
async function serve(handler) {
  const http = await import('node:http');
  const s = http.createServer(handler);
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${s.address().port}`, close: () => new Promise((r) => { s.closeAllConnections(); s.close(r); }) };
}

const get = async (url, headers = {}) => {
  const r = await fetch(url, { headers });
  const text = await r.text();
  return { status: r.status, www: r.headers.get('www-authenticate'), body: text ? JSON.parse(text) : null };
};

function expressApp(verifier) {
  const app = express();
  app.use(expressAuth({ jwt: verifier, logger }));
  app.get('/orders', (req, res) => res.json({ auth: req.auth }));
  app.post('/orders', requireScopes('orders:write'), (req, res) => res.json({ ok: true }));
  return app;
}

test('Express: a valid token passes with its identity; missing, malformed and forged ones are refused', async () => {
  const verifier = new TokenVerifier({ issuer, audience: 'orders' });
  const app = await serve(expressApp(verifier));
  try {
    const good = await token();
    let r = await get(`${app.url}/orders`, { authorization: `Bearer ${good}` });
    assert.equal(r.status, 200);
    assert.equal(r.body.auth.source, 'jwt');
    assert.equal(r.body.auth.subject, clientA.client_id);
    assert.deepEqual(r.body.auth.scopes, ['orders:read']);
    r = await get(`${app.url}/orders`);
    assert.deepEqual([r.status, r.body.error.code, r.www], [401, 'unauthenticated', 'Bearer realm="palisade"']);
    r = await get(`${app.url}/orders`, { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` });
    assert.deepEqual([r.status, r.body.error.code], [401, 'invalid_token']);
    assert.equal(r.www, 'Bearer realm="palisade", error="invalid_token"');
    r = await get(`${app.url}/orders`, { authorization: 'Bearer not.a.jwt' });
    assert.deepEqual([r.status, r.body.error.code], [401, 'invalid_token']);
    // the same kid, another key: the signature does not verify
    const kid = JSON.parse(Buffer.from(good.split('.')[0], 'base64url')).kid;
    const { privateKey } = generateKeyPairSync('ed25519');
    const forged = await new SignJWT({ scope: 'orders:read orders:write' })
      .setProtectedHeader({ alg: 'EdDSA', kid })
      .setIssuer(issuer)
      .setAudience('orders')
      .setSubject('attacker')
      .setExpirationTime('5m')
      .sign(privateKey);
    tokens.push(forged);
    r = await get(`${app.url}/orders`, { authorization: `Bearer ${forged}` });
    assert.deepEqual([r.status, r.body.error.code, r.body.error.message], [401, 'invalid_token', 'invalid token: the signature does not verify']);
    // alg none
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${good.split('.')[1]}.`;
    r = await get(`${app.url}/orders`, { authorization: `Bearer ${none}` });
    assert.deepEqual([r.status, r.body.error.code], [401, 'invalid_token']);
    // a scope the route needs and the token lacks: 403
    const res = await fetch(`${app.url}/orders`, { method: 'POST', headers: { authorization: `Bearer ${good}` } });
    assert.deepEqual([res.status, (await res.json()).error.code], [403, 'insufficient_scope']);
    const writer = await token('orders:read orders:write');
    const ok = await fetch(`${app.url}/orders`, { method: 'POST', headers: { authorization: `Bearer ${writer}` } });
    assert.equal(ok.status, 200);
  } finally {
    await app.close();
  }
});

test('wrong audience, wrong issuer and an expired token are refused with their reason', async () => {
  const good = await token();
  await assert.rejects(new TokenVerifier({ issuer, audience: 'billing' }).verify(good), (e) => e.code === ErrorCodes.TOKEN_INVALID && /aud/.test(e.message));
  await assert.rejects(new TokenVerifier({ issuer: `${issuer}x`, audience: 'orders', jwksUri: `${issuer}/.well-known/keys` }).verify(good), (e) => e.code === ErrorCodes.TOKEN_INVALID && /iss/.test(e.message));
  const short = (await server.api('POST', 'identity/oidc/client/short', { allowed_scopes: ['orders:read'], allowed_audiences: ['orders'], access_token_ttl: '2s' })).data;
  const basic = Buffer.from(`${short.client_id}:${short.client_secret}`).toString('base64');
  const r = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials' }),
  });
  const t = (await r.json()).access_token;
  tokens.push(t);
  const v = new TokenVerifier({ issuer, audience: 'orders', clockToleranceS: 0, cacheMs: 60_000 });
  assert.equal((await v.verify(t)).subject, short.client_id);
  await sleep(2100);
  // the cache never outlives exp
  await assert.rejects(v.verify(t), (e) => e.code === ErrorCodes.TOKEN_EXPIRED_JWT && e.message === 'the token has expired');
  assert.throws(() => new TokenVerifier({ issuer, audience: 'orders', algorithms: ['HS256'] }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT);
});

test('a rotated signing key: new tokens verify after one JWKS refetch', async () => {
  const v = new TokenVerifier({ issuer, audience: 'orders', jwksCooldownMs: 200 });
  const before = await token();
  await v.verify(before);
  await sleep(250);
  await server.api('POST', 'identity/oidc/key/default/rotate', {});
  const after = await token();
  const kid = (t) => JSON.parse(Buffer.from(t.split('.')[0], 'base64url')).kid;
  assert.notEqual(kid(after), kid(before));
  assert.equal((await v.verify(after)).subject, clientA.client_id);
  assert.equal((await v.verify(before)).subject, clientA.client_id, 'the old key is still published');
});

test('keys that cannot be fetched: 503 authentication_unavailable (fail closed)', async () => {
  const port = await freePort();
  const v = new TokenVerifier({ issuer, audience: 'orders', jwksUri: `http://127.0.0.1:${port}/keys`, timeoutMs: 1000 });
  const app = await serve(expressApp(v));
  try {
    const r = await get(`${app.url}/orders`, { authorization: `Bearer ${await token()}` });
    assert.deepEqual([r.status, r.body.error.code], [503, 'authentication_unavailable']);
  } finally {
    await app.close();
  }
  await assert.rejects(new TokenVerifier({ issuer: `http://127.0.0.1:${port}`, audience: 'x' }).verify(await token()), (e) => e.code === ErrorCodes.JWKS_UNAVAILABLE);
});

test('Fastify: the plugin authenticates every route of the instance', async () => {
  const app = Fastify({ trustProxy: trustProxy(['127.0.0.1']) });
  await app.register(fastifyAuth({ jwt: { issuer, audience: 'orders' }, logger }));
  app.get('/orders', async (request) => ({ auth: request.auth, ip: request.ip }));
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    const good = await token();
    let r = await get(`${url}/orders`, { authorization: `Bearer ${good}`, 'x-forwarded-for': '203.0.113.9' });
    assert.equal(r.status, 200);
    assert.equal(r.body.auth.subject, clientA.client_id);
    assert.equal(r.body.ip, '203.0.113.9');
    r = await get(`${url}/orders`);
    assert.deepEqual([r.status, r.body.error.code], [401, 'unauthenticated']);
    r = await get(`${url}/orders`, { authorization: `Bearer ${good}x` });
    assert.deepEqual([r.status, r.body.error.code], [401, 'invalid_token']);
  } finally {
    await app.close();
  }
});

test("the gateway's forwarded identity is trusted only on the gateway's mTLS connection", async () => {
  await server.api('POST', 'sys/mounts/pki', { type: 'pki' });
  const ca = (await server.api('POST', 'pki/root/generate/internal', { common_name: 'mw CA', ttl: '24h' })).data.certificate;
  await server.api('POST', 'pki/roles/any', { allow_any_name: true, allowed_uri_sans: ['spiffe://example.org/*'], allow_ip_sans: true, max_ttl: '1h' });
  const issue = async (body) => (await server.api('POST', 'pki/issue/any', body)).data;
  const srv = await issue({ common_name: 'localhost', ip_sans: '127.0.0.1' });
  const gw = await issue({ common_name: 'gateway', uri_sans: 'spiffe://example.org/gateway' });
  const other = await issue({ common_name: 'intruder', uri_sans: 'spiffe://example.org/intruder' });
  const app = express();
  app.use(
    expressAuth({
      gateway: { headers: { subject: 'x-caller', scopes: 'x-scopes', workload: 'x-workload' }, trust: { peerUris: ['spiffe://example.org/gateway'] } },
      logger,
    }),
  );
  app.get('/orders', (req, res) => res.json(req.auth));
  const s = https.createServer({ key: srv.private_key, cert: srv.certificate, ca, requestCert: true, rejectUnauthorized: false }, app);
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const call = (cert, headers) =>
    new Promise((resolve, reject) => {
      const req = https.get(`https://127.0.0.1:${s.address().port}/orders`, { ca, headers, ...(cert ? { cert: cert.certificate, key: cert.private_key } : {}) }, (res) => {
        let b = '';
        res.on('data', (c) => (b += c));
        res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(b) }));
      });
      req.on('error', reject);
    });
  const headers = { 'x-caller': 'client-a', 'x-scopes': 'orders:read', 'x-workload': 'spiffe://example.org/a' };
  try {
    let r = await call(gw, headers);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { source: 'gateway', subject: 'client-a', scopes: ['orders:read'], workload: 'spiffe://example.org/a' });
    // the gateway's own format: comma-separated scopes
    r = await call(gw, { ...headers, 'x-scopes': 'orders:read,orders:write' });
    assert.deepEqual(r.body.scopes, ['orders:read', 'orders:write']);
    r = await call(other, headers);
    assert.deepEqual([r.status, r.body.error.code], [403, 'untrusted_proxy']);
    r = await call(null, headers);
    assert.deepEqual([r.status, r.body.error.code], [403, 'untrusted_proxy']);
    r = await call(gw, {});
    assert.deepEqual([r.status, r.body.error.code], [401, 'unauthenticated']);
    // a second copy of an identity header (a proxy that appends): refused, never merged
    r = await call(gw, { ...headers, 'x-caller': ['client-a', 'admin'] });
    assert.deepEqual([r.status, r.body.error.code, r.body.error.message], [401, 'unauthenticated', 'the identity header x-caller appears 2 times']);
    r = await call(gw, { ...headers, 'x-scopes': ['orders:read', 'admin'] });
    assert.deepEqual([r.status, r.body.error.code], [401, 'unauthenticated']);
  } finally {
    s.closeAllConnections();
    s.close();
  }
});

test('trustProxy: only the named proxies; everything-trusting settings are refused', async () => {
  const wide = ['::ffff:0:0/96', '::/80', '::/1', '0.0.0.0/1', '10.0.0.0/7', '10.0.0.0/8/99', '10.0.0.0/08', 'fe80::1%eth0', 'fe80::/10%lo',
    '::ffff:64.0.0.0/98', '::ffff:128.0.0.0/98', '::ffff:10.0.0.0/104', '::ffff:10.1.2.3/128'];
  for (const bad of ['*', ['0.0.0.0/0'], ['::/0'], [], ['not-an-ip'], ['10.0.0.0/33'], ...wide.map((w) => [w])]) {
    assert.throws(() => trustProxy(bad), (e) => e instanceof PalisadeError && e.code === ErrorCodes.INVALID_ARGUMENT, JSON.stringify(bad));
  }
  const ipOf = async (setting) => {
    const app = express();
    app.set('trust proxy', setting);
    app.get('/', (req, res) => res.json({ ip: req.ip }));
    const a = await serve(app);
    try {
      return (await get(`${a.url}/`, { 'x-forwarded-for': '198.51.100.1, 203.0.113.7' })).body.ip;
    } finally {
      await a.close();
    }
  };
  // from a trusted proxy: the nearest untrusted hop, not the client's own claim
  assert.equal(await ipOf(trustProxy(['127.0.0.1'])), '203.0.113.7');
  assert.equal(await ipOf(trustProxy(['127.0.0.0/8', '203.0.113.0/24'])), '198.51.100.1');
  // the connection is not from a named proxy: X-Forwarded-For is ignored
  assert.match(await ipOf(trustProxy(['10.0.0.0/8'])), /127\.0\.0\.1$/);
  const m = trustProxy('10.1.2.3, fd00::/16');
  assert.deepEqual([m('10.1.2.3'), m('::ffff:10.1.2.3'), m('fd00::1'), m('10.1.2.4'), m('fd00::1%eth0'), m('8.8.8.8')], [true, true, true, false, false, false]);
});

test('keys come over https only (http on loopback), and what discovery answered never reaches callers', async () => {
  for (const [issuerUrl, jwksUri] of [
    ['http://192.0.2.2', undefined],
    ['https://idp.example', 'http://192.0.2.2/keys'],
    ['https://idp.example', 'ftp://idp.example/keys'],
    ['https://user:pw@idp.example', undefined],
  ]) {
    assert.throws(() => new TokenVerifier({ issuer: issuerUrl, audience: 'a', jwksUri }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT, `${issuerUrl} ${jwksUri}`);
  }
  new TokenVerifier({ issuer: 'http://192.0.2.2', audience: 'a', dangerousAllowPlaintext: true });
  // a discovery document (on loopback) that names a plaintext jwks_uri elsewhere
  const http = await import('node:http');
  let body = '';
  const d = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(body);
  });
  await new Promise((r) => d.listen(0, '127.0.0.1', r));
  const iss = `http://127.0.0.1:${d.address().port}`;
  try {
    body = JSON.stringify({ issuer: iss, jwks_uri: 'http://192.0.2.2/keys' });
    await assert.rejects(new TokenVerifier({ issuer: iss, audience: 'orders' }).verify(await token()), (e) => e.code === ErrorCodes.JWKS_UNAVAILABLE);
    // an HTML error page as the document: callers learn only that keys are unavailable
    body = '<html>internal stack trace SECRET-DETAIL</html>';
    const localLogs = [];
    const mw = express();
    mw.use(expressAuth({ jwt: { issuer: iss, audience: 'orders' }, logger: { warn: (o) => localLogs.push(JSON.stringify(o)) } }));
    mw.get('/', (req, res) => res.json({}));
    const m = await serve(mw);
    try {
      const r = await get(`${m.url}/`, { authorization: `Bearer ${await token()}` });
      assert.deepEqual([r.status, r.body.error.code, r.body.error.message], [503, 'authentication_unavailable', "the issuer's keys cannot be fetched"]);
      assert.ok(localLogs.some((l) => l.includes('discovery document')), localLogs.join('\n'));
    } finally {
      await m.close();
    }
  } finally {
    d.close();
  }
});

test('claims are checked: sub a non-empty string, scp a list of scope strings; identities are frozen', async () => {
  const { generateKeyPair, exportJWK } = await import('jose');
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'EdDSA', use: 'sig' };
  const http = await import('node:http');
  const k = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise((r) => k.listen(0, '127.0.0.1', r));
  const iss = 'https://issuer.example';
  const v = new TokenVerifier({ issuer: iss, audience: 'orders', jwksUri: `http://127.0.0.1:${k.address().port}/keys` });
  const sign = (claims) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: 'k1' }).setIssuer(iss).setAudience('orders').setExpirationTime('5m').sign(privateKey);
  try {
    const ok = await v.verify(await sign({ sub: 'alice', scp: ['read', 'write'] }));
    assert.deepEqual([ok.subject, ok.scopes], ['alice', ['read', 'write']]);
    assert.ok(Object.isFrozen(ok) && Object.isFrozen(ok.scopes) && Object.isFrozen(ok.claims));
    assert.throws(() => ok.scopes.push('admin'), TypeError);
    assert.deepEqual((await v.verify(await sign({ sub: 'alice', scp: ['read', 'write'] }))).scopes, ['read', 'write']);
    for (const claims of [{ sub: '' }, { sub: 123 }, { sub: 'a', scp: ['a', 1] }, { sub: 'a', scp: 'read' }, { sub: 'a', scope: ['read'] }, { sub: 'a', scp: ['a b'] }]) {
      await assert.rejects(v.verify(await sign(claims)), (e) => e.code === ErrorCodes.TOKEN_INVALID, JSON.stringify(claims));
    }
  } finally {
    k.close();
  }
});

test('the pino preset redacts tokens, secrets and keys', () => {
  const out = [];
  const sink = new Writable({ write(chunk, _e, cb) { out.push(chunk.toString()); cb(); } });
  const log = pino({ redact: pinoRedaction(['db.credentials.password']) }, sink);
  const secret = 'pino-secret-value-1234';
  log.info({ req: { headers: { authorization: `Bearer ${secret}`, cookie: `s=${secret}`, 'x-vault-token': secret, host: 'a' } } }, 'request');
  log.info({ password: secret, user: { password: secret, name: 'ann' }, auth: { client_token: secret }, client_secret: secret }, 'login');
  log.info({ db: { credentials: { password: secret } }, data: { data: { password: secret } } }, 'db');
  const text = out.join('');
  assert.equal(leaked(text, [secret]).length, 0, text);
  assert.match(text, /\[REDACTED\]/);
  assert.match(text, /"name":"ann"/);
  assert.match(text, /"host":"a"/);
});

test('refusals are logged with a code and reason, never a token', () => {
  assert.ok(logs.length >= 5);
  assert.ok(logs.some((l) => l.includes('ERR_PALISADE_TOKEN_INVALID')));
  assert.deepEqual(leaked(logs.join('\n'), [...tokens, clientA.client_secret]), []);
});
