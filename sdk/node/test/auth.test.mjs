// Token sources: AppRole, JWT (a Kubernetes-style service account token),
// fixed tokens; early refresh, re-login after expiry or revocation, and the
// OAuth2 client-credentials source.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { SignJWT } from 'jose';
import { ClientCredentials, ErrorCodes, Palisade, PalisadeError, appRole, jwtAuth, tokenFile } from '../dist/esm/index.js';
import { leaked, sleep, startServer } from './helpers.mjs';

let server;
const messages = [];
const secrets = [];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-sdk-auth-'));

before(async () => {
  server = await startServer();
  secrets.push(server.root);
  await server.api('POST', 'sys/policies/acl/app', { policy: 'path "secret/data/app/*" { capabilities = ["read", "create", "update"] }' });
  await server.api('POST', 'sys/auth/approle', { type: 'approle' });
  await server.api('POST', 'secret/data/app/config', { data: { color: 'blue' } });
});
after(async () => {
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

async function role(name, fields) {
  await server.api('POST', `auth/approle/role/${name}`, { token_policies: ['app'], ...fields });
  const roleId = (await server.api('GET', `auth/approle/role/${name}/role-id`)).data.role_id;
  const secretId = (await server.api('POST', `auth/approle/role/${name}/secret-id`)).data.secret_id;
  secrets.push(secretId);
  return { roleId, secretId };
}

const lookup = async (token) =>
  (await fetch(`${server.addr}/v1/auth/token/lookup-self`, { headers: { 'x-vault-token': token } })).status;

test('AppRole: logs in, reads, refreshes early and revokes the token it replaced', async () => {
  const { roleId, secretId } = await role('web', { token_ttl: '3s', token_max_ttl: '10s' });
  const client = new Palisade({ address: server.addr, auth: appRole({ roleId, secretId }), refreshAt: 0.34 });
  const logins = [];
  client.on('login', (l) => logins.push(l));
  assert.equal((await client.kv().get('app/config')).data.color, 'blue');
  const first = await client.token();
  secrets.push(first);
  assert.deepEqual(logins.map((l) => l.kind), ['approle']);
  assert.ok(logins[0].ttlMs > 2000 && logins[0].ttlMs <= 3000);
  await sleep(1100); // past a third of the TTL: the next call refreshes in the background
  assert.equal(await client.token(), first, 'still valid: answered at once');
  await until(() => logins.length === 2);
  const second = await client.token();
  secrets.push(second);
  assert.notEqual(second, first);
  await until(async () => (await lookup(first)) === 403);
  assert.equal(await lookup(second), 200);
  await client.close();
  assert.equal(await lookup(second), 403, 'close() revokes the token');
});

async function until(cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met');
    await sleep(20);
  }
}

test('a revoked (or expired) token: one re-login and the request goes through', async () => {
  const { roleId, secretId } = await role('api', {});
  const client = new Palisade({ address: server.addr, auth: appRole({ roleId, secretId }) });
  let logins = 0;
  client.on('login', () => logins++);
  await client.kv().get('app/config');
  const token = await client.token();
  secrets.push(token);
  await server.api('POST', 'auth/token/revoke', { token });
  assert.equal((await client.kv().get('app/config')).data.color, 'blue');
  assert.equal(logins, 2);
  // a denial for a valid token is not a reason to log in again
  await assert.rejects(client.kv().get('other/x'), (e) => e.code === ErrorCodes.NOT_FOUND || e.code === ErrorCodes.PERMISSION_DENIED);
  await assert.rejects(client.read('sys/policies/acl/app'), (e) => e.code === ErrorCodes.PERMISSION_DENIED);
  assert.equal(logins, 2);
  await client.close();
});

test('re-login once, then the error: a spent secret ID gives ERR_PALISADE_TOKEN_EXPIRED', async () => {
  const { roleId, secretId } = await role('once', { secret_id_num_uses: 1 });
  const client = new Palisade({ address: server.addr, auth: appRole({ roleId, secretId }) });
  await client.kv().get('app/config');
  const token = await client.token();
  secrets.push(token);
  await server.api('POST', 'auth/token/revoke', { token });
  await assert.rejects(client.kv().get('app/config'), (e) => {
    messages.push(e.message, e.cause?.message ?? '');
    return e instanceof PalisadeError && e.code === ErrorCodes.TOKEN_EXPIRED && e.cause?.code === ErrorCodes.AUTH_FAILED;
  });
  await client.close();
});

test('a wrong secret ID is ERR_PALISADE_AUTH_FAILED, without the secret in the message', async () => {
  const { roleId } = await role('wrong', {});
  const bad = 'f0f0f0f0-1111-2222-3333-444455556666';
  secrets.push(bad);
  const client = new Palisade({ address: server.addr, auth: appRole({ roleId, secretId: bad }) });
  await assert.rejects(client.kv().get('app/config'), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.AUTH_FAILED && e.status === 400;
  });
  await client.close();
  assert.throws(() => appRole({ roleId }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT);
});

test('a fixed token that was revoked: ERR_PALISADE_TOKEN_EXPIRED (it cannot log in again)', async () => {
  const t = (await server.api('POST', 'auth/token/create', { policies: ['app'] })).auth.client_token;
  secrets.push(t);
  const file = path.join(work, 'token');
  fs.writeFileSync(file, `${t}\n`, { mode: 0o600 });
  const client = new Palisade({ address: server.addr, auth: tokenFile(file) });
  assert.equal((await client.kv().get('app/config')).data.color, 'blue');
  await server.api('POST', 'auth/token/revoke', { token: t });
  await assert.rejects(client.kv().get('app/config'), (e) => e.code === ErrorCodes.TOKEN_EXPIRED || e.code === ErrorCodes.PERMISSION_DENIED);
  const fixed = new Palisade({ address: server.addr, auth: t });
  await assert.rejects(fixed.kv().get('app/config'), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.TOKEN_EXPIRED && /fixed token/.test(e.message);
  });
  await client.close();
  await fixed.close();
});

test('a token that may not read lookup-self: a denied request is PERMISSION_DENIED after at most one new login', async () => {
  const { roleId, secretId } = await role('nodefault', { token_no_default_policy: true });
  const client = new Palisade({ address: server.addr, auth: appRole({ roleId, secretId }) });
  let logins = 0;
  client.on('login', () => logins++);
  assert.equal((await client.kv().get('app/config')).data.color, 'blue');
  const first = await client.token();
  secrets.push(first);
  for (let i = 0; i < 5; i++) {
    await assert.rejects(client.read('sys/policies/acl/app'), (e) => e.code === ErrorCodes.PERMISSION_DENIED);
  }
  assert.ok(logins <= 2, `${logins} logins`);
  // (the refused token is revoked best effort with revoke-self, which a token
  // without the default policy may not call: it then ends at its TTL)
  await client.close();
});

test('close() while a login is on its way: the token that login gets is revoked', async () => {
  const { roleId, secretId } = await role('racing', {});
  const client = new Palisade({ address: server.addr, auth: appRole({ roleId, secretId }) });
  const tokens = [];
  client.on('login', () => {});
  const pending = client.token().then((t) => tokens.push(t), (e) => e);
  await client.close();
  const outcome = await pending;
  if (tokens.length > 0) {
    // the login landed before close(): close() revoked it
    secrets.push(tokens[0]);
    assert.equal(await lookup(tokens[0]), 403);
  } else {
    assert.equal(outcome.code, ErrorCodes.CLOSED);
  }
  // no token of this role is left valid
  const accessors = (await server.api('LIST', 'auth/token/accessors').catch(() => null))?.data?.keys ?? [];
  for (const a of accessors) {
    const info = (await server.api('POST', 'auth/token/lookup-accessor', { accessor: a })).data;
    assert.ok(!(info.meta?.role_name === 'racing'), 'a token of the racing role is still valid');
  }
});

test('a failed background refresh backs off instead of logging in on every call', async () => {
  let calls = 0;
  const source = {
    kind: 'custom',
    login: async () => {
      calls++;
      if (calls > 1) throw new PalisadeError(ErrorCodes.UNAVAILABLE, 'login: down');
      return { token: server.root, ttlMs: 3_000, renewable: false };
    },
  };
  const client = new Palisade({ address: server.addr, auth: source, refreshAt: 0.01 });
  const errors = [];
  client.on('login-error', (e) => errors.push(e));
  await client.token();
  await sleep(50); // past 1 % of 3 s: due for refresh, still valid
  for (let i = 0; i < 100; i++) await client.token();
  await sleep(20);
  assert.equal(calls, 2, 'one background login, then the back-off');
  assert.equal(errors.length, 1);
  await sleep(1_050);
  await client.token();
  await sleep(20);
  assert.equal(calls, 3, 'tried again after the back-off');
});

test('JWT login with a service account token read from its file', async () => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  await server.api('POST', 'sys/auth/jwt', { type: 'jwt' });
  await server.api('POST', 'auth/jwt/config', {
    jwt_validation_pubkeys: [publicKey.export({ type: 'spki', format: 'pem' })],
    jwt_supported_algs: ['EdDSA'],
    bound_issuer: 'https://kubernetes.default.svc',
  });
  await server.api('POST', 'auth/jwt/role/orders', {
    role_type: 'jwt',
    bound_audiences: ['palisade'],
    bound_subject: 'system:serviceaccount:shop:orders',
    user_claim: 'sub',
    token_policies: ['app'],
    token_ttl: '1m',
  });
  const sign = (sub) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer('https://kubernetes.default.svc')
      .setAudience('palisade')
      .setSubject(sub)
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
  const jwt = await sign('system:serviceaccount:shop:orders');
  secrets.push(jwt);
  const file = path.join(work, 'sa-token');
  fs.writeFileSync(file, jwt, { mode: 0o600 });
  const client = new Palisade({ address: server.addr, auth: jwtAuth({ role: 'orders', jwtFile: file }) });
  assert.equal((await client.kv().get('app/config')).data.color, 'blue');
  await client.close();
  // another service account's token is refused
  const other = await sign('system:serviceaccount:shop:intruder');
  secrets.push(other);
  const refused = new Palisade({ address: server.addr, auth: jwtAuth({ role: 'orders', jwt: other }) });
  await assert.rejects(refused.kv().get('app/config'), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.AUTH_FAILED;
  });
  await refused.close();
});

test('client credentials: cached, refreshed early, and a wrong secret is ERR_PALISADE_AUTH_FAILED', async () => {
  await server.api('POST', 'identity/oidc/key/default', { algorithm: 'EdDSA' });
  await server.api('POST', 'identity/oidc/provider/default', { issuer: server.addr, allowed_client_ids: '*' });
  const c = (await server.api('POST', 'identity/oidc/client/svc', { allowed_scopes: ['orders:read'], allowed_audiences: ['orders'] })).data;
  secrets.push(c.client_secret);
  const tokenUrl = `${server.addr}/v1/identity/oidc/provider/default/token`;
  let posts = 0;
  const cc = new ClientCredentials({ tokenUrl, clientId: c.client_id, clientSecret: c.client_secret, scope: ['orders:read'], refreshAt: 0.0001 });
  const origRequest = cc.request.bind(cc);
  cc.request = () => {
    posts++;
    return origRequest();
  };
  const [t1, t1b] = await Promise.all([cc.getToken(), cc.getToken()]);
  secrets.push(t1);
  assert.equal(t1, t1b);
  assert.equal(posts, 1, 'two callers, one token request');
  const claims = JSON.parse(Buffer.from(t1.split('.')[1], 'base64url'));
  assert.equal(claims.scope, 'orders:read');
  await sleep(100); // past 0.01 % of its lifetime (5 min: 30 ms): the next call answers the old token and refreshes
  assert.equal(await cc.getToken(), t1);
  await until(async () => posts === 2);
  await sleep(20);
  const t2 = await cc.getToken();
  secrets.push(t2);
  assert.notEqual(t2, t1);
  // client_secret_post works too
  const post = new ClientCredentials({ tokenUrl, clientId: c.client_id, clientSecret: c.client_secret, authMethod: 'client_secret_post' });
  await assert.rejects(post.getToken(), (e) => e.code === ErrorCodes.AUTH_FAILED); // registered for basic only
  const wrong = new ClientCredentials({ tokenUrl, clientId: c.client_id, clientSecret: 'pso_wrongwrongwrongwrongwrong' });
  await assert.rejects(wrong.getToken(), (e) => {
    messages.push(e.message);
    return e.code === ErrorCodes.AUTH_FAILED && e.status === 401 && /invalid_client/.test(e.message);
  });
  assert.throws(() => new ClientCredentials({ tokenUrl: 'http://idp.example/token', clientId: 'x', clientSecret: 'y' }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT);
});

test('the address is checked: plaintext only on loopback, no credentials or path', () => {
  const bad = ['http://palisade.example:8200', 'https://u:p@palisade.example', 'https://palisade.example/v1', 'ftp://x'];
  for (const address of bad) {
    assert.throws(() => new Palisade({ address, auth: 'hvs.xxxxxxxxxxxx' }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT, address);
  }
  new Palisade({ address: 'http://palisade.example:8200', auth: 'hvs.xxxxxxxxxxxx', dangerousAllowPlaintext: true });
  new Palisade({ address: 'https://palisade.example:8200', auth: 'hvs.xxxxxxxxxxxx' });
});

test('no token, secret ID, JWT or client secret appears in an error message or the server log', () => {
  assert.ok(messages.length >= 6);
  const text = messages.join('\n');
  assert.deepEqual(leaked(text, secrets), []);
  // the dev server prints its own root token at start (as Vault's does); nothing else
  assert.deepEqual(leaked(server.output(), secrets.filter((s) => s !== server.root)), []);
});
