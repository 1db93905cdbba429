import { EventEmitter } from 'node:events';
import { staticToken, type LoginResult, type TokenSource } from './auth.js';
import { ErrorCodes, PalisadeError, Redactor } from './errors.js';
import { Transport, apiPath, type ApiResponse, type RequestOptions, type TransportOptions } from './http.js';
import { KvV2 } from './secrets.js';
import { LeasedSecret, type LeasedSecretOptions } from './leases.js';
import { Transit } from './transit.js';
import { MtlsDispatcher, type MtlsOptions } from './mtls.js';

export interface PalisadeOptions extends TransportOptions {
  /**
   * How the client gets its token: a token source (appRole, jwtAuth,
   * tokenFile), a token string, or — by default — `$VAULT_TOKEN`.
   */
  auth?: TokenSource | string;
  /** Log in again when this fraction of the token's lifetime has passed (default 2/3). */
  refreshAt?: number;
}

interface CurrentToken {
  token: string;
  expiresAt: number; // 0: no expiry
  refreshAt: number;
}

/**
 * A client of Palisade's Vault-style API.
 *
 * Events: `login` ({ kind, ttlMs }) after every successful login;
 * `login-error` (PalisadeError) when a background refresh failed and the
 * current token is still used.
 */
export class Palisade extends EventEmitter {
  readonly transport: Transport;
  private readonly source: TokenSource;
  private readonly refreshFraction: number;
  private current: CurrentToken | null = null;
  private inflight: Promise<CurrentToken> | null = null;
  private closed = false;
  private lookupSelfWorks = true;
  private refreshRetryAt = 0;
  private refreshBackoffMs = 1_000;

  constructor(options: PalisadeOptions = {}) {
    super();
    this.transport = new Transport(options, new Redactor());
    const auth = options.auth ?? process.env.VAULT_TOKEN;
    if (auth === undefined || auth === '') {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'no credentials: pass `auth` (a token source or token) or set VAULT_TOKEN');
    }
    this.source = typeof auth === 'string' ? staticToken(auth) : auth;
    this.refreshFraction = options.refreshAt ?? 2 / 3;
    if (!(this.refreshFraction > 0 && this.refreshFraction < 1)) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'refreshAt must be between 0 and 1');
    }
  }

  /** The current token, logging in when there is none, it expired or is due for refresh. */
  async token(): Promise<string> {
    this.assertOpen();
    const now = Date.now();
    const c = this.current;
    if (c && (c.refreshAt === 0 || now < c.refreshAt)) return c.token;
    if (c && now < c.expiresAt) {
      // due for refresh but still valid: one background login at a time,
      // and after a failed one not again before its back-off has passed
      if (now >= this.refreshRetryAt) {
        this.refreshRetryAt = now + this.refreshBackoffMs;
        this.login().then(
          () => {
            this.refreshBackoffMs = 1_000;
          },
          (e) => {
            this.refreshRetryAt = Date.now() + this.refreshBackoffMs;
            this.refreshBackoffMs = Math.min(this.refreshBackoffMs * 2, 60_000);
            this.emit('login-error', e);
          },
        );
      }
      return c.token;
    }
    return (await this.login()).token;
  }

  /** Log in now (one login at a time, however many callers wait). */
  login(): Promise<CurrentToken> {
    this.assertOpen();
    if (!this.inflight) {
      const old = this.current?.token;
      this.inflight = this.source
        .login(this.transport)
        .then(async (r: LoginResult) => {
          if (this.closed) {
            // close() ran while this login was on its way: the token is nobody's
            if (this.renewable()) await this.revoke(r.token);
            throw new PalisadeError(ErrorCodes.CLOSED, 'the client is closed');
          }
          const started = Date.now();
          const c: CurrentToken = {
            token: r.token,
            expiresAt: r.ttlMs > 0 ? started + r.ttlMs : 0,
            refreshAt: r.ttlMs > 0 ? started + r.ttlMs * this.refreshFraction : 0,
          };
          this.current = c;
          this.transport.redactor.add(r.token);
          if (old && old !== r.token && this.renewable()) {
            // the replaced token is of no further use: revoke it, best effort
            this.revoke(old).catch(() => {});
          }
          this.emit('login', { kind: this.source.kind, ttlMs: r.ttlMs });
          return c;
        })
        .finally(() => {
          this.inflight = null;
        });
    }
    return this.inflight;
  }

  /** Tokens from a login (not fixed ones, not the operator's) are this client's to revoke. */
  private renewable(): boolean {
    return this.source.kind !== 'token' && this.source.kind !== 'token_file';
  }

  private async revoke(token: string): Promise<void> {
    await this.transport.request('POST', 'auth/token/revoke-self', {}, token).catch(() => {});
    this.transport.redactor.delete(token);
  }

  /**
   * `method` on `/v1/<path>` with the client's token. When the server refuses
   * the token itself (expired or revoked: 403, and `lookup-self` fails too,
   * or — where the token may not read `lookup-self` — its TTL has run out),
   * the client logs in again once, revokes the refused token and repeats the
   * request; a second refusal of a token that `lookup-self` vouches for, or
   * any refusal where it cannot tell, is ERR_PALISADE_PERMISSION_DENIED; a
   * failed new login is ERR_PALISADE_TOKEN_EXPIRED. A 403 for a valid token
   * is ERR_PALISADE_PERMISSION_DENIED at once.
   */
  async request(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<ApiResponse> {
    const token = await this.token();
    try {
      return await this.transport.request(method, path, body, token, options);
    } catch (e) {
      if (!(e instanceof PalisadeError) || e.code !== ErrorCodes.PERMISSION_DENIED) throw e;
      if (!(await this.tokenRefused(token))) throw e;
      if (!this.renewable() && this.source.kind === 'token') {
        throw new PalisadeError(ErrorCodes.TOKEN_EXPIRED, `${method} /v1/${path}: the token expired or was revoked (a fixed token cannot log in again)`, { status: 403 });
      }
      if (this.current?.token === token) {
        // log in again, once; the refused token goes (best effort)
        this.current = null;
        if (this.renewable()) this.revoke(token).catch(() => {});
      }
      let fresh: string;
      try {
        fresh = await this.token();
      } catch (loginError) {
        if (loginError instanceof PalisadeError && loginError.code === ErrorCodes.CLOSED) throw loginError;
        const why = loginError instanceof PalisadeError ? loginError.message : 'login failed';
        throw new PalisadeError(ErrorCodes.TOKEN_EXPIRED, `${method} /v1/${path}: the token expired or was revoked, and logging in again failed: ${why}`, {
          status: 403,
          cause: loginError,
        });
      }
      try {
        return await this.transport.request(method, path, body, fresh, options);
      } catch (e2) {
        if (e2 instanceof PalisadeError && e2.code === ErrorCodes.PERMISSION_DENIED && this.lookupSelfWorks && !(await this.tokenIsValid(fresh))) {
          // a token just issued is not refused for being old: this login's
          // tokens may not read lookup-self, which says nothing about them
          this.lookupSelfWorks = false;
        }
        throw e2;
      }
    }
  }

  /** Did the server refuse `token` itself (rather than the request)? */
  private async tokenRefused(token: string): Promise<boolean> {
    if (this.lookupSelfWorks) return !(await this.tokenIsValid(token));
    // lookup-self is not allowed for this client's tokens: only a token past its TTL counts as refused
    const c = this.current;
    return c !== null && c.token === token && c.expiresAt > 0 && Date.now() >= c.expiresAt - 1_000;
  }

  private async tokenIsValid(token: string): Promise<boolean> {
    try {
      await this.transport.request('GET', 'auth/token/lookup-self', undefined, token);
      return true;
    } catch (e) {
      if (e instanceof PalisadeError && e.code === ErrorCodes.PERMISSION_DENIED) return false;
      // cannot tell (server down, sealed): report the original 403
      return true;
    }
  }

  /** GET `path`; the answer's `data` (404 → ERR_PALISADE_NOT_FOUND). */
  async read(path: string): Promise<any> {
    return (await this.request('GET', apiPath(path))).body?.data;
  }

  /** POST `body` to `path`; the answer's body (null for 204). */
  async write(path: string, body: unknown = {}): Promise<any> {
    return (await this.request('POST', apiPath(path), body)).body;
  }

  /** KV version 2 at `mount` (default `secret`). */
  kv(mount = 'secret'): KvV2 {
    return new KvV2(this, mount);
  }

  /** Transit at `mount` (default `transit`). */
  transit(mount = 'transit'): Transit {
    return new Transit(this, mount);
  }

  /** A dynamic secret (e.g. `database/creds/app`), its lease renewed and replaced when it runs out. */
  leased(path: string, options: LeasedSecretOptions = {}): LeasedSecret {
    return new LeasedSecret(this, path, options);
  }

  /** An undici dispatcher presenting a client certificate from the PKI engine, renewed without a restart. */
  async mtlsDispatcher(options: MtlsOptions): Promise<MtlsDispatcher> {
    const d = new MtlsDispatcher(this, options);
    await d.start();
    return d;
  }

  /** Revoke a token this client logged in for, and close its connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // a login on its way revokes its own token when it lands (see login())
    await this.inflight?.catch(() => {});
    const c = this.current;
    this.current = null;
    if (c && this.renewable()) await this.revoke(c.token);
    await this.transport.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new PalisadeError(ErrorCodes.CLOSED, 'the client is closed');
  }
}
