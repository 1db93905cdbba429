/**
 * A pino `redact` preset: the places where tokens, secrets and keys turn up
 * in a Node.js service's log objects (request and response headers, bodies
 * of login and token calls, the SDK's own values).
 *
 *   const logger = pino({ redact: pinoRedaction() });
 *
 * Paths are pino's (fast-redact) syntax; pass `extra` for your own fields.
 * Wildcards cover one level: `*.password` is `{ user: { password } }`, not
 * deeper — name deeper fields in `extra`.
 */
export const REDACT_PATHS: readonly string[] = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers.cookie',
  'req.headers["x-vault-token"]',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["x-vault-token"]',
  'headers["x-api-key"]',
  'authorization',
  'password',
  'secret',
  'token',
  'client_secret',
  'clientSecret',
  'secret_id',
  'secretId',
  'access_token',
  'accessToken',
  'refresh_token',
  'id_token',
  'client_token',
  'private_key',
  'privateKey',
  'plaintext',
  '*.password',
  '*.secret',
  '*.token',
  '*.client_secret',
  '*.clientSecret',
  '*.secret_id',
  '*.secretId',
  '*.access_token',
  '*.accessToken',
  '*.refresh_token',
  '*.id_token',
  '*.client_token',
  '*.private_key',
  '*.privateKey',
  '*.plaintext',
  'auth.client_token',
  'data.data',
];

export interface PinoRedaction {
  paths: string[];
  censor: string;
  remove: boolean;
}

/** `{ paths, censor: '[REDACTED]' }` for pino's `redact` option. */
export function pinoRedaction(extra: string[] = []): PinoRedaction {
  return { paths: [...REDACT_PATHS, ...extra], censor: '[REDACTED]', remove: false };
}
