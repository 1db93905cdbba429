/**
 * Every error the SDK raises is a {@link PalisadeError} with a stable `code`
 * (`ERR_PALISADE_*`, the list below and in README.md). Messages name what
 * failed (method, path, HTTP status, the server's own error text) and never
 * contain a token, secret, key or secret value: values the SDK knows to be
 * secret are replaced by `[redacted]` before a message is built.
 */
export const ErrorCodes = {
  /** The server answered 503 "Vault is sealed". */
  SEALED: 'ERR_PALISADE_SEALED',
  /** The server could not be reached (connection refused, reset, DNS, TLS). */
  UNAVAILABLE: 'ERR_PALISADE_UNAVAILABLE',
  /** No answer within the configured timeout. */
  TIMEOUT: 'ERR_PALISADE_TIMEOUT',
  /** 403 with a valid token: the policy does not allow it. */
  PERMISSION_DENIED: 'ERR_PALISADE_PERMISSION_DENIED',
  /** 404. */
  NOT_FOUND: 'ERR_PALISADE_NOT_FOUND',
  /** 400 (or 405, 412, 413, 415, 422): the server refused the request as malformed. */
  BAD_REQUEST: 'ERR_PALISADE_BAD_REQUEST',
  /** 429 from the server's rate limiter (or a standby's 429). */
  RATE_LIMITED: 'ERR_PALISADE_RATE_LIMITED',
  /** Any other 5xx. */
  SERVER: 'ERR_PALISADE_SERVER',
  /** An answer that is not the JSON the API documents. */
  BAD_RESPONSE: 'ERR_PALISADE_BAD_RESPONSE',
  /** A login (AppRole, JWT, client credentials) was refused or failed. */
  AUTH_FAILED: 'ERR_PALISADE_AUTH_FAILED',
  /** The token expired or was revoked, and logging in again did not help. */
  TOKEN_EXPIRED: 'ERR_PALISADE_TOKEN_EXPIRED',
  /** A cached value is older than `maxStaleMs` and cannot be refreshed. */
  STALE: 'ERR_PALISADE_STALE',
  /** The SDK was called with an invalid option or argument. */
  INVALID_ARGUMENT: 'ERR_PALISADE_INVALID_ARGUMENT',
  /** An issued certificate or key could not be used (mismatch, expired, revoked and not re-issued). */
  CERTIFICATE: 'ERR_PALISADE_CERTIFICATE',
  /** Middleware: no credential was presented. */
  UNAUTHENTICATED: 'ERR_PALISADE_UNAUTHENTICATED',
  /** Middleware: the bearer token is malformed, badly signed, for another issuer or audience. */
  TOKEN_INVALID: 'ERR_PALISADE_TOKEN_INVALID',
  /** Middleware: the bearer token's `exp` has passed. */
  TOKEN_EXPIRED_JWT: 'ERR_PALISADE_JWT_EXPIRED',
  /** Middleware: the token lacks a required scope. */
  INSUFFICIENT_SCOPE: 'ERR_PALISADE_INSUFFICIENT_SCOPE',
  /** Middleware: identity headers from a peer that is not the trusted gateway. */
  UNTRUSTED_PROXY: 'ERR_PALISADE_UNTRUSTED_PROXY',
  /** Middleware: the issuer's keys (JWKS, discovery) cannot be fetched. */
  JWKS_UNAVAILABLE: 'ERR_PALISADE_JWKS_UNAVAILABLE',
  /** The object was closed. */
  CLOSED: 'ERR_PALISADE_CLOSED',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface PalisadeErrorOptions {
  /** HTTP status of the server's answer, when there was one. */
  status?: number;
  /** The server's `errors` array (redacted), when there was one. */
  errors?: string[];
  cause?: unknown;
}

const ERROR_BRAND = Symbol.for('palisade.sdk.PalisadeError');

/**
 * An application that loads both builds (ESM and CommonJS: the dual-package
 * hazard) has two PalisadeError classes; `instanceof` and isPalisadeError
 * recognise either, by a brand both share.
 */
export class PalisadeError extends Error {
  static override [Symbol.hasInstance](x: unknown): boolean {
    return typeof x === 'object' && x !== null && (x as Record<symbol, unknown>)[ERROR_BRAND] === true;
  }
  readonly [ERROR_BRAND] = true;
  readonly code: ErrorCode;
  readonly status: number | undefined;
  readonly errors: string[];

  constructor(code: ErrorCode, message: string, options: PalisadeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PalisadeError';
    this.code = code;
    this.status = options.status;
    this.errors = options.errors ?? [];
  }
}

/** True when `e` is a PalisadeError (with the given code, if one is named). */
export function isPalisadeError(e: unknown, code?: ErrorCode): e is PalisadeError {
  return e instanceof PalisadeError && (code === undefined || e.code === code);
}

/**
 * Values that must never appear in a message: tokens, secret IDs, client
 * secrets, private keys. Each client keeps one; anything built from server
 * text passes through {@link Redactor.scrub}.
 */
export class Redactor {
  private readonly secrets = new Set<string>();

  add(value: string | undefined | null): void {
    // very short values would redact ordinary words; no credential is that short
    if (!value || value.length < 4) return;
    for (const form of Redactor.forms(value)) this.secrets.add(form);
  }

  delete(value: string | undefined | null): void {
    if (value) for (const form of Redactor.forms(value)) this.secrets.delete(form);
  }

  /** The value as it may be echoed: itself, URL-encoded, base64 and base64url. */
  static forms(value: string): string[] {
    const b = Buffer.from(value, 'utf8');
    const forms = new Set([value, encodeURIComponent(value), b.toString('base64'), b.toString('base64url')]);
    return [...forms].filter((f) => f.length >= 4);
  }

  /** `text` scrubbed of the known secrets and of `extra` (and their encoded forms). */
  scrubWith(text: string, extra: string[]): string {
    let out = text;
    for (const v of extra) {
      // a request's short values (a role name) are ordinary words; its secrets are known to the list
      if (v.length < 8) continue;
      for (const f of Redactor.forms(v)) if (out.includes(f)) out = out.split(f).join('[redacted]');
    }
    return this.scrub(out);
  }

  scrub(text: string): string {
    let out = text;
    for (const s of this.secrets) if (out.includes(s)) out = out.split(s).join('[redacted]');
    // a token-looking word the SDK did not know about (a server echoing input)
    out = out.replace(/\b(hvs|hvb|hvr|pal)[._][A-Za-z0-9._-]{8,}/g, '[redacted]');
    out = out.replace(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g, '[redacted]');
    return out.length > 500 ? `${out.slice(0, 500)}…` : out;
  }
}
