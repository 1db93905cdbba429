#!/usr/bin/env node
// SDK benchmark (issue #18): run by bench/sdk-node.sh.
//
// 1. Secret reads per second, one process, one key: the SDK's watched
//    (cached) secret, the SDK's uncached kv.get() (one HTTP round trip), and
//    node-vault's read (what Node users call today; uncached), side by side.
// 2. What the Express middleware adds per request: the same Express app
//    without middleware, with the middleware verifying every token (jose,
//    JWKS cached), and with its verified-token cache, each in its own
//    process, driven by 16 keep-alive connections from this process, rounds
//    interleaved. Added cost per request = 1/rps(with) − 1/rps(without): the
//    app is one single-threaded process at saturation, so 1/rps is its time
//    per request. Also timed in process: the middleware function alone
//    (mock request/response), the cost it adds without any HTTP around it.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { Palisade, TokenVerifier, expressAuth } from '../dist/esm/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const seconds = Number(arg('seconds', '5'));
const rounds = Number(arg('rounds', '3'));
const bin = process.env.PALISADE_BIN ?? path.join(repo, 'target/debug/palisade');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

// --- the server ------------------------------------------------------------------
const port = await freePort();
const addr = `http://127.0.0.1:${port}`;
const root = randomBytes(16).toString("hex");
const server = spawn(bin, ['server', '--dev', '--dev-listen-address', `127.0.0.1:${port}`], {
  env: { ...process.env, PALISADE_DEV_ROOT_TOKEN_ID: root, PALISADE_LOG: 'warn' },
  stdio: 'ignore',
});
const children = [server];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));
for (;;) {
  try {
    if ((await fetch(`${addr}/v1/sys/health`)).status === 200) break;
  } catch {}
  await sleep(50);
}
async function api(method, p, body) {
  const r = await fetch(`${addr}/v1/${p}`, { method, headers: { 'x-vault-token': root, 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
  const t = await r.text();
  return t ? JSON.parse(t) : null;
}

/** Calls `op` back to back for `ms`; answers ops/s. */
async function loop(op, ms) {
  let n = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) await op();
    n += 64;
  }
  return n / (ms / 1000);
}

const lines = [];
const out = (s) => {
  lines.push(s);
  console.log(s);
};
out(`# SDK benchmark: ${seconds} s per measurement, ${rounds} rounds, node ${process.version}`);

// --- 1. secret reads ------------------------------------------------------------------
await api('POST', 'secret/data/bench/db', { data: { password: randomBytes(12).toString('hex') } });
const client = new Palisade({ address: addr, auth: root });
const watched = client.kv().watch('bench/db', { refreshMs: 60_000 });
await watched.get();
const kv = client.kv();
let nodeVault = null;
try {
  const req = createRequire(path.join(repo, 'tests/e2e/node-vault/package.json'));
  nodeVault = req('node-vault')({ apiVersion: 'v1', endpoint: addr, token: root });
} catch {
  out('# node-vault not installed (npm ci in tests/e2e/node-vault): its row is skipped');
}
const reads = { 'SDK watched secret (cached)': [], 'SDK kv.get (uncached)': [], 'node-vault read (uncached)': [] };
for (let r = 0; r < rounds; r++) {
  reads['SDK watched secret (cached)'].push(await loop(() => watched.get(), seconds * 1000));
  reads['SDK kv.get (uncached)'].push(await loop(() => kv.get('bench/db'), seconds * 1000));
  if (nodeVault) reads['node-vault read (uncached)'].push(await loop(() => nodeVault.read('secret/data/bench/db'), seconds * 1000));
}
const base = median(reads['node-vault read (uncached)'].length ? reads['node-vault read (uncached)'] : reads['SDK kv.get (uncached)']);
out('\n| secret read | reads/s (median) | rounds | × node-vault |');
out('|---|---:|---|---:|');
for (const [k, v] of Object.entries(reads)) {
  if (v.length === 0) continue;
  out(`| ${k} | ${Math.round(median(v)).toLocaleString('en')} | ${v.map((x) => Math.round(x)).join(', ')} | ${(median(v) / base).toFixed(1)} |`);
}
watched.close();

// --- 2. the middleware ------------------------------------------------------------------
await api('POST', 'identity/oidc/key/default', { algorithm: 'EdDSA' });
await api('POST', 'identity/oidc/provider/default', { issuer: addr, allowed_client_ids: '*' });
const c = (await api('POST', 'identity/oidc/client/bench', { allowed_scopes: ['orders:read'], allowed_audiences: ['orders'], access_token_ttl: '1h' })).data;
const issuer = `${addr}/v1/identity/oidc/provider/default`;
const tr = await fetch(`${issuer}/token`, {
  method: 'POST',
  headers: { authorization: `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'orders:read' }),
});
const token = (await tr.json()).access_token;

// 2a. the middleware function alone, in process
async function inProcess(cacheMs) {
  const mw = expressAuth({ jwt: new TokenVerifier({ issuer, audience: 'orders', cacheMs }) });
  const req = { headers: { authorization: `Bearer ${token}` }, socket: {} };
  const res = { setHeader() {}, end() { throw new Error('refused'); } };
  const once = () => new Promise((resolve) => mw(req, res, resolve));
  await once(); // JWKS fetched and cached
  const n = await loop(once, seconds * 1000);
  return 1e6 / n; // µs per call
}
const fnVerify = [];
const fnCached = [];
for (let r = 0; r < rounds; r++) {
  fnVerify.push(await inProcess(0));
  fnCached.push(await inProcess(30_000));
}

// 2b. over HTTP
async function startApp(mode) {
  const p = spawn(process.execPath, [path.join(here, 'app.mjs'), mode], { env: { ...process.env, ISSUER: issuer, AUDIENCE: 'orders' }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(p);
  const appPort = await new Promise((resolve) => {
    let buf = '';
    p.stdout.on('data', (d) => {
      buf += d;
      const m = /\{"listening":(\d+)\}/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
  });
  return { proc: p, url: `http://127.0.0.1:${appPort}` };
}
async function drive(url, ms) {
  const pool = new Pool(url, { connections: 16, pipelining: 1 });
  const headers = { authorization: `Bearer ${token}` };
  const lat = [];
  let n = 0;
  let bad = 0;
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await pool.request({ path: '/orders', method: 'GET', headers });
        await r.body.text();
        if (r.statusCode !== 200) bad++;
        lat.push(performance.now() - t0);
        n++;
      }
    }),
  );
  await pool.close();
  lat.sort((a, b) => a - b);
  return { rps: n / (ms / 1000), p50: lat[Math.floor(lat.length / 2)], p99: lat[Math.floor(lat.length * 0.99)], bad };
}
const modes = ['none', 'verify', 'cached'];
const apps = {};
for (const m of modes) apps[m] = await startApp(m);
for (const m of modes) await drive(apps[m].url, 500); // warm-up (JIT, JWKS fetch)
const http = Object.fromEntries(modes.map((m) => [m, []]));
for (let r = 0; r < rounds; r++) for (const m of modes) http[m].push(await drive(apps[m].url, seconds * 1000));
const med = (m, k) => median(http[m].map((x) => x[k]));
out('\n| Express app | req/s (median) | p50 ms | p99 ms | non-200 | added µs/request (HTTP) | middleware call µs (in process) |');
out('|---|---:|---:|---:|---:|---:|---:|');
const names = { none: 'no middleware', verify: 'expressAuth, verify every request (JWKS cached)', cached: 'expressAuth, verified-token cache (default)' };
for (const m of modes) {
  const added = m === 'none' ? '—' : (1e6 / med(m, 'rps') - 1e6 / med('none', 'rps')).toFixed(1);
  const fn = m === 'none' ? '—' : median(m === 'verify' ? fnVerify : fnCached).toFixed(1);
  const bad = http[m].reduce((a, x) => a + x.bad, 0);
  out(`| ${names[m]} | ${Math.round(med(m, 'rps')).toLocaleString('en')} | ${med(m, 'p50').toFixed(2)} | ${med(m, 'p99').toFixed(2)} | ${bad} | ${added} | ${fn} |`);
}
await client.close();
if (arg('out')) fs.writeFileSync(arg('out'), `${lines.join('\n')}\n`);
process.exit(0);
