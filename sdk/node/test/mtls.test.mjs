// The mTLS dispatcher: a client certificate from the PKI engine, renewed
// without dropping requests in flight, re-issued when revoked.
import assert from 'node:assert/strict';
import https from 'node:https';
import { after, before, test } from 'node:test';
import { ErrorCodes, Palisade, fetch } from '../dist/esm/index.js';
import { sleep, startServer } from './helpers.mjs';

let server;
let client;
let service;
let serviceUrl;
let caPem;
const seen = [];

before(async () => {
  server = await startServer();
  await server.api('POST', 'sys/mounts/pki', { type: 'pki', config: { max_lease_ttl: '720h' } });
  caPem = (await server.api('POST', 'pki/root/generate/internal', { common_name: 'SDK test CA', ttl: '720h' })).data.certificate;
  await server.api('POST', 'pki/roles/orders', {
    allowed_domains: ['orders.localhost'],
    allow_bare_domains: true,
    allowed_uri_sans: ['spiffe://example.org/orders'],
    max_ttl: '24h',
  });
  await server.api('POST', 'pki/roles/localhost', { allowed_domains: ['localhost'], allow_bare_domains: true, allow_ip_sans: true, max_ttl: '24h' });
  const srv = (await server.api('POST', 'pki/issue/localhost', { common_name: 'localhost', ip_sans: '127.0.0.1' })).data;
  // a service that requires a client certificate from the CA and reports which one
  service = https.createServer({ key: srv.private_key, cert: srv.certificate, ca: caPem, requestCert: true, rejectUnauthorized: true }, async (req, res) => {
    const peer = req.socket.getPeerCertificate();
    seen.push(peer.serialNumber);
    if (req.url === '/slow') await sleep(600);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ serial: peer.serialNumber, san: peer.subjectaltname }));
  });
  await new Promise((r) => service.listen(0, '127.0.0.1', r));
  serviceUrl = `https://127.0.0.1:${service.address().port}`;
  client = new Palisade({ address: server.addr, auth: server.root });
});
after(async () => {
  service?.closeAllConnections?.();
  service?.close();
  await client?.close();
  await server?.stop();
});

const norm = (s) => s.replace(/:/g, '').replace(/^0+/, '').toUpperCase();

test('requests carry the issued certificate; without it the handshake is refused', async () => {
  const d = await client.mtlsDispatcher({ role: 'orders', commonName: 'orders.localhost', uriSans: ['spiffe://example.org/orders'], ttl: '1h' });
  const r = await fetch(`${serviceUrl}/`, { dispatcher: d });
  const body = await r.json();
  assert.equal(r.status, 200);
  assert.equal(norm(body.serial), norm(d.certificate.serial));
  assert.match(body.san, /URI:spiffe:\/\/example\.org\/orders/);
  assert.ok(d.certificate.notAfter.getTime() - Date.now() <= 3600_000);
  // no client certificate: refused in the handshake
  const { Agent } = await import('undici');
  await assert.rejects(fetch(`${serviceUrl}/`, { dispatcher: new Agent({ connect: { ca: caPem } }) }));
  await d.close();
  await assert.rejects(fetch(`${serviceUrl}/`, { dispatcher: d }), (e) => e.cause?.code === ErrorCodes.CLOSED || /closed/i.test(String(e.cause?.message ?? e.message)));
});

test('renewal swaps the certificate; a request in flight on the old one completes', async () => {
  const d = await client.mtlsDispatcher({ role: 'orders', commonName: 'orders.localhost', ttl: '1h' });
  const renewed = [];
  d.on('renewed', (e) => renewed.push(e));
  const before = d.certificate.serial;
  const slow = fetch(`${serviceUrl}/slow`, { dispatcher: d }).then((r) => r.json());
  await sleep(100);
  await d.renew();
  const after = d.certificate.serial;
  assert.notEqual(after, before);
  assert.deepEqual(renewed.map((e) => e.reason), ['manual']);
  const s = await slow;
  assert.equal(norm(s.serial), norm(before), 'the request in flight finished on its connection');
  const r = await (await fetch(`${serviceUrl}/`, { dispatcher: d })).json();
  assert.equal(norm(r.serial), norm(after), 'new connections present the new certificate');
  await d.close();
});

test('a scheduled renewal at two thirds of the lifetime', async () => {
  const d = await client.mtlsDispatcher({ role: 'orders', commonName: 'orders.localhost', ttl: '3s', revocationCheckMs: 0 });
  const first = d.certificate.serial;
  const renewed = new Promise((r) => d.once('renewed', r));
  const ev = await renewed;
  assert.equal(ev.reason, 'schedule');
  assert.notEqual(d.certificate.serial, first);
  await d.close();
});

test('a revoked certificate is re-issued at once; a failed re-issue is never presented', async () => {
  const d = await client.mtlsDispatcher({ role: 'orders', commonName: 'orders.localhost', ttl: '1h', revocationCheckMs: 0 });
  assert.equal(await d.checkRevocation(), false);
  const old = d.certificate.serial;
  await server.api('POST', 'pki/revoke', { serial_number: old });
  assert.equal(await d.checkRevocation(), true);
  assert.notEqual(d.certificate.serial, old);
  const r = await (await fetch(`${serviceUrl}/`, { dispatcher: d })).json();
  assert.equal(norm(r.serial), norm(d.certificate.serial));
  // the role is gone: the next revocation cannot be healed, and the revoked certificate is not used
  const errors = [];
  d.on('renew-error', (e) => errors.push(e));
  await server.api('POST', 'pki/revoke', { serial_number: d.certificate.serial });
  await server.api('DELETE', 'pki/roles/orders');
  assert.equal(await d.checkRevocation(), true);
  assert.equal(errors.length, 1);
  await assert.rejects(fetch(`${serviceUrl}/`, { dispatcher: d }), (e) => e.cause?.code === ErrorCodes.CERTIFICATE);
  await d.close();
});

test('a role that may not issue the name: ERR_PALISADE_BAD_REQUEST at start', async () => {
  await server.api('POST', 'pki/roles/narrow', { allowed_domains: ['narrow.localhost'], allow_bare_domains: true, max_ttl: '1h' });
  await assert.rejects(client.mtlsDispatcher({ role: 'narrow', commonName: 'gateway.localhost' }), (e) => e.code === ErrorCodes.BAD_REQUEST);
});
