#!/usr/bin/env node
// The service behind the gateway in the gateway end-to-end tests
// (crates/cli/tests/gateway_*.rs): a plain Express app, as our users run.
//
// Usage: node upstream.js PORT      (PORT 0 picks a free port)
//
// Prints one line `{"listening":PORT}` on stdout once it accepts connections.
//
// Routes:
//   GET|POST|... /orders/boom  500 with a fake stack trace body (the gateway must replace it)
//   any method   /orders/slow?ms=N  200 {"slow_ms": N} after N ms (at most 60000): request timeouts
//   any method   /orders, /orders/*, /health, and every other path:
//                200 {"method", "path", "headers", "body_bytes"} — what the service saw
//
// Express's default `X-Powered-By: Express` stays on, and every response
// carries a `Server` header with the Node.js version, so the tests can check
// that the gateway strips both.
import express from 'express';

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node upstream.js PORT');
  process.exit(2);
}

const app = express(); // x-powered-by is enabled by default

app.use((req, res, next) => {
  res.set('Server', `node/${process.version}`);
  next();
});

app.all('/orders/boom', (req, res) => {
  res.status(500).type('text/plain').send('Error: boom\n    at secret/internal.js:42\n');
});

app.all('/orders/slow', (req, res) => {
  const ms = Math.min(Math.max(Number.parseInt(String(req.query.ms ?? '0'), 10) || 0, 0), 60000);
  const timer = setTimeout(() => res.status(200).json({ slow_ms: ms, path: req.path }), ms);
  res.on('close', () => clearTimeout(timer));
});

// ?mb=N megabytes of 'x' (at most 64): a response larger than socket buffers
app.all('/orders/big', (req, res) => {
  const mb = Math.min(Math.max(Number.parseInt(String(req.query.mb ?? '1'), 10) || 1, 1), 64);
  res.status(200).type('application/octet-stream').send(Buffer.alloc(mb << 20, 0x78));
});

// Everything else echoes what arrived (the body is counted, not kept).
app.use((req, res) => {
  let bytes = 0;
  req.on('data', (chunk) => {
    bytes += chunk.length;
  });
  req.on('end', () => {
    res.status(200).json({ method: req.method, path: req.path, url: req.originalUrl, headers: req.headers, body_bytes: bytes });
  });
});

const server = app.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ listening: server.address().port })}\n`);
});
server.on('error', (e) => {
  console.error(`upstream: ${e.message}`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
