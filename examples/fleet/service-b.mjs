// Service B: an Express service that trusts only the gateway. It listens with
// TLS and requires a client certificate from the example CA (mTLS); the SDK's
// middleware accepts the identity the gateway forwards (x-caller / x-scopes /
// x-workload) only on a connection whose verified client certificate is the
// gateway's (URI SAN spiffe://example.org/gateway), and refuses every other
// caller (403 untrusted_proxy) without reading those headers.
//
// Environment: B_PORT (0 picks a free port), B_CERT, B_KEY, CA (PEM files).
// Prints {"listening":PORT} once it accepts connections.
import fs from 'node:fs';
import https from 'node:https';
import express from 'express';
import pino from 'pino';
import { expressAuth, pinoRedaction } from '@palisade/sdk';

const log = pino({ redact: pinoRedaction() });
const app = express();
app.disable('x-powered-by');
app.use(
  expressAuth({
    gateway: {
      headers: { subject: 'x-caller', scopes: 'x-scopes', workload: 'x-workload' },
      trust: { peerUris: ['spiffe://example.org/gateway'] },
    },
    logger: log,
  }),
);

app.get('/orders', (req, res) => {
  res.json({
    service: 'b',
    orders: [{ id: 1, item: 'book' }],
    caller: req.auth.subject,
    scopes: req.auth.scopes.join(' '),
    workload: req.auth.workload,
  });
});

app.use((req, res) => res.status(404).json({ error: { code: 'not_found', message: 'no such route' } }));

const server = https.createServer(
  {
    key: fs.readFileSync(process.env.B_KEY),
    cert: fs.readFileSync(process.env.B_CERT),
    ca: fs.readFileSync(process.env.CA),
    requestCert: true,
    rejectUnauthorized: true,
  },
  app,
);
server.listen(Number(process.env.B_PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
