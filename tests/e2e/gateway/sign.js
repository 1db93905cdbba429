#!/usr/bin/env node
// Test identity provider for the gateway end-to-end tests, built on `jose`.
//
//   node sign.js keys DIR
//       Generates an RS256 (kid "rs-1"), an ES256 ("es-1") and an EdDSA/Ed25519
//       ("ed-1") key pair. Writes DIR/jwks.json (the public keys, `use: sig`,
//       with `alg` and `kid`), DIR/private.json (the private JWKs; test only)
//       and DIR/rsa-public.pem (SPKI PEM of the RSA key, for the HS256
//       key-confusion attack).
//
//   node sign.js sign DIR < specs.json
//       Reads a JSON array of token specs on stdin and prints a JSON array of
//       compact tokens, in the same order, on stdout. A spec:
//         {
//           "alg":    "RS256" | "ES256" | "EdDSA"   sign with that key
//                   | "none"                       unsigned (`alg: none`, empty signature)
//                   | "HS256-confusion"            HS256 with the RSA public key PEM as the
//                                                  HMAC secret, kid "rs-1" (the classic attack)
//           "claims": { ... }                      the payload, verbatim
//           "header": { ... }                      optional: merged into the protected header
//                                                  (e.g. {"kid": "unknown"})
//           "tamper": true                         optional: after signing, swap the payload
//                                                  for one with "sub": "admin" (signature kept)
//         }
//
// Nothing is printed but the result; exits 1 with a message on stderr on error.
import fs from 'node:fs';
import path from 'node:path';
import * as jose from 'jose';

const KEYS = [
  { kid: 'rs-1', alg: 'RS256', opts: { modulusLength: 2048 } },
  { kid: 'es-1', alg: 'ES256', opts: {} },
  { kid: 'ed-1', alg: 'EdDSA', opts: { crv: 'Ed25519' } },
];

function usage() {
  console.error('usage: node sign.js keys DIR | node sign.js sign DIR < specs.json');
  process.exit(2);
}

async function makeKeys(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const pub = [];
  const priv = {};
  for (const k of KEYS) {
    const { publicKey, privateKey } = await jose.generateKeyPair(k.alg, { ...k.opts, extractable: true });
    pub.push({ ...(await jose.exportJWK(publicKey)), kid: k.kid, alg: k.alg, use: 'sig' });
    priv[k.kid] = { alg: k.alg, jwk: await jose.exportJWK(privateKey) };
    if (k.alg === 'RS256') {
      fs.writeFileSync(path.join(dir, 'rsa-public.pem'), await jose.exportSPKI(publicKey));
    }
  }
  fs.writeFileSync(path.join(dir, 'jwks.json'), `${JSON.stringify({ keys: pub }, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'private.json'), JSON.stringify(priv), { mode: 0o600 });
}

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

async function signOne(dir, priv, spec) {
  const claims = spec.claims ?? {};
  const extra = spec.header ?? {};
  let token;
  switch (spec.alg) {
    case 'RS256':
    case 'ES256':
    case 'EdDSA': {
      const kid = KEYS.find((k) => k.alg === spec.alg).kid;
      const key = await jose.importJWK(priv[kid].jwk, spec.alg);
      token = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
        .setProtectedHeader({ alg: spec.alg, typ: 'JWT', kid, ...extra })
        .sign(key);
      break;
    }
    case 'none':
      token = `${b64({ alg: 'none', typ: 'JWT', ...extra })}.${b64(claims)}.`;
      break;
    case 'HS256-confusion': {
      const secret = fs.readFileSync(path.join(dir, 'rsa-public.pem'));
      token = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: 'rs-1', ...extra })
        .sign(new Uint8Array(secret));
      break;
    }
    default:
      throw new Error(`unknown alg ${JSON.stringify(spec.alg)}`);
  }
  if (spec.tamper) {
    const [h, , s] = token.split('.');
    token = `${h}.${b64({ ...claims, sub: 'admin' })}.${s}`;
  }
  return token;
}

async function main() {
  const [cmd, dir] = process.argv.slice(2);
  if (!dir) usage();
  if (cmd === 'keys') return makeKeys(dir);
  if (cmd !== 'sign') usage();
  const priv = JSON.parse(fs.readFileSync(path.join(dir, 'private.json'), 'utf8'));
  const specs = JSON.parse(fs.readFileSync(0, 'utf8'));
  if (!Array.isArray(specs)) throw new Error('stdin must be a JSON array of specs');
  const out = [];
  for (const spec of specs) out.push(await signOne(dir, priv, spec));
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => {
  console.error(`sign.js: ${e.message}`);
  process.exit(1);
});
