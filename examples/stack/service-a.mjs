// Service A: an Express service that calls service B through the gateway.
// It gets a short-lived access token from Palisade's OAuth2 provider with the
// client-credentials grant (cached until a minute before it expires) and calls
// the gateway over mTLS with its own client certificate (URI SAN
// spiffe://example.org/service-a), both issued by Palisade.
//
// Environment: A_PORT (0 picks a free port), TOKEN_URL, CLIENT_ID,
// CLIENT_SECRET, GATEWAY_URL, A_CERT, A_KEY, CA.
// Prints {"listening":PORT} once it accepts connections.
// GET /report: B's orders as seen through the gateway.
import fs from 'node:fs';
import https from 'node:https';
import express from 'express';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`service A: ${name} is not set`);
  return v;
};
const tokenUrl = env('TOKEN_URL');
const clientId = env('CLIENT_ID');
const clientSecret = env('CLIENT_SECRET');
const gateway = new URL(env('GATEWAY_URL'));
// one TLS agent: the client certificate and the CA that signed the gateway's
const agent = new https.Agent({
  cert: fs.readFileSync(env('A_CERT')),
  key: fs.readFileSync(env('A_KEY')),
  ca: fs.readFileSync(env('CA')),
  keepAlive: true,
});

let cached = { token: null, until: 0 };
async function accessToken() {
  if (cached.token && Date.now() < cached.until) return cached.token;
  const basic = Buffer.from(
    `${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`,
  ).toString('base64');
  const r = await fetch(tokenUrl, {
    method: 'POST',
    headers: {
      authorization: `Basic ${basic}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'orders:read' }),
  });
  if (!r.ok) throw new Error(`token endpoint answered ${r.status}`);
  const t = await r.json();
  cached = { token: t.access_token, until: Date.now() + (t.expires_in - 60) * 1000 };
  return cached.token;
}

function viaGateway(path, token) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(path, gateway),
      { agent, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const app = express();
app.disable('x-powered-by');
app.get('/report', async (req, res) => {
  try {
    let r = await viaGateway('/b/orders', await accessToken());
    if (r.status === 401) {
      // revoked (or otherwise refused) before it expired: a new token, once
      cached = { token: null, until: 0 };
      r = await viaGateway('/b/orders', await accessToken());
    }
    res.status(r.status === 200 ? 200 : 502).json({ service: 'a', from_b: JSON.parse(r.body) });
  } catch (e) {
    // never the token or the secret: only what failed
    res.status(502).json({ error: { code: 'upstream_failed', message: e.message } });
  }
});

const server = app.listen(Number(process.env.A_PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
