import { readFile } from 'node:fs/promises';
import { fetch, type Dispatcher } from 'undici';
import { ErrorCodes, PalisadeError, Redactor } from './errors.js';
import { apiPath, type Transport } from './http.js';

/** A token and how long it lives, as a login answers it. */
export interface LoginResult {
  token: string;
  /** Lifetime in milliseconds; 0 for a token that does not expire. */
  ttlMs: number;
  renewable: boolean;
}

/**
 * Where a client's Palisade token comes from. `login` is called at start,
 * before the token's lifetime runs out (at two thirds of it) and when the
 * server refuses the token (expired, revoked).
 */
export interface TokenSource {
  readonly kind: string;
  login(transport: Transport): Promise<LoginResult>;
}

function authResult(body: any, kind: string): LoginResult {
  const auth = body?.auth;
  if (!auth || typeof auth.client_token !== 'string' || auth.client_token === '') {
    throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `${kind} login: the answer has no auth.client_token`);
  }
  const ttl = Number(auth.lease_duration ?? 0);
  return { token: auth.client_token, ttlMs: Number.isFinite(ttl) && ttl > 0 ? ttl * 1000 : 0, renewable: auth.renewable === true };
}

async function login(transport: Transport, kind: string, path: string, body: unknown): Promise<LoginResult> {
  try {
    return authResult((await transport.request('POST', path, body, undefined, { secretBody: true })).body, kind);
  } catch (e) {
    if (e instanceof PalisadeError && e.status !== undefined && e.status < 500 && e.code !== ErrorCodes.BAD_RESPONSE) {
      // refused (400 invalid secret id, 403): a login problem, not a transport one
      throw new PalisadeError(ErrorCodes.AUTH_FAILED, `${kind} login refused: ${e.message}`, { status: e.status, errors: e.errors });
    }
    throw e;
  }
}

async function readSecretFile(file: string, what: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (e) {
    throw new PalisadeError(ErrorCodes.AUTH_FAILED, `${what}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** A fixed token (e.g. from a file an init container wrote). It is not renewed or replaced. */
export function staticToken(token: string): TokenSource {
  if (!token) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'staticToken: an empty token');
  return {
    kind: 'token',
    login: async (t) => {
      t.redactor.add(token);
      return { token, ttlMs: 0, renewable: false };
    },
  };
}

/** A token read from a file at every login (a sidecar or init container keeps it current). */
export function tokenFile(file: string): TokenSource {
  return {
    kind: 'token_file',
    login: async (t) => {
      const token = await readSecretFile(file, 'token file');
      if (!token) throw new PalisadeError(ErrorCodes.AUTH_FAILED, `token file ${file} is empty`);
      t.redactor.add(token);
      return { token, ttlMs: 0, renewable: false };
    },
  };
}

export interface AppRoleOptions {
  roleId: string;
  /** The secret ID, or `secretIdFile` (read at each login, so a rotated one is picked up). */
  secretId?: string;
  secretIdFile?: string;
  /** Where AppRole is enabled (default `approle`). */
  mount?: string;
}

/** AppRole (`auth/<mount>/login` with role_id and secret_id). */
export function appRole(options: AppRoleOptions): TokenSource {
  if (!options.roleId) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'appRole: roleId is required');
  if (!options.secretId === !options.secretIdFile) {
    throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'appRole: give exactly one of secretId and secretIdFile');
  }
  const path = apiPath('auth', options.mount ?? 'approle', 'login');
  return {
    kind: 'approle',
    login: async (t) => {
      const secretId = options.secretId ?? (await readSecretFile(options.secretIdFile!, 'AppRole secret ID'));
      t.redactor.add(secretId);
      const r = await login(t, 'approle', path, { role_id: options.roleId, secret_id: secretId });
      t.redactor.add(r.token);
      return r;
    },
  };
}

export interface JwtAuthOptions {
  /** The role of the JWT auth method to log in with. */
  role: string;
  /** The JWT itself, or a file that holds it (re-read at every login: projected tokens rotate). */
  jwt?: string;
  /** Default: the Kubernetes service account token, /var/run/secrets/kubernetes.io/serviceaccount/token. */
  jwtFile?: string;
  /** Where the method is enabled (default `jwt`; `kubernetes` for the Kubernetes method's path). */
  mount?: string;
}

/** JWT login (`auth/<mount>/login` with role and jwt): a Kubernetes service account token, or any OIDC ID token. */
export function jwtAuth(options: JwtAuthOptions): TokenSource {
  if (!options.role) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'jwtAuth: role is required');
  if (options.jwt && options.jwtFile) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'jwtAuth: give jwt or jwtFile, not both');
  const file = options.jwtFile ?? '/var/run/secrets/kubernetes.io/serviceaccount/token';
  const path = apiPath('auth', options.mount ?? 'jwt', 'login');
  return {
    kind: 'jwt',
    login: async (t) => {
      const jwt = options.jwt ?? (await readSecretFile(file, 'JWT'));
      t.redactor.add(jwt);
      const r = await login(t, 'jwt', path, { role: options.role, jwt });
      t.redactor.add(r.token);
      return r;
    },
  };
}

export interface ClientCredentialsOptions {
  /** The token endpoint, e.g. `https://palisade:8200/v1/identity/oidc/provider/default/token`. */
  tokenUrl: string;
  clientId: string;
  /** The client secret, or `clientSecretFile`. */
  clientSecret?: string;
  clientSecretFile?: string;
  /** Scopes to ask for (space-separated or a list). */
  scope?: string | string[];
  /** RFC 8707 resource / audience to ask for. */
  audience?: string;
  /** `client_secret_basic` (default, RFC 6749 §2.3.1) or `client_secret_post`. */
  authMethod?: 'client_secret_basic' | 'client_secret_post';
  /** Refresh when this fraction of the token's lifetime has passed (default 2/3). */
  refreshAt?: number;
  /** TLS settings for the token endpoint (e.g. a dispatcher with the server's CA). */
  dispatcher?: Dispatcher;
  timeoutMs?: number;
  dangerousAllowPlaintext?: boolean;
}

interface CachedAccessToken {
  token: string;
  expiresAt: number;
  refreshAt: number;
}

/**
 * OAuth 2.0 client credentials (RFC 6749 §4.4) against Palisade's OAuth2
 * provider, or any authorization server: an access token for calling other
 * services. Cached, refreshed early (in the background while the old one is
 * still valid), one request at a time however many callers wait.
 */
export class ClientCredentials {
  private readonly options: ClientCredentialsOptions;
  private readonly url: URL;
  private readonly redactor = new Redactor();
  private cached: CachedAccessToken | null = null;
  private inflight: Promise<CachedAccessToken> | null = null;

  constructor(options: ClientCredentialsOptions) {
    if (!options.clientId) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'clientCredentials: clientId is required');
    if (!options.clientSecret === !options.clientSecretFile) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'clientCredentials: give exactly one of clientSecret and clientSecretFile');
    }
    let url: URL;
    try {
      url = new URL(options.tokenUrl);
    } catch {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'clientCredentials: tokenUrl is not a URL');
    }
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && (loopback || options.dangerousAllowPlaintext))) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'clientCredentials: tokenUrl must be https (http only on loopback)');
    }
    this.options = options;
    this.url = url;
    this.redactor.add(options.clientSecret);
  }

  /** A valid access token: the cached one, or a new one. */
  async getToken(): Promise<string> {
    const now = Date.now();
    const c = this.cached;
    if (c && now < c.refreshAt) return c.token;
    if (c && now < c.expiresAt) {
      // due for refresh but still valid: refresh in the background
      this.fetchToken().catch(() => {});
      return c.token;
    }
    return (await this.fetchToken()).token;
  }

  /** Forget `token` (a service answered 401 with it): the next getToken() fetches a new one. */
  invalidate(token?: string): void {
    if (!token || this.cached?.token === token) this.cached = null;
  }

  private fetchToken(): Promise<CachedAccessToken> {
    if (!this.inflight) {
      this.inflight = this.request().finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  private async request(): Promise<CachedAccessToken> {
    const o = this.options;
    const secret = o.clientSecret ?? (await readSecretFile(o.clientSecretFile!, 'client secret'));
    this.redactor.add(secret);
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    const scope = Array.isArray(o.scope) ? o.scope.join(' ') : o.scope;
    if (scope) form.set('scope', scope);
    if (o.audience) form.set('audience', o.audience);
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    if ((o.authMethod ?? 'client_secret_basic') === 'client_secret_basic') {
      // RFC 6749 §2.3.1: both form-urlencoded before base64
      const pair = `${encodeURIComponent(o.clientId)}:${encodeURIComponent(secret)}`;
      this.redactor.add(pair);
      headers.authorization = `Basic ${Buffer.from(pair).toString('base64')}`;
    } else {
      form.set('client_id', o.clientId);
      form.set('client_secret', secret);
    }
    const started = Date.now();
    let res;
    try {
      res = await fetch(this.url, {
        method: 'POST',
        headers,
        body: form.toString(),
        dispatcher: o.dispatcher,
        redirect: 'manual',
        signal: AbortSignal.timeout(o.timeoutMs ?? 10_000),
      });
    } catch (e) {
      const err = e as { name?: string; cause?: { code?: string } };
      const code = err?.name === 'TimeoutError' ? ErrorCodes.TIMEOUT : ErrorCodes.UNAVAILABLE;
      throw new PalisadeError(code, `client credentials: ${this.url.host} is unreachable (${err?.cause?.code ?? err?.name ?? 'error'})`);
    }
    let body: any = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (!res.ok) {
      const oauthError = typeof body?.error === 'string' ? this.redactor.scrub(body.error) : 'no OAuth error code';
      const code = res.status >= 500 ? ErrorCodes.SERVER : ErrorCodes.AUTH_FAILED;
      throw new PalisadeError(code, `client credentials: the token endpoint answered ${res.status} (${oauthError})`, { status: res.status });
    }
    if (typeof body?.access_token !== 'string' || body.access_token === '') {
      throw new PalisadeError(ErrorCodes.BAD_RESPONSE, 'client credentials: the answer has no access_token');
    }
    const expiresIn = Number(body.expires_in);
    const lifetime = Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn * 1000 : 60_000;
    const frac = o.refreshAt ?? 2 / 3;
    this.redactor.add(body.access_token);
    const cached = {
      token: body.access_token as string,
      expiresAt: started + lifetime,
      refreshAt: started + lifetime * frac,
    };
    this.cached = cached;
    return cached;
  }
}
