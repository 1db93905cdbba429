// Test helpers: a real `palisade server --dev` per test file.
//
// The binary: $PALISADE_BIN, else the debug build under the repository's
// target directory (or $CARGO_TARGET_DIR). Tests fail when it is missing.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../..');

export function palisadeBin() {
  const candidates = [
    process.env.PALISADE_BIN,
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, 'debug/palisade'),
    path.join(repo, 'target/debug/palisade'),
  ].filter(Boolean);
  const bin = candidates.find((c) => fs.existsSync(c));
  if (!bin) throw new Error(`no palisade binary (tried ${candidates.join(', ')}): set PALISADE_BIN or cargo build -p palisade-cli`);
  return bin;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

export async function until(what, probe, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A dev server on a free loopback port, with a known root token. */
export async function startServer({ port, root } = {}) {
  port ??= await freePort();
  const addr = `http://127.0.0.1:${port}`;
  root ??= `root-${randomBytes(16).toString("hex")}`;
  let output = '';
  const proc = spawn(palisadeBin(), ['server', '--dev', '--dev-listen-address', `127.0.0.1:${port}`], {
    env: { ...process.env, PALISADE_DEV_ROOT_TOKEN_ID: root, NO_COLOR: '1', PALISADE_LOG: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  await until('the server', async () => {
    if (proc.exitCode !== null) throw new Error(`palisade server exited (${proc.exitCode}): ${output}`);
    return (await fetch(`${addr}/v1/sys/health`)).status === 200;
  }).catch((e) => {
    throw new Error(`${e.message}; its output: ${output}`);
  });

  async function api(method, p, body, token = root) {
    const r = await fetch(`${addr}/v1/${p}`, {
      method,
      headers: { 'x-vault-token': token, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }
  const stopped = new Promise((r) => proc.once('exit', r));
  return {
    addr,
    port,
    root,
    proc,
    api,
    output: () => output,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await stopped;
    },
  };
}

/**
 * A server from a configuration file (not dev mode): SQLite in a temporary
 * directory, plaintext on loopback, `extraToml` appended; initialised 1/1
 * and unsealed over HTTP, KV v2 mounted at secret/.
 */
export async function startConfiguredServer(extraToml = '') {
  const fsMod = await import('node:fs');
  const os = await import('node:os');
  const dir = fsMod.mkdtempSync(path.join(os.tmpdir(), 'palisade-sdk-server-'));
  const port = await freePort();
  const addr = `http://127.0.0.1:${port}`;
  const config = path.join(dir, 'server.toml');
  fsMod.writeFileSync(
    config,
    `[storage]\nbackend = "sqlite"\npath = "${path.join(dir, 'palisade.db')}"\n\n[listener]\naddress = "127.0.0.1:${port}"\ntls_disable = true\n\n${extraToml}\n`,
  );
  let output = '';
  const proc = spawn(palisadeBin(), ['server', '--config', config], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  const stopped = new Promise((r) => proc.once('exit', r));
  await until('the configured server', async () => {
    if (proc.exitCode !== null) throw new Error(`palisade server exited: ${output}`);
    return (await fetch(`${addr}/v1/sys/health`)).status !== undefined;
  });
  const put = async (p, body, token) => {
    const r = await fetch(`${addr}/v1/${p}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { 'x-vault-token': token } : {}) }, body: JSON.stringify(body) });
    if (!r.ok) throw new Error(`${p}: ${r.status} ${await r.text()}`);
    const t = await r.text();
    return t ? JSON.parse(t) : null;
  };
  const init = await put('sys/init', { secret_shares: 1, secret_threshold: 1 });
  await put('sys/unseal', { key: init.keys_base64?.[0] ?? init.keys[0] });
  const root = init.root_token;
  await put('sys/mounts/secret', { type: 'kv', options: { version: '2' } }, root);
  return {
    addr,
    root,
    output: () => output,
    api: (method, p, body) => put(p, body, root),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await stopped;
      fsMod.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every string in `secrets` that occurs in `text`. */
export function leaked(text, secrets) {
  return secrets.filter((s) => s && text.includes(s));
}
