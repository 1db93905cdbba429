// The benchmark's service: one Express app, with or without the SDK's
// middleware (argv[2]: none | verify | cached), on a free port; prints
// {"listening":PORT}. ISSUER and AUDIENCE in the environment.
import express from 'express';
import { expressAuth, TokenVerifier } from '../dist/esm/index.js';

const mode = process.argv[2];
const app = express();
app.disable('x-powered-by');
app.disable('etag');
if (mode !== 'none') {
  const verifier = new TokenVerifier({
    issuer: process.env.ISSUER,
    audience: process.env.AUDIENCE,
    // verify: jose checks the signature on every request (JWKS cached);
    // cached: a verified token's result is kept (30 s, never past exp)
    cacheMs: mode === 'cached' ? 30_000 : 0,
  });
  app.use(expressAuth({ jwt: verifier }));
}
app.get('/orders', (req, res) => res.json({ orders: [{ id: 1 }], sub: req.auth?.subject ?? null }));
const s = app.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ listening: s.address().port })));
