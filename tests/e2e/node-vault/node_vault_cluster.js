// The unmodified node-vault client against one node of a Palisade HA
// cluster (active, forwarding standby or redirecting standby): KV v2 write,
// read, list, patch and delete, policies, tokens, health and leader. The
// cluster is initialised and unsealed by the caller.
//
// usage: node node_vault_cluster.js ADDR ROOT_TOKEN PREFIX
// Prints "N passed, 0 failed" last when every check passed.
'use strict';

const assert = require('node:assert/strict');
const nodeVault = require('node-vault');

async function main(argv) {
  const [addr, root, prefix] = argv.slice(2);
  if (!prefix) {
    console.log('usage: node node_vault_cluster.js ADDR ROOT_TOKEN PREFIX');
    return 2;
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
      console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    }
  }
  const vault = nodeVault({ endpoint: addr, apiVersion: 'v1', token: root });

  await check('kv v2 write, read, patch, list, delete', async () => {
    let r = await vault.write(`secret/data/${prefix}/app`, { data: { user: 'svc', password: 'pw-1' } });
    assert.equal(r.data.version, 1);
    r = await vault.read(`secret/data/${prefix}/app`);
    assert.deepEqual(r.data.data, { user: 'svc', password: 'pw-1' });
    r = await vault.request({
      path: `/secret/data/${prefix}/app`,
      method: 'PATCH',
      json: { data: { password: 'pw-2' } },
      headers: { 'Content-Type': 'application/merge-patch+json' },
    });
    assert.equal(r.data.version, 2);
    r = await vault.list(`secret/metadata/${prefix}`);
    assert.deepEqual(r.data.keys, ['app']);
    await vault.delete(`secret/metadata/${prefix}/app`);
    await assert.rejects(vault.read(`secret/data/${prefix}/app`), (e) => e.response.statusCode === 404);
  });

  await check('policies, token create/lookup/revoke, a refused write', async () => {
    const name = `${prefix}-reader`;
    await vault.addPolicy({ name, rules: `path "secret/data/${prefix}/*" { capabilities = ["read"] }` });
    const t = await vault.tokenCreate({ policies: [name], ttl: '1h' });
    // tokenCreate is a "token source" in node-vault: the client now holds
    // the new token; back to root
    vault.token = root;
    const user = nodeVault({ endpoint: addr, apiVersion: 'v1', token: t.auth.client_token });
    const look = await user.tokenLookupSelf();
    assert.ok(look.data.policies.includes(name));
    await vault.write(`secret/data/${prefix}/shared`, { data: { v: '1' } });
    assert.deepEqual((await user.read(`secret/data/${prefix}/shared`)).data.data, { v: '1' });
    await assert.rejects(user.write(`secret/data/${prefix}/shared`, { data: { v: '2' } }), (e) => {
      assert.equal(e.response.statusCode, 403);
      assert.match(e.message, /permission denied/);
      return true;
    });
    await vault.tokenRevoke({ token: t.auth.client_token });
    await assert.rejects(user.tokenLookupSelf(), (e) => e.response.statusCode === 403);
  });

  await check('initialized, status, leader', async () => {
    assert.deepEqual(await vault.initialized(), { initialized: true });
    assert.equal((await vault.status()).sealed, false);
    const l = await vault.request({ path: '/sys/leader', method: 'GET' });
    assert.equal(l.ha_enabled, true);
    assert.ok(l.leader_address);
  });

  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

main(process.argv).then(
  (code) => process.exit(code),
  (e) => {
    console.log(`FAIL ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
