#!/usr/bin/env node
// The example fleet, started by one script and checked end to end:
//
//   1. `palisade server --dev` (embedded SQLite, plaintext on loopback, a fresh root token);
//   2. through its Vault-style HTTP API: a PKI engine with a CA, which issues every
//      certificate below; the OAuth2 provider with a signing key and two clients
//      (service A, and the gateway for introspection);
//   3. service B (Express, HTTPS, accepts only the gateway's client certificate);
//   4. `palisade gateway`: mTLS listener, JWT route verified against the provider's JWKS
//      and introspection, Cedar policy on scope and workload, mTLS to service B;
//   5. service A (Express, written with @palisade/sdk): logs in with AppRole, reads its
//      database password from Palisade, gets its client certificate from the PKI engine
//      and a client-credentials token, and calls B through the gateway over mTLS.
//
// Then it checks what the fleet promises (each check prints one line) and stops
// everything. `node run.mjs --keep` leaves the fleet running until Ctrl-C and prints
// how to call it.
//
// The palisade binary: $PALISADE_BIN, else target/debug/palisade under the
// repository (build it with `cargo build -p palisade-cli`). Needs Node.js 18.17+, the
// SDK built (`npm ci && npm run build` in sdk/node) and `npm ci` in this directory.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const keep = process.argv.includes('--keep');
const bin = process.env.PALISADE_BIN ?? path.join(repo, 'target/debug/palisade');
if (!fs.existsSync(bin)) {
  console.error(`run.mjs: ${bin} not found: build it with \`cargo build -p palisade-cli\` or set PALISADE_BIN`);
  process.exit(2);
}
if (!fs.existsSync(path.join(here, 'node_modules/express'))) {
  console.error('run.mjs: Express is missing: run `npm ci` in examples/fleet');
  process.exit(2);
}
if (!fs.existsSync(path.join(repo, 'sdk/node/dist/esm/index.js'))) {
  console.error('run.mjs: the SDK is not built: run `npm ci && npm run build` in sdk/node');
  process.exit(2);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-fleet-'));
const children = [];
let failed = false;

function stopAll() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}
process.on('exit', stopAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(failed ? 1 : 0));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** Start a process with its output in the work directory. */
function start(name, cmd, args, env = {}) {
  const out = fs.openSync(path.join(work, `${name}.log`), 'a');
  const child = spawn(cmd, args, {
    cwd: work,
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['ignore', out, out],
  });
  child.on('exit', (code, signal) => {
    if (!stopping && code !== 0) {
      failed = true;
      console.error(`${name} exited (${code ?? signal}); its log:\n${log(name)}`);
      process.exit(1);
    }
  });
  children.push(child);
  return child;
}
let stopping = false;
const log = (name) => fs.readFileSync(path.join(work, `${name}.log`), 'utf8');

/** Wait until `probe` returns a value (polling its log or a port). */
async function until(what, probe, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The port a Node service printed as {"listening":PORT}. */
const listening = (name) =>
  until(`${name} to listen`, async () => {
    const line = log(name).split('\n').find((l) => l.startsWith('{"listening"'));
    return line ? JSON.parse(line).listening : undefined;
  });

// --- 1. the server -----------------------------------------------------------------
const vaultPort = await freePort();
const vault = `http://127.0.0.1:${vaultPort}`;
const root = randomBytes(16).toString('hex');
start('server', bin, ['server', '--dev', '--dev-listen-address', `127.0.0.1:${vaultPort}`], {
  PALISADE_DEV_ROOT_TOKEN_ID: root,
});
await until('the server', async () => (await fetch(`${vault}/v1/sys/health`)).status === 200);

async function api(method, p, body) {
  const r = await fetch(`${vault}/v1/${p}`, {
    method,
    headers: { 'x-vault-token': root, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const write = (name, text, mode = 0o644) => fs.writeFileSync(path.join(work, name), text, { mode });

// --- 2. PKI: one CA, every certificate of the fleet ----------------------------------
await api('POST', 'sys/mounts/pki', { type: 'pki', config: { max_lease_ttl: '720h' } });
const ca = await api('POST', 'pki/root/generate/internal', {
  common_name: 'Palisade example CA',
  ttl: '720h',
});
write('ca.pem', `${ca.data.certificate}\n`);
// One role per workload, each pinned to that workload's names and SPIFFE ID:
// whoever may issue from one role cannot mint another workload's identity
// (service B trusts the gateway's certificate; nobody else may get one).
const role = (name, domains, uri) =>
  api('POST', `pki/roles/${name}`, {
    allowed_domains: domains,
    allow_bare_domains: true,
    allow_subdomains: false,
    allow_ip_sans: true,
    allowed_uri_sans: uri ? [uri] : [],
    max_ttl: '24h',
  });
await role('gateway', ['localhost', 'gateway.localhost'], 'spiffe://example.org/gateway');
await role('service-a', ['service-a.localhost'], 'spiffe://example.org/service-a');
await role('service-b', ['localhost'], null);
await role('intruder', ['intruder.localhost'], 'spiffe://example.org/intruder');
async function issue(file, roleName, request) {
  const c = await api('POST', `pki/issue/${roleName}`, { ttl: '24h', ...request });
  write(`${file}.pem`, `${c.data.certificate}\n`);
  write(`${file}.key`, `${c.data.private_key}\n`, 0o600);
}
await issue('gateway', 'gateway', { common_name: 'localhost', ip_sans: '127.0.0.1' });
await issue('gateway-client', 'gateway', {
  common_name: 'gateway.localhost',
  uri_sans: 'spiffe://example.org/gateway',
});
await issue('service-a', 'service-a', {
  common_name: 'service-a.localhost',
  uri_sans: 'spiffe://example.org/service-a',
});
await issue('service-b', 'service-b', { common_name: 'localhost', ip_sans: '127.0.0.1' });
// a certificate from the same CA for a workload the policy does not name
await issue('intruder', 'intruder', {
  common_name: 'intruder.localhost',
  uri_sans: 'spiffe://example.org/intruder',
});

// --- OAuth2 provider: a signing key, the provider, two clients -------------------------
await api('POST', 'identity/oidc/key/default', { algorithm: 'EdDSA' });
await api('POST', 'identity/oidc/provider/default', { issuer: vault, allowed_client_ids: '*' });
const client = async (name, body) => (await api('POST', `identity/oidc/client/${name}`, body)).data;
const serviceA = await client('service-a', {
  allowed_scopes: ['orders:read'],
  allowed_audiences: ['service-b'],
});
const gatewayClient = await client('gateway', {
  allowed_scopes: ['introspect'],
  allowed_audiences: ['gateway'],
});
write('introspect.secret', gatewayClient.client_secret, 0o600);
const issuer = `${vault}/v1/identity/oidc/provider/default`;

// --- service A's own secrets: a database password, an AppRole login ------------------
const dbPassword = randomBytes(18).toString('base64url');
await api('POST', 'secret/data/fleet/db', { data: { username: 'orders', password: dbPassword } });
await api('POST', 'sys/policies/acl/service-a', {
  policy: `
path "secret/data/fleet/db" { capabilities = ["read"] }
path "pki/issue/service-a"  { capabilities = ["update"] }
path "pki/cert/*"           { capabilities = ["read"] }
`,
});
await api('POST', 'sys/auth/approle', { type: 'approle' });
await api('POST', 'auth/approle/role/service-a', { token_policies: ['service-a'], token_ttl: '20m', secret_id_ttl: '24h' });
const roleId = (await api('GET', 'auth/approle/role/service-a/role-id')).data.role_id;
const secretId = (await api('POST', 'auth/approle/role/service-a/secret-id')).data.secret_id;
write('service-a.secret-id', secretId, 0o600);
write('service-a.client-secret', serviceA.client_secret, 0o600);

// --- 3. service B ----------------------------------------------------------------------
const fromWork = (f) => path.join(work, f);
start('service-b', process.execPath, [path.join(here, 'service-b.mjs')], {
  B_PORT: '0',
  B_CERT: fromWork('service-b.pem'),
  B_KEY: fromWork('service-b.key'),
  CA: fromWork('ca.pem'),
});
const bPort = await listening('service-b');

// --- 4. the gateway ----------------------------------------------------------------------
const [gatewayPort, adminPort] = [await freePort(), await freePort()];
const values = {
  GATEWAY_PORT: gatewayPort,
  ADMIN_PORT: adminPort,
  B_PORT: bPort,
  ISSUER: issuer,
  INTROSPECT_CLIENT_ID: gatewayClient.client_id,
};
write(
  'gateway.toml',
  fs
    .readFileSync(path.join(here, 'gateway.toml.in'), 'utf8')
    .replace(/@([A-Z_]+)@/g, (_, k) => String(values[k])),
);
fs.copyFileSync(path.join(here, 'policies.cedar'), fromWork('policies.cedar'));
start('gateway', bin, ['gateway', '--config', fromWork('gateway.toml')]);
await until('the gateway', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200);
const gateway = `https://localhost:${gatewayPort}`;

// --- 5. service A ------------------------------------------------------------------------
start('service-a', process.execPath, [path.join(here, 'service-a.mjs')], {
  A_PORT: '0',
  PALISADE_ADDR: vault,
  ROLE_ID: roleId,
  SECRET_ID_FILE: fromWork('service-a.secret-id'),
  TOKEN_URL: `${issuer}/token`,
  CLIENT_ID: serviceA.client_id,
  CLIENT_SECRET_FILE: fromWork('service-a.client-secret'),
  GATEWAY_URL: gateway,
});
const aPort = await listening('service-a');

// --- checks --------------------------------------------------------------------------------
/** An HTTPS GET with an optional client certificate and bearer token. */
function get(url, { cert, token } = {}) {
  return new Promise((resolve) => {
    const opts = { ca: fs.readFileSync(fromWork('ca.pem')), headers: {} };
    if (cert) Object.assign(opts, { cert: fs.readFileSync(fromWork(`${cert}.pem`)), key: fs.readFileSync(fromWork(`${cert}.key`)) });
    if (token) opts.headers.authorization = `Bearer ${token}`;
    const req = https.get(url, opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body: body ? JSON.parse(body) : null }));
    });
    // a refused handshake: the error code, never a response
    req.on('error', (e) => resolve({ status: 0, error: e.code ?? e.message }));
  });
}
// service A's client is registered with client_secret_basic (the default)
const basicA = `Basic ${Buffer.from(`${serviceA.client_id}:${serviceA.client_secret}`).toString('base64')}`;
async function token(scope = 'orders:read') {
  const r = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: basicA, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope }),
  });
  if (!r.ok) throw new Error(`token: ${r.status}`);
  return (await r.json()).access_token;
}

let checks = 0;
function check(what, ok, detail) {
  checks += 1;
  if (!ok) {
    failed = true;
    throw new Error(`check failed: ${what}: ${JSON.stringify(detail)}`);
  }
  console.log(`ok ${checks} - ${what}`);
}

if (!keep) {
  try {
    // service A → gateway (mTLS + client-credentials token) → service B (mTLS)
    const r = await fetch(`http://127.0.0.1:${aPort}/report`);
    const body = await r.json();
    check('service A calls service B through the gateway', r.status === 200 && body.from_b?.service === 'b', body);
    const { createHash } = await import('node:crypto');
    check(
      'service A read its database password from Palisade (KV v2 version 1, never in its environment)',
      body.db?.version === 1 && body.db.stale === false &&
        body.db.fingerprint === createHash('sha256').update(dbPassword).digest('hex').slice(0, 16),
      body.db,
    );
    check(
      "service A's client certificate was issued to it by the PKI engine",
      (await api('GET', `pki/cert/${body.certificate}`)).data.certificate.includes('BEGIN CERTIFICATE'),
      body.certificate,
    );
    check(
      'service B learns the caller from the gateway',
      body.from_b.caller === serviceA.client_id &&
        body.from_b.scopes === 'orders:read' &&
        body.from_b.workload === 'spiffe://example.org/service-a',
      body.from_b,
    );

    const good = await token();
    const url = `${gateway}/b/orders`;
    let x = await get(url, { cert: 'service-a' });
    check('a call without a token is refused (401 unauthenticated)', x.status === 401 && x.body.error.code === 'unauthenticated', x);
    x = await get(url, { token: good });
    check('a call without a client certificate is refused in the TLS handshake', x.status === 0, x);
    x = await get(url, { cert: 'intruder', token: good });
    check("service A's token from another workload is refused (403 forbidden)", x.status === 403 && x.body.error.code === 'forbidden', x);
    x = await get(`https://localhost:${bPort}/orders`, { cert: 'service-a' });
    check('a direct call to service B, bypassing the gateway, is refused (403)', x.status === 403, x);
    x = await get(`https://localhost:${bPort}/orders`);
    check('a direct call to service B without a certificate is refused in the handshake', x.status === 0, x);

    const mint = await fetch(`${vault}/v1/pki/issue/intruder`, {
      method: 'POST',
      headers: { 'x-vault-token': root, 'content-type': 'application/json' },
      body: JSON.stringify({ common_name: 'intruder.localhost', uri_sans: 'spiffe://example.org/gateway' }),
    });
    check("a workload's PKI role cannot issue the gateway's identity (400)", mint.status === 400, mint.status);

    // revoked at the provider: refused once the gateway's cached answer (cache_s = 2) runs out
    x = await get(url, { cert: 'service-a', token: good });
    check('the token works before it is revoked', x.status === 200, x);
    const revoke = await fetch(`${issuer}/revoke`, {
      method: 'POST',
      headers: { authorization: basicA, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: good }),
    });
    check('service A revokes its token (RFC 7009)', revoke.status === 200, revoke.status);
    await sleep(2100);
    x = await get(url, { cert: 'service-a', token: good });
    check('a revoked token is refused (401)', x.status === 401 && x.body.error.code === 'unauthenticated', x);

    // no token or client secret in any log (dev mode prints its root token at
    // start, as Vault's does: that one is meant to be seen)
    const logs = ['server', 'gateway', 'service-a', 'service-b'].map(log).join('\n');
    const leaked = [good, serviceA.client_secret, gatewayClient.client_secret, dbPassword, secretId].filter((s) => logs.includes(s));
    check('no token or secret appears in the logs', leaked.length === 0, leaked.length);
    console.log(`fleet: all ${checks} checks passed`);
  } catch (e) {
    failed = true;
    console.error(e.message);
    console.error(`logs kept in ${work}`);
  }
  stopping = true;
  stopAll();
  if (!failed) fs.rmSync(work, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
} else {
  console.log(`The fleet is running (logs and certificates in ${work}); Ctrl-C stops it.

  service A:   curl http://127.0.0.1:${aPort}/report
  gateway:     curl --cacert ${work}/ca.pem --cert ${work}/service-a.pem --key ${work}/service-a.key ${gateway}/b/orders
               (401 without a token: get one from ${issuer}/token)
  palisade:    VAULT_ADDR=${vault} VAULT_TOKEN=${root}`);
  await new Promise(() => {});
}
