import { BlockList, isIP } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { fetch, type Dispatcher } from 'undici';
import { ErrorCodes, PalisadeError, type ErrorCode } from './errors.js';

type Jose = typeof import('jose');
let josePromise: Promise<Jose> | null = null;
// jose is ESM-only: a dynamic import works from both the ESM and the CommonJS build
const loadJose = (): Promise<Jose> => (josePromise ??= import('jose'));

/** Who called, as the middleware puts it on `req.auth`. */
export interface Identity {
  /** `jwt`: a bearer token this service verified; `gateway`: headers from the trusted gateway. */
  source: 'jwt' | 'gateway';
  /** The token's `sub`, or the gateway's subject header. */
  subject: string;
  scopes: string[];
  /** The OAuth client (`client_id`, else `azp`), when the token names one. */
  clientId?: string;
  /** The caller's workload (certificate URI) as the gateway forwarded it. */
  workload?: string;
  /** The verified claims (JWT only). */
  claims?: Record<string, unknown>;
}

export interface VerifierOptions {
  /** The expected `iss`, exactly (e.g. `https://palisade:8200/v1/identity/oidc/provider/default`). */
  issuer: string;
  /** The expected `aud` (one of them must be in the token). */
  audience: string | string[];
  /** The JWKS URL; default: `jwks_uri` from `<issuer>/.well-known/openid-configuration`. */
  jwksUri?: string;
  /** Accepted algorithms (default EdDSA, ES256, ES384, PS256, RS256; never `none` or HMAC). */
  algorithms?: string[];
  /** Allowed clock skew for exp/nbf/iat in seconds (default 30). */
  clockToleranceS?: number;
  /** Scopes every request must have (more per route with `requireScopes`). */
  requiredScopes?: string[];
  /**
   * Keep a verified token's result this long (default 30 000 ms, never past
   * its `exp`; 0 verifies every request). A key removed from the JWKS stops
   * working for cached tokens only when their entry runs out.
   */
  cacheMs?: number;
  /** At most this many cached results (default 10 000). */
  cacheEntries?: number;
  /** No JWKS refetch sooner than this after the last one, even for an unknown `kid` (default 30 000 ms). */
  jwksCooldownMs?: number;
  /** Refetch the JWKS after this long even when every `kid` is known (default 600 000 ms). */
  jwksMaxAgeMs?: number;
  /** TLS settings for the JWKS and discovery requests (e.g. an Agent with your CA). */
  dispatcher?: Dispatcher;
  /** Timeout for JWKS and discovery requests (default 5 000 ms). */
  timeoutMs?: number;
  /**
   * The keys decide who may call: they are fetched over https only (http
   * only from a loopback host). Set this to allow plain http elsewhere.
   */
  dangerousAllowPlaintext?: boolean;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** An https URL (or http on loopback, or when allowed); anything else is refused. */
function keySourceUrl(value: string, what: string, allowPlaintext: boolean, code: ErrorCode): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new PalisadeError(code, `verifier: ${what} is not a URL`);
  }
  const plainOk = url.protocol === 'http:' && (LOOPBACK_HOSTS.has(url.hostname) || allowPlaintext);
  if (url.protocol !== 'https:' && !plainOk) {
    throw new PalisadeError(code, `verifier: ${what} must be https (http only on loopback): keys fetched in clear text can be swapped`);
  }
  if (url.username || url.password) throw new PalisadeError(code, `verifier: ${what} must not carry credentials`);
  return url;
}

const DEFAULT_ALGS = ['EdDSA', 'ES256', 'ES384', 'PS256', 'RS256'];

/**
 * Verifies bearer tokens issued by Palisade's OAuth2 provider (or any OIDC
 * issuer) with `jose` against the issuer's published keys.
 */
const VERIFIER_BRAND = Symbol.for('palisade.sdk.TokenVerifier');
const AUTHENTICATOR_BRAND = Symbol.for('palisade.sdk.Authenticator');
const branded = (x: unknown, brand: symbol): boolean =>
  typeof x === 'object' && x !== null && (x as Record<symbol, unknown>)[brand] === true;

export class TokenVerifier {
  /** Either build's verifier is one (see PalisadeError). */
  static [Symbol.hasInstance](x: unknown): boolean {
    return branded(x, VERIFIER_BRAND);
  }
  readonly [VERIFIER_BRAND] = true;
  private readonly options: VerifierOptions;
  private readonly audiences: string[];
  private readonly algorithms: string[];
  private readonly cacheMs: number;
  private readonly cacheEntries: number;
  private readonly cache = new Map<string, { identity: Identity; until: number }>();
  private jwks: ReturnType<Jose['createRemoteJWKSet']> | null = null;
  private jwksPromise: Promise<ReturnType<Jose['createRemoteJWKSet']>> | null = null;

  constructor(options: VerifierOptions) {
    if (!options.issuer) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'verifier: issuer is required');
    this.audiences = Array.isArray(options.audience) ? options.audience : [options.audience];
    if (this.audiences.length === 0 || this.audiences.some((a) => !a)) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'verifier: audience is required');
    }
    this.algorithms = options.algorithms ?? DEFAULT_ALGS;
    if (this.algorithms.length === 0 || this.algorithms.some((a) => a === 'none' || /^HS/i.test(a))) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'verifier: algorithms must be asymmetric (no none, no HS*)');
    }
    this.cacheMs = options.cacheMs ?? 30_000;
    this.cacheEntries = options.cacheEntries ?? 10_000;
    const plain = options.dangerousAllowPlaintext === true;
    keySourceUrl(options.issuer, 'issuer', plain, ErrorCodes.INVALID_ARGUMENT);
    if (options.jwksUri) keySourceUrl(options.jwksUri, 'jwksUri', plain, ErrorCodes.INVALID_ARGUMENT);
    this.options = options;
  }

  /** Verify `token`; the caller's identity, or a PalisadeError (TOKEN_INVALID, JWT_EXPIRED, INSUFFICIENT_SCOPE, JWKS_UNAVAILABLE). */
  async verify(token: string, requiredScopes: string[] = []): Promise<Identity> {
    const now = Date.now();
    const hit = this.cacheMs > 0 ? this.cache.get(token) : undefined;
    let identity: Identity;
    if (hit && now < hit.until) {
      identity = hit.identity;
    } else {
      if (hit) this.cache.delete(token);
      identity = await this.verifyNow(token);
    }
    checkScopes(identity, [...(this.options.requiredScopes ?? []), ...requiredScopes]);
    return identity;
  }

  private async verifyNow(token: string): Promise<Identity> {
    const jose = await loadJose();
    const jwks = this.jwks ?? (await this.loadJwks(jose));
    let payload: Record<string, any>;
    try {
      ({ payload } = await jose.jwtVerify(token, jwks, {
        issuer: this.options.issuer,
        audience: this.audiences,
        algorithms: this.algorithms,
        clockTolerance: this.options.clockToleranceS ?? 30,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (e) {
      throw joseError(e);
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') {
      throw new PalisadeError(ErrorCodes.TOKEN_INVALID, 'invalid token: sub must be a non-empty string');
    }
    let scopes: string[];
    if (payload.scope !== undefined) {
      if (typeof payload.scope !== 'string') throw new PalisadeError(ErrorCodes.TOKEN_INVALID, 'invalid token: scope must be a string');
      scopes = payload.scope.split(' ').filter(Boolean);
    } else if (payload.scp !== undefined) {
      if (!Array.isArray(payload.scp) || payload.scp.some((x: unknown) => typeof x !== 'string' || x === '' || /\s/.test(x))) {
        throw new PalisadeError(ErrorCodes.TOKEN_INVALID, 'invalid token: scp must be a list of scope strings');
      }
      scopes = [...payload.scp];
    } else {
      scopes = [];
    }
    const client = payload.client_id ?? payload.azp;
    // one object per verified token, shared by every request that presents
    // it: frozen, so that no handler can change what the next one sees
    const identity: Identity = deepFreeze({
      source: 'jwt',
      subject: payload.sub,
      scopes,
      claims: payload,
      ...(typeof client === 'string' ? { clientId: client } : {}),
    });
    if (this.cacheMs > 0) {
      const until = Math.min(Date.now() + this.cacheMs, Number(payload.exp) * 1000);
      if (this.cache.size >= this.cacheEntries) {
        // the oldest entry goes (Map keeps insertion order)
        const first = this.cache.keys().next();
        if (!first.done) this.cache.delete(first.value);
      }
      this.cache.set(token, { identity, until });
    }
    return identity;
  }

  private async loadJwks(jose: Jose): Promise<ReturnType<Jose['createRemoteJWKSet']>> {
    if (!this.jwksPromise) {
      this.jwksPromise = (async () => {
        const url = keySourceUrl(
          this.options.jwksUri ?? (await this.discover()),
          'the jwks_uri',
          this.options.dangerousAllowPlaintext === true,
          ErrorCodes.JWKS_UNAVAILABLE,
        );
        const doFetch = (u: string | URL, init: any) =>
          fetch(u, { ...init, dispatcher: this.options.dispatcher, redirect: 'manual' }) as unknown as Promise<Response>;
        const set = jose.createRemoteJWKSet(url, {
          cooldownDuration: this.options.jwksCooldownMs ?? 30_000,
          cacheMaxAge: this.options.jwksMaxAgeMs ?? 600_000,
          timeoutDuration: this.options.timeoutMs ?? 5_000,
          [jose.customFetch]: doFetch,
        });
        this.jwks = set;
        return set;
      })().catch((e) => {
        this.jwksPromise = null;
        throw e;
      });
    }
    return this.jwksPromise;
  }

  private async discover(): Promise<string> {
    const url = `${this.options.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    let doc: any;
    try {
      const r = await fetch(url, {
        dispatcher: this.options.dispatcher,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 5_000),
      });
      if (!r.ok) throw new Error(`status ${r.status}`);
      doc = await r.json();
    } catch (e) {
      // the detail (which may quote the document) goes to the log, not to callers
      throw new PalisadeError(ErrorCodes.JWKS_UNAVAILABLE, "the issuer's keys cannot be fetched", {
        cause: new Error(`discovery document: ${(e as Error).message}`),
      });
    }
    // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for
    if (doc?.issuer !== this.options.issuer || typeof doc?.jwks_uri !== 'string') {
      throw new PalisadeError(ErrorCodes.JWKS_UNAVAILABLE, "the issuer's keys cannot be fetched", {
        cause: new Error("the discovery document's issuer does not match, or it has no jwks_uri"),
      });
    }
    return doc.jwks_uri;
  }
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}

function joseError(e: unknown): PalisadeError {
  const code = (e as { code?: string })?.code ?? '';
  if (code === 'ERR_JWT_EXPIRED') return new PalisadeError(ErrorCodes.TOKEN_EXPIRED_JWT, 'the token has expired');
  if (code === 'ERR_JWKS_TIMEOUT' || code === 'ERR_JWKS_INVALID' || code === '' || e instanceof TypeError) {
    if (e instanceof PalisadeError) return e;
    return new PalisadeError(ErrorCodes.JWKS_UNAVAILABLE, "the issuer's keys cannot be fetched");
  }
  const why: Record<string, string> = {
    ERR_JWKS_NO_MATCHING_KEY: 'no published key matches the token',
    ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'the signature does not verify',
    ERR_JWT_CLAIM_VALIDATION_FAILED: `claim ${(e as { claim?: string }).claim ?? ''} is not valid`,
    ERR_JOSE_ALG_NOT_ALLOWED: 'the algorithm is not allowed',
    ERR_JWS_INVALID: 'not a valid JWS',
    ERR_JWT_INVALID: 'not a valid JWT',
    ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'several published keys match the token',
    ERR_JOSE_NOT_SUPPORTED: 'the algorithm or key is not supported',
  };
  return new PalisadeError(ErrorCodes.TOKEN_INVALID, `invalid token: ${why[code] ?? 'it does not verify'}`);
}

function checkScopes(identity: Identity, required: string[]): void {
  const missing = required.filter((s) => !identity.scopes.includes(s));
  if (missing.length > 0) {
    throw new PalisadeError(ErrorCodes.INSUFFICIENT_SCOPE, `the token lacks the scope ${missing.join(' ')}`);
  }
}

/**
 * Addresses (IPs and CIDRs) as one matcher; IPv4-mapped IPv6 addresses match
 * their IPv4 form. Ranges wider than /8 (IPv4) or /16 (IPv6), and IPv6
 * ranges that hold the IPv4-mapped space, are refused: a proxy list that
 * trusts a large part of the Internet lets its clients choose their address.
 */
const MAPPED = new BlockList();
MAPPED.addSubnet('::ffff:0:0', 96, 'ipv6');

export function addressMatcher(list: string[]): (addr: string | undefined) => boolean {
  const bl = new BlockList();
  for (const entry of list) {
    if (typeof entry !== 'string' || entry.includes('%')) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `not an IP address or CIDR (zone ids are not allowed): ${String(entry)}`);
    }
    const parts = entry.split('/');
    if (parts.length > 2) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `not an IP address or CIDR: ${entry}`);
    const [ip, prefix] = parts as [string, string | undefined];
    const kind = isIP(ip);
    if (kind === 0) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `not an IP address or CIDR: ${entry}`);
    const type = kind === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) {
      bl.addAddress(ip, type);
      continue;
    }
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefix)) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `bad prefix in ${entry}`);
    const n = Number(prefix);
    const max = kind === 4 ? 32 : 128;
    const min = kind === 4 ? 8 : 16;
    if (n > max) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `bad prefix in ${entry}`);
    if (n < min) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `${entry} is wider than /${min}: name your proxies`);
    if (kind === 6) {
      // a range that overlaps ::ffff:0:0/96 at all trusts IPv4 clients (Node's
      // BlockList applies it to IPv4 addresses): holding the whole mapped
      // range (n <= 96), or lying inside it (its network address is mapped)
      const one = new BlockList();
      one.addSubnet(ip, n, 'ipv6');
      if (one.check('::ffff:0:0', 'ipv6') || MAPPED.check(ip, 'ipv6')) {
        throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `${entry} overlaps the IPv4-mapped range: name IPv4 proxies as IPv4`);
      }
    }
    bl.addSubnet(ip, n, type);
  }
  return (addr) => {
    if (!addr || addr.includes('%')) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
    const a = mapped ? mapped[1]! : addr;
    const kind = isIP(a);
    return kind !== 0 && bl.check(a, kind === 4 ? 'ipv4' : 'ipv6');
  };
}

/**
 * A `trust proxy` setting that trusts exactly the named proxies — for
 * `app.set('trust proxy', trustProxy([...]))` in Express and
 * `Fastify({ trustProxy: trustProxy([...]) })`. `req.ip` is then the address
 * the first untrusted hop reported, so rate limits (express-rate-limit) and
 * logs key on the real client. `true`, `*` and /0 ranges are refused: with
 * them any client sets its own address in X-Forwarded-For.
 */
export function trustProxy(proxies: string[] | string): (addr: string, hop?: number) => boolean {
  const list = typeof proxies === 'string' ? proxies.split(',').map((s) => s.trim()).filter(Boolean) : proxies;
  if (!Array.isArray(list) || list.length === 0 || list.some((p) => typeof p !== 'string' || p === '*' || p === 'true')) {
    throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'trustProxy: name the proxies (IPs or CIDRs); trusting every hop lets clients choose their own address');
  }
  const match = addressMatcher(list);
  return (addr: string) => match(addr);
}

export interface GatewayIdentityOptions {
  /**
   * The headers the gateway's `forward_identity` sets: which carries the
   * subject (required), the scopes (space-separated), the workload, the client.
   */
  headers: { subject: string; scopes?: string; workload?: string; clientId?: string };
  /**
   * Who the gateway is: the URI SANs of its client certificate (mTLS, checked
   * on the verified TLS connection) and/or its addresses. At least one.
   */
  trust: { peerUris?: string[]; addresses?: string[] };
}

export interface AuthOptions {
  /** Verify bearer tokens (a TokenVerifier or its options). */
  jwt?: TokenVerifier | VerifierOptions;
  /** Accept the identity the trusted gateway forwards. */
  gateway?: GatewayIdentityOptions;
  /** Scopes every request must have. */
  requiredScopes?: string[];
  /** Where refusals are logged (pino, console…): `warn({ code, status, reason })`, never a token. */
  logger?: { warn: (obj: object, msg?: string) => void };
}

const WIRE: Partial<Record<ErrorCode, [number, string]>> = {
  [ErrorCodes.UNAUTHENTICATED]: [401, 'unauthenticated'],
  [ErrorCodes.TOKEN_INVALID]: [401, 'invalid_token'],
  [ErrorCodes.TOKEN_EXPIRED_JWT]: [401, 'token_expired'],
  [ErrorCodes.INSUFFICIENT_SCOPE]: [403, 'insufficient_scope'],
  [ErrorCodes.UNTRUSTED_PROXY]: [403, 'untrusted_proxy'],
  [ErrorCodes.JWKS_UNAVAILABLE]: [503, 'authentication_unavailable'],
};

/** The status, headers and JSON body a refusal is answered with. */
export function refusal(e: PalisadeError): { status: number; headers: Record<string, string>; body: object } {
  const [status, code] = WIRE[e.code] ?? [500, 'internal'];
  const headers: Record<string, string> = { 'cache-control': 'no-store' };
  // RFC 6750 §3: no error attribute when no credential was presented
  if (status === 401) {
    headers['www-authenticate'] =
      e.code === ErrorCodes.UNAUTHENTICATED ? 'Bearer realm="palisade"' : 'Bearer realm="palisade", error="invalid_token"';
  } else if (code === 'insufficient_scope') {
    headers['www-authenticate'] = 'Bearer realm="palisade", error="insufficient_scope"';
  }
  return { status, headers, body: { error: { code, message: status === 500 ? 'internal error' : e.message } } };
}

/**
 * The framework-independent core: authenticates one request (its headers and
 * socket) and answers the caller's identity or throws a PalisadeError.
 */
export class Authenticator {
  static [Symbol.hasInstance](x: unknown): boolean {
    return branded(x, AUTHENTICATOR_BRAND);
  }
  readonly [AUTHENTICATOR_BRAND] = true;
  private readonly verifier: TokenVerifier | null;
  private readonly gateway: GatewayIdentityOptions | null;
  private readonly gatewayAddr: ((a: string | undefined) => boolean) | null;
  private readonly required: string[];
  readonly logger: AuthOptions['logger'];

  constructor(options: AuthOptions) {
    this.verifier = options.jwt ? (options.jwt instanceof TokenVerifier ? options.jwt : new TokenVerifier(options.jwt)) : null;
    this.gateway = options.gateway ?? null;
    if (!this.verifier && !this.gateway) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'auth: configure jwt, gateway or both');
    if (this.gateway) {
      const t = this.gateway.trust ?? {};
      if (!t.peerUris?.length && !t.addresses?.length) {
        throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'auth: gateway.trust needs peerUris or addresses');
      }
      if (!this.gateway.headers?.subject) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'auth: gateway.headers.subject is required');
    }
    this.gatewayAddr = this.gateway?.trust.addresses?.length ? addressMatcher(this.gateway.trust.addresses) : null;
    this.required = options.requiredScopes ?? [];
    this.logger = options.logger;
  }

  /** Is this connection the gateway's? (mTLS peer URI and/or address, each that is configured must match) */
  private fromGateway(req: IncomingMessage): boolean {
    const g = this.gateway;
    if (!g) return false;
    if (this.gatewayAddr && !this.gatewayAddr(req.socket.remoteAddress)) return false;
    if (g.trust.peerUris?.length) {
      const tls = req.socket as TLSSocket;
      if (typeof tls.getPeerCertificate !== 'function' || tls.authorized !== true) return false;
      const san = tls.getPeerCertificate()?.subjectaltname ?? '';
      const uris = san.split(', ').filter((n) => n.startsWith('URI:')).map((n) => n.slice(4));
      if (!g.trust.peerUris.some((u) => uris.includes(u))) return false;
    }
    return true;
  }

  async authenticate(req: IncomingMessage, requiredScopes: string[] = []): Promise<Identity> {
    const required = this.required.length ? [...this.required, ...requiredScopes] : requiredScopes;
    const g = this.gateway;
    if (g && this.fromGateway(req)) {
      // a header the gateway sets exactly once: a second copy (a proxy that
      // appends rather than replaces) makes the identity ambiguous
      for (const name of Object.values(g.headers)) {
        if (!name) continue;
        const lower = name.toLowerCase();
        let n = 0;
        for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === lower) n++;
        if (n > 1) throw new PalisadeError(ErrorCodes.UNAUTHENTICATED, `the identity header ${lower} appears ${n} times`);
      }
      const one = (name: string | undefined): string | undefined => {
        if (!name) return undefined;
        const v = req.headers[name.toLowerCase()];
        return typeof v === 'string' && v !== '' ? v : undefined;
      };
      const subject = one(g.headers.subject);
      if (!subject) throw new PalisadeError(ErrorCodes.UNAUTHENTICATED, 'the gateway forwarded no subject');
      // the gateway sends scopes comma-separated; spaces (a token's own form) are accepted too
      const identity: Identity = { source: 'gateway', subject, scopes: (one(g.headers.scopes) ?? '').split(/[\s,]+/).filter(Boolean) };
      const workload = one(g.headers.workload);
      if (workload) identity.workload = workload;
      const clientId = one(g.headers.clientId);
      if (clientId) identity.clientId = clientId;
      checkScopes(identity, required);
      return deepFreeze(identity);
    }
    const authz = req.headers.authorization;
    if (!this.verifier) {
      // identity headers from anyone but the gateway carry no authority
      throw new PalisadeError(ErrorCodes.UNTRUSTED_PROXY, 'this service accepts calls only through the gateway');
    }
    if (authz === undefined || authz === '') throw new PalisadeError(ErrorCodes.UNAUTHENTICATED, 'no bearer token');
    const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authz);
    if (!m) throw new PalisadeError(ErrorCodes.TOKEN_INVALID, 'invalid token: the Authorization header is not a bearer token');
    return this.verifier.verify(m[1]!, required);
  }

  /** Log and build the answer for a refusal. */
  refuse(e: unknown): ReturnType<typeof refusal> {
    const err = e instanceof PalisadeError ? e : new PalisadeError(ErrorCodes.SERVER, 'internal error');
    const r = refusal(err);
    const detail = err.cause instanceof Error ? err.cause.message : undefined;
    this.logger?.warn({ code: err.code, status: r.status, reason: err.message, ...(detail ? { detail } : {}) }, 'request refused');
    return r;
  }
}

type ExpressReq = IncomingMessage & { auth?: Identity };
type Next = (err?: unknown) => void;

/**
 * Express middleware: `app.use(expressAuth({ jwt: { issuer, audience } }))`,
 * or per route with `requireScopes`. Sets `req.auth` (an {@link Identity});
 * refusals are answered here (401/403/503 JSON as the gateway's, with
 * `WWW-Authenticate`) and never reach the route.
 */
export function expressAuth(options: AuthOptions | Authenticator, requiredScopes: string[] = []) {
  const auth = options instanceof Authenticator ? options : new Authenticator(options);
  return function palisadeAuth(req: ExpressReq, res: ServerResponse, next: Next): void {
    auth.authenticate(req, requiredScopes).then(
      (identity) => {
        req.auth = identity;
        next();
      },
      (e) => {
        const r = auth.refuse(e);
        res.statusCode = r.status;
        for (const [k, v] of Object.entries(r.headers)) res.setHeader(k, v);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(r.body));
      },
    );
  };
}

/** Per-route scopes for Express, after `expressAuth` has set `req.auth`. */
export function requireScopes(...scopes: string[]) {
  return function palisadeScopes(req: ExpressReq, res: ServerResponse, next: Next): void {
    try {
      if (!req.auth) throw new PalisadeError(ErrorCodes.UNAUTHENTICATED, 'no identity (is expressAuth before this?)');
      checkScopes(req.auth, scopes);
      next();
    } catch (e) {
      const r = refusal(e as PalisadeError);
      res.statusCode = r.status;
      for (const [k, v] of Object.entries(r.headers)) res.setHeader(k, v);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(r.body));
    }
  };
}

/**
 * Fastify plugin: `await app.register(fastifyAuth({ jwt: {...} }))`. Applies
 * to every route of the instance it is registered on (it is not
 * encapsulated); sets `request.auth`.
 */
export function fastifyAuth(options: AuthOptions | Authenticator, requiredScopes: string[] = []) {
  const auth = options instanceof Authenticator ? options : new Authenticator(options);
  const plugin = async (fastify: any) => {
    if (!fastify.hasRequestDecorator?.('auth')) fastify.decorateRequest('auth', null);
    fastify.addHook('onRequest', async (request: any, reply: any) => {
      try {
        request.auth = await auth.authenticate(request.raw, requiredScopes);
      } catch (e) {
        const r = auth.refuse(e);
        reply.code(r.status).headers(r.headers).send(r.body);
        return reply;
      }
    });
  };
  // what fastify-plugin does: the hook applies to the parent instance too
  (plugin as any)[Symbol.for('skip-override')] = true;
  (plugin as any)[Symbol.for('fastify.display-name')] = 'palisade-auth';
  return plugin;
}
