import { readFileSync } from 'node:fs';
import { Agent, fetch, type Dispatcher } from 'undici';
import { ErrorCodes, PalisadeError, Redactor, type ErrorCode } from './errors.js';

export interface TransportOptions {
  /** The server's address, e.g. `https://palisade.internal:8200`. Default: `$PALISADE_ADDR`, then `$VAULT_ADDR`. */
  address?: string;
  /** PEM of the CA(s) that sign the server's certificate (default: the system's). */
  ca?: string | Buffer;
  /** A file holding `ca` (read once). Default: `$VAULT_CACERT`. */
  caFile?: string;
  /** Per-request timeout in milliseconds (default 10 000). */
  timeoutMs?: number;
  /** An undici dispatcher of your own (its TLS settings then apply, `ca` is ignored). */
  dispatcher?: Dispatcher;
  /**
   * Plain `http://` to a host that is not loopback sends tokens and secrets
   * in clear text: refused unless this is set.
   */
  dangerousAllowPlaintext?: boolean;
}

export interface RequestOptions {
  /** Non-2xx statuses answered as a response rather than an error (a batch's 400 carries per-item results). */
  answerStatuses?: number[];
  /**
   * The body carries secret values (a KV write, transit plaintext): every
   * string in it is scrubbed from the server's error text too.
   */
  secretBody?: boolean;
}

/** One answer of the Vault-style API: the parsed JSON body (null for 204). */
export interface ApiResponse {
  status: number;
  body: any;
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** Checks an address and returns its origin (no path, no credentials). */
export function parseAddress(address: string | undefined, allowPlaintext = false): URL {
  if (!address) {
    throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'no server address: pass `address` or set PALISADE_ADDR');
  }
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'the server address is not a URL');
  }
  if (url.username || url.password) {
    throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'the server address must not carry credentials');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `unsupported scheme ${url.protocol} (https: or http: on loopback)`);
  }
  if (url.protocol === 'http:' && !LOOPBACK.has(url.hostname) && !allowPlaintext) {
    throw new PalisadeError(
      ErrorCodes.INVALID_ARGUMENT,
      `http://${url.host} would send tokens in clear text: use https, or set dangerousAllowPlaintext`,
    );
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'the server address must be an origin (no path, query or fragment)');
  }
  return url;
}

/**
 * A server message made only of words (letters, spaces, `'-,.:()`, no word
 * over 24 letters): it cannot carry an encoded value.
 */
function plainText(e: string): boolean {
  return /^[A-Za-z '\-,.:()]*$/.test(e) && e.split(/[ \-]/).every((w) => w.length <= 24);
}

/** Every string in a JSON value (to depth 8). */
function stringLeaves(v: unknown, depth = 0, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (v && typeof v === 'object' && depth < 8) for (const x of Object.values(v)) stringLeaves(x, depth + 1, out);
  return out;
}

/** Maps an HTTP status of the API to the SDK's error code. */
export function codeForStatus(status: number, errors: string[]): ErrorCode {
  if (status === 503 && errors.some((e) => /sealed/i.test(e))) return ErrorCodes.SEALED;
  if (status === 403) return ErrorCodes.PERMISSION_DENIED;
  if (status === 404) return ErrorCodes.NOT_FOUND;
  if (status === 429) return ErrorCodes.RATE_LIMITED;
  if (status >= 500) return ErrorCodes.SERVER;
  return ErrorCodes.BAD_REQUEST;
}

/** A request path of the API: segments checked, never `..` or empty. */
export function apiPath(...parts: string[]): string {
  const segs: string[] = [];
  for (const p of parts) {
    for (const s of p.split('/')) {
      if (s === '') continue;
      if (s === '.' || s === '..') {
        throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'a path must not contain "." or ".." segments');
      }
      if (/[?#%\\\u0000-\u001f\u007f]/.test(s)) {
        throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'a path segment holds a character that is not allowed (?, #, %, \\ or a control character)');
      }
      segs.push(encodeURIComponent(s));
    }
  }
  if (segs.length === 0) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'an empty path');
  return segs.join('/');
}

/**
 * The HTTP layer: one undici dispatcher, JSON in and out, Vault's error
 * envelope turned into {@link PalisadeError}s.
 */
export class Transport {
  readonly origin: URL;
  readonly redactor: Redactor;
  readonly timeoutMs: number;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;

  constructor(options: TransportOptions = {}, redactor = new Redactor()) {
    this.origin = parseAddress(
      options.address ?? process.env.PALISADE_ADDR ?? process.env.VAULT_ADDR,
      options.dangerousAllowPlaintext === true,
    );
    this.redactor = redactor;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    if (!(this.timeoutMs > 0)) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'timeoutMs must be positive');
    if (options.dispatcher) {
      this.dispatcher = options.dispatcher;
      this.ownsDispatcher = false;
    } else {
      const caFile = options.caFile ?? process.env.VAULT_CACERT;
      const ca = options.ca ?? (caFile ? readFileSync(caFile) : undefined);
      this.dispatcher = new Agent({ connect: ca ? { ca } : {}, keepAliveTimeout: 30_000 });
      this.ownsDispatcher = true;
    }
  }

  /**
   * `method` on `/v1/<path>`; `token` sent as X-Vault-Token. Resolves with
   * 2xx answers; rejects with a PalisadeError for anything else.
   */
  async request(method: string, path: string, body?: unknown, token?: string, options: RequestOptions = {}): Promise<ApiResponse> {
    const url = new URL(`/v1/${path}`, this.origin);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (token) headers['x-vault-token'] = token;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const where = `${method} /v1/${path}`;
    let res;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher: this.dispatcher,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw this.networkError(where, e);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      throw this.networkError(where, e);
    }
    let parsed: any = null;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (res.status >= 200 && res.status < 300) {
          throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `${where}: ${res.status} with a body that is not JSON`, { status: res.status });
        }
      }
    }
    if (res.status >= 200 && res.status < 300) return { status: res.status, body: parsed };
    if (options.answerStatuses?.includes(res.status) && parsed !== null) return { status: res.status, body: parsed };
    const extra = options.secretBody ? stringLeaves(body) : [];
    let errors: string[] = Array.isArray(parsed?.errors)
      ? parsed.errors.filter((e: unknown) => typeof e === 'string').map((e: string) => this.redactor.scrubWith(e, extra))
      : [];
    if (options.secretBody && errors.some((e) => !plainText(e))) {
      // the request carried secret values, and a server that quotes its
      // input may have done so in an encoding no redaction list foresees
      // (hex, escapes, numbers): only plain-worded messages are kept
      errors = [...errors.filter(plainText), "(the server's message was withheld: it may quote the request)"];
    }
    const code = codeForStatus(res.status, errors);
    const detail = errors.length > 0 ? `: ${errors.join('; ')}` : '';
    throw new PalisadeError(code, `${where}: ${res.status}${detail}`, { status: res.status, errors });
  }

  private networkError(where: string, e: unknown): PalisadeError {
    const err = e as { name?: string; cause?: { code?: string; name?: string } };
    if (err?.name === 'TimeoutError' || err?.name === 'AbortError' || err?.cause?.name === 'TimeoutError') {
      return new PalisadeError(ErrorCodes.TIMEOUT, `${where}: no answer within ${this.timeoutMs} ms`);
    }
    const why = err?.cause?.code ?? err?.cause?.name ?? 'network error';
    return new PalisadeError(ErrorCodes.UNAVAILABLE, `${where}: ${this.origin.host} is unreachable (${why})`);
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }
}
