// Service B: an Express service that trusts only the gateway. It listens with
// TLS and requires a client certificate from the example CA (mTLS), and of
// those only the gateway's (URI SAN spiffe://example.org/gateway) may call it:
// the gateway has already authenticated the caller and checked the policy,
// and tells B who called in the x-caller / x-scopes / x-workload headers.
//
// Environment: B_PORT (0 picks a free port), B_CERT, B_KEY, CA (PEM files).
// Prints {"listening":PORT} once it accepts connections.
import fs from 'node:fs';
import https from 'node:https';
import express from 'express';

const GATEWAY = 'spiffe://example.org/gateway';

const app = express();
app.disable('x-powered-by');

// only the gateway's certificate is accepted (rustls/OpenSSL verified the
// chain in the handshake; this checks whose certificate it is)
app.use((req, res, next) => {
  const uris = (req.socket.getPeerCertificate().subjectaltname ?? '')
    .split(', ')
    .filter((n) => n.startsWith('URI:'))
    .map((n) => n.slice(4));
  if (!uris.includes(GATEWAY)) {
    res.status(403).json({ error: { code: 'forbidden', message: 'only the gateway may call service B' } });
    return;
  }
  next();
});

app.get('/orders', (req, res) => {
  res.json({
    service: 'b',
    orders: [{ id: 1, item: 'book' }],
    caller: req.get('x-caller'),
    scopes: req.get('x-scopes'),
    workload: req.get('x-workload'),
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
