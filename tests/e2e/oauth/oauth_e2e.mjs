#!/usr/bin/env node
// End-to-end interoperability run: the unmodified, OpenID-certified
// `openid-client` (discovery, client credentials, introspection, revocation,
// token exchange) and the `jose` library (JWKS verification) against
// palisade's OAuth2/OIDC provider.
//
// Usage: node oauth_e2e.mjs ADDR [--audit-file PATH] [--secrets-out PATH]
//
// ADDR is the base URL of a fresh (uninitialised) server. The script
// initialises and unseals it, enables a file audit device at PATH, creates a
// signing key, the `default` provider and two clients through the Vault API,
// then uses only the libraries' public APIs against the provider.
// --secrets-out writes every credential of the run as JSON, so the caller can
// check that none reached the audit log or the server output.
// Prints one line per check, then `N passed, 0 failed`; exits 1 on failure.
// Run by crates/cli/tests/oauth_client.rs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as client from 'openid-client';
import * as jose from 'jose';

let passed = 0;
let failed = 0;
async function check(name, f) {
  try {
    await f();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

async function main(argv) {
  const args = argv.slice(2);
  const addr = args.shift();
  let auditFile = null;
  let secretsOut = null;
  while (args.length) {
    const flag = args.shift();
    if (flag === '--audit-file') auditFile = args.shift();
    else if (flag === '--secrets-out') secretsOut = args.shift();
  }
  const state = { tokens: [], values: [] };
  let root = '';
  const api = async (method, path, body, token = root) => {
    const r = await fetch(`${addr}/v1/${path}`, {
      method,
      headers: { 'X-Vault-Token': token, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  };

  await check('init, unseal, audit device, provider, clients', async () => {
    let r = await api('PUT', 'sys/init', { secret_shares: 1, secret_threshold: 1 }, '');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    root = r.body.root_token;
    state.keys = r.body.keys;
    r = await api('PUT', 'sys/unseal', { key: state.keys[0] }, '');
    assert.equal(r.body.sealed, false);
    r = await api('POST', 'sys/mounts/kv-e2e', { type: 'kv' });
    assert.equal(r.status, 204, JSON.stringify(r.body));
    r = await api('PUT', 'sys/audit/oauth-file', { type: 'file', options: { file_path: auditFile } });
    assert.equal(r.status, 204, JSON.stringify(r.body));
    r = await api('PUT', 'sys/audit-hash/oauth-file', { input: 'oauth-e2e-marker' });
    state.hmac = r.body.data.hash;
    r = await api('POST', 'identity/oidc/key/default', { algorithm: 'EdDSA' });
    assert.equal(r.status, 204, JSON.stringify(r.body));
    r = await api('POST', 'identity/oidc/provider/default', {
      issuer: addr, allowed_client_ids: '*', scopes_supported: ['orders:read', 'orders:write'],
    });
    assert.equal(r.status, 204, JSON.stringify(r.body));
    r = await api('POST', 'identity/oidc/client/svc-a', {
      allowed_scopes: ['orders:read', 'orders:write'], allowed_audiences: ['svc-b'],
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    state.a = { id: r.body.data.client_id, secret: r.body.data.client_secret };
    r = await api('POST', 'identity/oidc/client/gateway', {
      token_endpoint_auth_method: 'client_secret_post', allowed_audiences: ['introspection'],
    });
    state.gw = { id: r.body.data.client_id, secret: r.body.data.client_secret };
    r = await api('POST', 'identity/oidc/client/frontend', {
      allowed_scopes: ['orders:read', 'orders:write'], allowed_audiences: [state.a.id],
    });
    state.fe = { id: r.body.data.client_id, secret: r.body.data.client_secret };
    state.values.push(state.a.secret, state.gw.secret, state.fe.secret);
  });

  const issuer = new URL(`${addr}/v1/identity/oidc/provider/default`);
  const insecure = { execute: [client.allowInsecureRequests] };
  let a; let gw; let fe; let at;

  await check('discovery (per-provider path and root), issuer check', async () => {
    a = await client.discovery(issuer, state.a.id, undefined, client.ClientSecretBasic(state.a.secret), insecure);
    const m = a.serverMetadata();
    assert.equal(m.issuer, issuer.href);
    assert.ok(m.grant_types_supported.includes('client_credentials'));
    const rootDoc = await (await fetch(`${addr}/.well-known/openid-configuration`)).json();
    assert.equal(rootDoc.issuer, m.issuer);
    gw = await client.discovery(issuer, state.gw.id, undefined, client.ClientSecretPost(state.gw.secret), insecure);
    fe = await client.discovery(issuer, state.fe.id, undefined, client.ClientSecretBasic(state.fe.secret), insecure);
  });

  await check('client credentials grant (client_secret_basic)', async () => {
    const t = await client.clientCredentialsGrant(a, { scope: 'orders:read', audience: 'svc-b' });
    assert.equal(t.token_type.toLowerCase(), 'bearer');
    assert.equal(t.scope, 'orders:read');
    assert.ok(t.expires_in > 0 && t.expires_in <= 300);
    at = t.access_token;
    state.tokens.push(at);
  });

  await check('jose verifies the token with the published JWKS', async () => {
    const jwks = jose.createRemoteJWKSet(new URL(a.serverMetadata().jwks_uri), { [jose.customFetch]: fetch });
    const { payload, protectedHeader } = await jose.jwtVerify(at, jwks, {
      issuer: issuer.href, audience: 'svc-b', typ: 'at+jwt', algorithms: ['EdDSA'],
    });
    assert.equal(protectedHeader.alg, 'EdDSA');
    assert.equal(payload.client_id, state.a.id);
    assert.equal(payload.scope, 'orders:read');
    for (const k of ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti']) assert.ok(payload[k] !== undefined, k);
    await assert.rejects(jose.jwtVerify(at, jwks, { issuer: issuer.href, audience: 'svc-c' }));
  });

  await check('a wrong secret and a scope beyond the client are refused', async () => {
    const bad = await client.discovery(issuer, state.a.id, undefined, client.ClientSecretBasic('wrong'), insecure);
    // a 401 with WWW-Authenticate: openid-client reports the challenge
    await assert.rejects(client.clientCredentialsGrant(bad, {}), (e) => {
      assert.equal(e.status, 401, String(e));
      return true;
    });
    await assert.rejects(client.clientCredentialsGrant(a, { scope: 'admin' }), (e) => {
      assert.equal(e.error, 'invalid_scope', String(e));
      return true;
    });
  });

  await check('introspection (client_secret_post)', async () => {
    const i = await client.tokenIntrospection(gw, at);
    assert.equal(i.active, true);
    assert.equal(i.client_id, state.a.id);
    assert.equal(i.scope, 'orders:read');
    const none = await client.tokenIntrospection(gw, 'not-a-token');
    assert.equal(none.active, false);
  });

  await check('token exchange: a downscoped token for svc-b, acting for the subject', async () => {
    const user = await client.clientCredentialsGrant(fe, { scope: 'orders:read orders:write' });
    state.tokens.push(user.access_token);
    const t = await client.genericGrantRequest(a, 'urn:ietf:params:oauth:grant-type:token-exchange', {
      subject_token: user.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'svc-b',
      scope: 'orders:read',
    });
    state.tokens.push(t.access_token);
    assert.equal(t.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
    const claims = jose.decodeJwt(t.access_token);
    assert.equal(claims.sub, state.fe.id);
    assert.deepEqual(claims.act, { sub: state.a.id });
    assert.equal(claims.scope, 'orders:read');
  });

  await check('revocation, then introspection says inactive', async () => {
    await client.tokenRevocation(a, at);
    const i = await client.tokenIntrospection(gw, at);
    assert.equal(i.active, false);
  });

  if (secretsOut) {
    fs.writeFileSync(secretsOut, JSON.stringify({
      root_token: root,
      tokens: state.tokens,
      unseal_keys: state.keys || [],
      values: state.values,
      hmac: state.hmac || '',
    }));
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

main(process.argv).then(
  (code) => process.exit(code),
  (e) => {
    console.log(e && e.stack ? e.stack : String(e));
    process.exit(1);
  },
);
