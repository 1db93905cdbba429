// Service A: an Express service that calls service B through the gateway,
// written with the Palisade SDK (sdk/node) and no security code of its own:
//
//   - it logs in to Palisade with AppRole (its secret ID from a 0600 file);
//   - it reads its database password from Palisade (KV v2, cached, refreshed,
//     served stale through a short outage) — it never has it in its environment;
//   - its client certificate (URI SAN spiffe://example.org/service-a) comes
//     from Palisade's PKI engine and renews itself (the SDK's mTLS dispatcher);
//   - its access token comes from Palisade's OAuth2 provider with the
//     client-credentials grant (cached, refreshed early).
//
// Environment: A_PORT (0 picks a free port), PALISADE_ADDR, ROLE_ID,
// SECRET_ID_FILE, TOKEN_URL, CLIENT_ID, CLIENT_SECRET_FILE, GATEWAY_URL.
// Prints {"listening":PORT} once it accepts connections.
// GET /report: B's orders as seen through the gateway, and which version of
// the database password service A holds (a fingerprint, never the password).
import { createHash } from 'node:crypto';
import express from 'express';
import pino from 'pino';
import { ClientCredentials, Palisade, appRole, fetch, pinoRedaction } from '@palisade/sdk';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`service A: ${name} is not set`);
  return v;
};
const log = pino({ redact: pinoRedaction() });

const palisade = new Palisade({
  address: env('PALISADE_ADDR'),
  auth: appRole({ roleId: env('ROLE_ID'), secretIdFile: env('SECRET_ID_FILE') }),
});
const db = palisade.kv('secret').watch('fleet/db');
db.on('change', ({ version }) => log.info({ version }, 'database password changed: reconnecting'));
const mtls = await palisade.mtlsDispatcher({
  role: 'service-a',
  commonName: 'service-a.localhost',
  uriSans: ['spiffe://example.org/service-a'],
  ttl: '1h',
});
mtls.on('renewed', ({ serial, reason }) => log.info({ serial, reason }, 'client certificate renewed'));
const tokens = new ClientCredentials({
  tokenUrl: env('TOKEN_URL'),
  clientId: env('CLIENT_ID'),
  clientSecretFile: env('CLIENT_SECRET_FILE'),
  scope: 'orders:read',
});
const gateway = new URL(env('GATEWAY_URL'));

async function viaGateway(path) {
  const call = async () => {
    const token = await tokens.getToken();
    const r = await fetch(new URL(path, gateway), { dispatcher: mtls, headers: { authorization: `Bearer ${token}` } });
    return { status: r.status, body: await r.json(), token };
  };
  let r = await call();
  if (r.status === 401) {
    // revoked (or otherwise refused) before it expired: a new token, once
    tokens.invalidate(r.token);
    r = await call();
  }
  return r;
}

const app = express();
app.disable('x-powered-by');
app.get('/report', async (req, res) => {
  try {
    const password = await db.get();
    const r = await viaGateway('/b/orders');
    res.status(r.status === 200 ? 200 : 502).json({
      service: 'a',
      from_b: r.body,
      db: {
        version: password.version,
        stale: password.stale,
        fingerprint: createHash('sha256').update(String(password.data.password)).digest('hex').slice(0, 16),
      },
      certificate: mtls.certificate.serial,
    });
  } catch (e) {
    log.error({ code: e.code, message: e.message }, 'report failed');
    res.status(502).json({ error: { code: 'upstream_failed', message: e.code ?? 'error' } });
  }
});

const server = app.listen(Number(process.env.A_PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
