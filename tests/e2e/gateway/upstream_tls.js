#!/usr/bin/env node
// An HTTPS service that requires a client certificate, for the gateway's
// upstream TLS / mTLS-to-services tests (crates/cli/tests/gateway_upstream.rs).
//
// Usage: node upstream_tls.js PORT KEY CERT CA
//   KEY, CERT: the service's key and certificate (PEM)
//   CA:        the CA client certificates must chain to (PEM)
//   PORT 0 picks a free port.
//
// Prints one line `{"listening":PORT}` on stdout once it accepts connections.
// Every request: 200 {"method", "url", "client_cn", "headers"} — client_cn is
// the CN of the verified client certificate. Connections without a valid
// client certificate are refused in the TLS handshake (rejectUnauthorized);
// the reason goes to stderr.
import fs from 'node:fs';
import https from 'node:https';

const [portArg, keyFile, certFile, caFile] = process.argv.slice(2);
const port = Number.parseInt(portArg ?? '', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535 || !keyFile || !certFile || !caFile) {
  console.error('usage: node upstream_tls.js PORT KEY CERT CA');
  process.exit(2);
}

const server = https.createServer(
  {
    key: fs.readFileSync(keyFile),
    cert: fs.readFileSync(certFile),
    ca: fs.readFileSync(caFile),
    requestCert: true,
    rejectUnauthorized: true,
  },
  (req, res) => {
    const peer = req.socket.getPeerCertificate();
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          method: req.method,
          url: req.url,
          client_cn: peer?.subject?.CN ?? null,
          headers: req.headers,
        }),
      );
    });
  },
);
server.on('tlsClientError', (e) => console.error(`upstream_tls: client refused: ${e.message}`));
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ listening: server.address().port })}\n`);
});
server.on('error', (e) => {
  console.error(`upstream_tls: ${e.message}`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
