#!/usr/bin/env node
// End-to-end compatibility run: the unmodified `node-vault` npm client against
// a palisade server.
//
// Usage: node node_vault_e2e.js ADDR [--audit-file PATH] [--secrets-out PATH]
//
// ADDR is the base URL of a fresh (uninitialised) server. The script
// initialises it (5 shares, threshold 3), unseals it and drives sys, token,
// KV v2, KV v1 and audit endpoints through node-vault's public API only,
// checking the exact error messages node-vault users match on.
// --secrets-out writes every credential and secret value of the run as JSON so
// the caller can check that none reached the audit log or the server output.
// Prints one line per check, then `N passed, 0 failed`; exits 1 on failure.
// Run by crates/cli/tests/node_vault.rs.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const nodeVault = require('node-vault');

const V2_PASSWORD = 'node-e2e-v2-password-31c9d0aa';
const V2_UPDATED = 'node-e2e-v2-updated-value-77e2';
const V1_SECRET = 'node-e2e-v1-secret-value-c05b18';

const POLICY_HCL = `
path "nkv2/data/app/*" {
  capabilities = ["read"]
}
`;

async function expectError(promise, status, message) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e.response, `expected an API error, got ${e}`);
    assert.equal(e.response.statusCode, status, `status of: ${e.message}`);
    if (message !== undefined) assert.equal(e.message, message);
    return e;
  }
  throw new Error(`expected ${status} ${message || ''}`);
}

async function main(argv) {
  const args = argv.slice(2);
  if (args.length === 0) {
    console.log('usage: node_vault_e2e.js ADDR [--audit-file PATH] [--secrets-out PATH]');
    return 2;
  }
  const addr = args.shift();
  let auditFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'node-e2e-')), 'audit.log');
  let secretsOut = null;
  while (args.length) {
    const flag = args.shift();
    if (flag === '--audit-file') auditFile = args.shift();
    else if (flag === '--secrets-out') secretsOut = args.shift();
    else {
      console.log(`unknown argument ${flag}`);
      return 2;
    }
  }

  let passed = 0;
  let failed = 0;
  async function check(name, fn) {
    try {
      await fn();
      passed += 1;
      console.log(`ok   ${name}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}`);
      console.log(e && e.stack ? e.stack : String(e));
      if (e && e.response) console.log(JSON.stringify(e.response));
    }
  }

  const vault = nodeVault({ endpoint: addr, apiVersion: 'v1' });
  const state = { keys: [], tokens: [] };

  await check('initialized, init 5/3, status, already initialized', async () => {
    assert.deepEqual(await vault.initialized(), { initialized: false });
    const r = await vault.init({ secret_shares: 5, secret_threshold: 3 });
    assert.equal(r.keys.length, 5);
    assert.ok(r.root_token);
    state.root = r.root_token;
    state.unseal = r.keys;
    state.keys = r.keys.concat(r.keys_base64 || []);
    const st = await vault.status();
    assert.equal(st.sealed, true);
    assert.equal(st.t, 3);
    assert.equal(st.n, 5);
    await expectError(vault.init({ secret_shares: 5, secret_threshold: 3 }), 400, 'Vault is already initialized');
  });

  await check('sealed: health resolves with the body, reads fail with "Vault is sealed"', async () => {
    const h = await vault.health();
    assert.equal(h.sealed, true);
    assert.equal(h.initialized, true);
    vault.token = state.root;
    await expectError(vault.read('sys/mounts'), 503, 'Vault is sealed');
  });

  await check('unseal with 3 keys', async () => {
    let r = await vault.unseal({ secret_shares: 1, key: state.unseal[0] });
    assert.equal(r.sealed, true);
    assert.equal(r.progress, 1);
    r = await vault.unseal({ secret_shares: 1, key: state.unseal[1] });
    assert.equal(r.progress, 2);
    r = await vault.unseal({ secret_shares: 1, key: state.unseal[2] });
    assert.equal(r.sealed, false);
    const h = await vault.health();
    assert.equal(h.sealed, false);
    assert.equal(h.standby, false);
  });

  await check('mount kv v2 and v1 (path params in the body), mounts at the top level', async () => {
    await vault.mount({ mount_point: 'nkv2', type: 'kv', options: { version: '2' }, description: 'node v2' });
    await vault.mount({ mount_point: 'nkv1', type: 'kv' });
    const m = await vault.mounts();
    assert.equal(m['nkv2/'].type, 'kv');
    assert.equal(m['nkv2/'].options.version, '2');
    assert.equal(m.data['nkv1/'].type, 'kv');
  });

  await check('addPolicy ({name, rules}), getPolicy, policies', async () => {
    await vault.addPolicy({ name: 'node-app', rules: POLICY_HCL });
    const p = await vault.getPolicy({ name: 'node-app' });
    assert.ok(p.rules.includes('nkv2/data/app/*'), JSON.stringify(p));
    const all = await vault.policies();
    assert.ok(all.policies.includes('node-app'), JSON.stringify(all));
  });

  const limited = nodeVault({ endpoint: addr, apiVersion: 'v1', token: state.root });
  await check('tokenCreate, tokenLookupSelf (data.ttl), tokenRenewSelf, tokenLookup', async () => {
    // tokenCreate replaces the client's token with the new one (tokenSource)
    const r = await limited.tokenCreate({ policies: ['node-app'], ttl: '1h' });
    assert.ok(r.auth.client_token);
    assert.equal(limited.token, r.auth.client_token);
    state.limited = r.auth.client_token;
    state.tokens.push(r.auth.client_token);
    const me = await limited.tokenLookupSelf();
    assert.ok(me.data.ttl > 0 && me.data.ttl <= 3600, JSON.stringify(me.data));
    assert.ok(me.data.policies.includes('node-app'));
    const ren = await limited.tokenRenewSelf({ increment: '2h' });
    assert.equal(ren.auth.client_token, state.limited);
    const looked = await vault.tokenLookup({ token: state.limited });
    assert.equal(looked.data.accessor, r.auth.accessor);
    const accessors = await vault.tokenAccessors();
    assert.ok(accessors.data.keys.includes(r.auth.accessor));
  });

  await check('kv v2 write (cas) / read / update (merge-patch) / list / metadata', async () => {
    let r = await vault.write('nkv2/data/app/db', { options: { cas: 0 }, data: { password: V2_PASSWORD, user: 'app' } });
    assert.equal(r.data.version, 1);
    await expectError(
      vault.write('nkv2/data/app/db', { options: { cas: 0 }, data: { password: 'x' } }),
      400,
      'check-and-set parameter did not match the current version',
    );
    r = await vault.update('nkv2/data/app/db', { data: { password: V2_UPDATED } });
    assert.equal(r.data.version, 2);
    r = await vault.read('nkv2/data/app/db');
    assert.deepEqual(r.data.data, { password: V2_UPDATED, user: 'app' });
    r = await vault.read('nkv2/data/app/db?version=1');
    assert.equal(r.data.data.password, V2_PASSWORD);
    r = await vault.list('nkv2/metadata/app');
    assert.deepEqual(r.data.keys, ['db']);
    const getList = nodeVault({ endpoint: addr, token: state.root, noCustomHTTPVerbs: true });
    r = await getList.list('nkv2/metadata/app');
    assert.deepEqual(r.data.keys, ['db']);
    await expectError(vault.list('nkv2/metadata/none'), 404);
    r = await vault.read('nkv2/metadata/app/db');
    assert.equal(r.data.current_version, 2);
    await vault.write('nkv2/metadata/app/db', { max_versions: 4, custom_metadata: { owner: 'node' } });
    r = await vault.read('nkv2/metadata/app/db');
    assert.equal(r.data.max_versions, 4);
    assert.deepEqual(r.data.custom_metadata, { owner: 'node' });
  });

  await check('kv v2 delete -> 404 with body, undelete, destroySecretVersions', async () => {
    await vault.delete('nkv2/data/app/db');
    const e = await expectError(vault.read('nkv2/data/app/db'), 404);
    assert.equal(e.response.body.data.data, null);
    assert.ok(e.response.body.data.metadata.deletion_time);
    await vault.write('nkv2/undelete/app/db', { versions: [2] });
    const r = await vault.read('nkv2/data/app/db');
    assert.equal(r.data.data.password, V2_UPDATED);
    await vault.destroySecretVersions({ mount_point: 'nkv2', path: 'app/db', versions: [1] });
    const meta = await vault.read('nkv2/metadata/app/db');
    assert.equal(meta.data.versions['1'].destroyed, true);
  });

  await check('kv v1 write / read / list / delete', async () => {
    await vault.write('nkv1/svc/api', { key: V1_SECRET });
    let r = await vault.read('nkv1/svc/api');
    assert.deepEqual(r.data, { key: V1_SECRET });
    r = await vault.list('nkv1/svc');
    assert.deepEqual(r.data.keys, ['api']);
    await vault.delete('nkv1/svc/api');
    await expectError(vault.read('nkv1/svc/api'), 404);
  });

  await check('unknown path and help', async () => {
    await expectError(vault.read('nowhere/at/all'), 404, 'unsupported path');
    const h = await vault.help('nkv2/data/app/db');
    assert.ok(typeof h.help === 'string' && h.help.length > 0, JSON.stringify(h));
  });

  await check('enableAudit, audits, sys/audit-hash', async () => {
    await vault.enableAudit({ name: 'node-file', type: 'file', options: { file_path: auditFile } });
    const a = await vault.audits();
    assert.equal(a['node-file/'].type, 'file');
    assert.equal(a['node-file/'].options.file_path, auditFile);
    const h = await vault.write('sys/audit-hash/node-file', { input: V2_UPDATED });
    assert.ok(h.hash.startsWith('hmac-sha256:'), JSON.stringify(h));
    state.hmac = h.hash;
    await vault.read('nkv2/data/app/db');
    const text = fs.readFileSync(auditFile, 'utf8');
    assert.ok(text.includes(h.hash), 'the audit log must carry the HMAC of the secret');
    assert.ok(!text.includes(V2_UPDATED), 'the audit log must not carry the secret');
  });

  await check('limited token: allowed read, denied read/write with "permission denied"', async () => {
    const r = await limited.read('nkv2/data/app/db');
    assert.equal(r.data.data.password, V2_UPDATED);
    await expectError(limited.read('nkv1/svc/api'), 403, 'permission denied');
    await expectError(limited.write('nkv2/data/app/db', { data: { password: 'nope' } }), 403, 'permission denied');
    await expectError(limited.audits(), 403, 'permission denied');
  });

  await check('tokenRevoke, then the token is refused', async () => {
    await vault.tokenRevoke({ token: state.limited });
    await expectError(limited.tokenLookupSelf(), 403, 'permission denied');
  });

  if (secretsOut) {
    fs.writeFileSync(
      secretsOut,
      JSON.stringify({
        root_token: state.root || '',
        tokens: state.tokens,
        unseal_keys: state.keys,
        values: [V2_PASSWORD, V2_UPDATED, V1_SECRET],
        hmac: state.hmac || '',
      }),
    );
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
