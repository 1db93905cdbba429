// Both builds: the ES module and the CommonJS one export the same API, and
// the CommonJS build loads the ESM-only `jose` (the middleware's verifier).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import * as esm from '@palisade/sdk';

const require = createRequire(import.meta.url);

test('require() and import give the same exports', () => {
  const cjs = require('@palisade/sdk');
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  for (const name of ['Palisade', 'appRole', 'jwtAuth', 'ClientCredentials', 'expressAuth', 'fastifyAuth', 'trustProxy', 'pinoRedaction', 'ErrorCodes', 'MtlsDispatcher']) {
    assert.ok(name in esm, name);
  }
  assert.equal(require.resolve('@palisade/sdk').endsWith('dist/cjs/index.js'), true);
  const pkg = require('@palisade/sdk/package.json');
  assert.ok(pkg.exports['.'].require.types.endsWith('.d.ts'));
});

test('the CommonJS build verifies with jose (loaded by dynamic import)', async () => {
  const cjs = require('@palisade/sdk');
  const v = new cjs.TokenVerifier({ issuer: 'http://127.0.0.1:1', audience: 'x', jwksUri: 'http://127.0.0.1:1/keys' });
  // jose parses (and refuses) the token before any key is fetched
  await assert.rejects(v.verify('abc.def'), (e) => e instanceof cjs.PalisadeError && e.code === 'ERR_PALISADE_TOKEN_INVALID');
});

test('both builds in one process (the dual-package hazard): errors and verifiers are recognised across builds', async () => {
  const cjs = require('@palisade/sdk');
  const e = new cjs.PalisadeError(cjs.ErrorCodes.SEALED, 'x');
  assert.ok(e instanceof esm.PalisadeError);
  assert.ok(esm.isPalisadeError(e, 'ERR_PALISADE_SEALED'));
  assert.ok(!(new Error('x') instanceof esm.PalisadeError));
  const v = new cjs.TokenVerifier({ issuer: 'http://127.0.0.1:1', audience: 'x', jwksUri: 'http://127.0.0.1:1/keys' });
  const auth = new esm.Authenticator({ jwt: v });
  await assert.rejects(auth.authenticate({ headers: { authorization: 'Bearer abc.def' }, socket: {} }), (err) => err instanceof esm.PalisadeError && err.code === 'ERR_PALISADE_TOKEN_INVALID');
});

test('error codes are stable strings', () => {
  for (const [k, v] of Object.entries(esm.ErrorCodes)) assert.match(v, /^ERR_PALISADE_[A-Z_]+$/, k);
  const e = new esm.PalisadeError(esm.ErrorCodes.SEALED, 'x', { status: 503 });
  assert.equal(e.code, 'ERR_PALISADE_SEALED');
  assert.ok(esm.isPalisadeError(e, 'ERR_PALISADE_SEALED'));
});
