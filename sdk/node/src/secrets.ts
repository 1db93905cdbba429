import { EventEmitter } from 'node:events';
import type { Palisade } from './client.js';
import { ErrorCodes, PalisadeError } from './errors.js';
import { apiPath } from './http.js';

/** One version of a KV v2 secret. */
export interface SecretVersion {
  data: Record<string, unknown>;
  version: number;
  createdTime: string | undefined;
}

/** What a watched secret's `get()` answers. */
export interface CachedSecret extends Readonly<SecretVersion> {
  /** True when the value could not be refreshed and is served from the cache. */
  stale: boolean;
  /** When the value was last read from the server (ms since the epoch). */
  fetchedAt: number;
}

export interface WatchOptions {
  /** Read the secret again after this long (default 60 000 ms). */
  refreshMs?: number;
  /**
   * While the server cannot be reached (down, sealed, timing out), serve the
   * cached value for this long after it was last read, then fail with
   * ERR_PALISADE_STALE (default 300 000 ms; 0 never serves a stale value).
   */
  maxStaleMs?: number;
  /**
   * Read the key's rotation policy (`<mount>/rotation/<key>`) and refresh
   * right after each scheduled rotation, well within its overlap, so the
   * version the service uses is never the one being retired (default true;
   * a policy the token may not read is simply not used).
   */
  followRotation?: boolean;
  /** Refresh in the background (a timer that does not keep the process alive); default true. */
  background?: boolean;
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}

/** KV version 2 at one mount. */
export class KvV2 {
  constructor(
    private readonly client: Palisade,
    readonly mount: string,
  ) {
    apiPath(mount);
  }

  /** The latest version (or `version`), read now. ERR_PALISADE_NOT_FOUND when absent or deleted. */
  async get(key: string, version?: number): Promise<SecretVersion> {
    const path = apiPath(this.mount, 'data', key) + (version === undefined ? '' : `?version=${Number(version)}`);
    const body = (await this.client.request('GET', path)).body;
    const d = body?.data;
    if (!d || typeof d !== 'object' || !d.metadata || typeof d.metadata.version !== 'number') {
      throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `GET /v1/${apiPath(this.mount, 'data', key)}: not a KV v2 answer`);
    }
    if (d.data === null) {
      throw new PalisadeError(ErrorCodes.NOT_FOUND, `GET /v1/${apiPath(this.mount, 'data', key)}: version ${d.metadata.version} is deleted`, { status: 404 });
    }
    return { data: d.data, version: d.metadata.version, createdTime: d.metadata.created_time };
  }

  /** Write a new version (`cas`: only if the current version is that one). Returns the new version. */
  async put(key: string, data: Record<string, unknown>, options: { cas?: number } = {}): Promise<number> {
    const body: Record<string, unknown> = { data };
    if (options.cas !== undefined) body.options = { cas: options.cas };
    const r = await this.client.request('POST', apiPath(this.mount, 'data', key), body, { secretBody: true });
    return Number(r.body?.data?.version);
  }

  /** A cached, refreshing view of one secret. */
  watch(key: string, options: WatchOptions = {}): WatchedSecret {
    return new WatchedSecret(this, this.client, key, options);
  }

  /** @internal the rotation policy of `key`, or null when there is none or it may not be read */
  async rotationPolicy(key: string): Promise<{ nextRotation: number; overlapMs: number } | null> {
    try {
      const d = (await this.client.request('GET', apiPath(this.mount, 'rotation', key))).body?.data;
      const next = typeof d?.next_rotation === 'string' ? Date.parse(d.next_rotation) : NaN;
      const overlap = Number(d?.overlap);
      if (!Number.isFinite(next) || !Number.isFinite(overlap)) return null;
      return { nextRotation: next, overlapMs: overlap * 1000 };
    } catch (e) {
      if (e instanceof PalisadeError && (e.code === ErrorCodes.NOT_FOUND || e.code === ErrorCodes.PERMISSION_DENIED)) return null;
      throw e;
    }
  }
}

/**
 * A KV v2 secret kept in memory: `get()` answers from the cache while it is
 * fresh, reads the server when it is not, and serves the last value (marked
 * `stale`) while the server cannot be reached, for at most `maxStaleMs`.
 *
 * Events: `change` ({ data, version, previousVersion }) when a refresh finds
 * a new version; `refresh-error` (PalisadeError) when a refresh failed and
 * the cached value is still served.
 */
export class WatchedSecret extends EventEmitter {
  readonly key: string;
  private readonly refreshMs: number;
  private readonly maxStaleMs: number;
  private readonly followRotation: boolean;
  private readonly background: boolean;
  private value: CachedSecret | null = null;
  private inflight: Promise<CachedSecret> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private timerDue = 0;
  private closed = false;

  constructor(
    private readonly kv: KvV2,
    private readonly client: Palisade,
    key: string,
    options: WatchOptions,
  ) {
    super();
    apiPath(key);
    this.key = key;
    this.refreshMs = options.refreshMs ?? 60_000;
    this.maxStaleMs = options.maxStaleMs ?? 300_000;
    this.followRotation = options.followRotation ?? true;
    if (!(this.refreshMs > 0) || !(this.maxStaleMs >= 0)) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'refreshMs must be positive and maxStaleMs not negative');
    }
    this.background = options.background ?? true;
    if (this.background) this.schedule(0);
  }

  /** The secret: cached while fresh, else read now (stale on failure, within maxStaleMs). */
  async get(): Promise<CachedSecret> {
    if (this.closed) throw new PalisadeError(ErrorCodes.CLOSED, `secret ${this.key}: closed`);
    const v = this.value;
    if (v && !v.stale && Date.now() - v.fetchedAt < this.refreshMs) return v;
    return this.refresh();
  }

  /** Read the secret now (concurrent callers share one read). */
  refresh(): Promise<CachedSecret> {
    if (!this.inflight) {
      this.inflight = this.fetch().finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  private async fetch(): Promise<CachedSecret> {
    let next: SecretVersion;
    try {
      next = await this.kv.get(this.key);
    } catch (e) {
      return this.fallback(e);
    }
    const previous = this.value;
    // every caller gets the same object: frozen, so that one cannot change what the others read
    const fresh: CachedSecret = Object.freeze({ ...next, data: deepFreeze(next.data), stale: false, fetchedAt: Date.now() });
    this.value = fresh;
    let delay = this.refreshMs;
    if (this.followRotation) {
      const policy = await this.kv.rotationPolicy(this.key).catch(() => null);
      if (policy) {
        // a second after the rotation is due (it runs within 5 s), and never
        // later than a quarter into the overlap: the old version stays readable
        // for the whole overlap, so the service moves over well before it goes
        const after = policy.nextRotation - Date.now() + Math.min(5_000, policy.overlapMs / 4);
        if (after > 0) delay = Math.min(delay, after);
        else delay = Math.min(delay, Math.max(1_000, policy.overlapMs / 8));
      }
    }
    this.schedule(delay);
    if (previous && previous.version !== fresh.version) {
      this.emit('change', { data: fresh.data, version: fresh.version, previousVersion: previous.version });
    }
    return fresh;
  }

  private fallback(e: unknown): CachedSecret {
    const err = e instanceof PalisadeError ? e : new PalisadeError(ErrorCodes.SERVER, 'refresh failed');
    // a policy or a missing secret is an answer, not an outage: no stale value for those
    const outage =
      err.code === ErrorCodes.UNAVAILABLE ||
      err.code === ErrorCodes.TIMEOUT ||
      err.code === ErrorCodes.SEALED ||
      err.code === ErrorCodes.SERVER ||
      err.code === ErrorCodes.RATE_LIMITED;
    const v = this.value;
    this.schedule(Math.min(this.refreshMs, 5_000));
    if (!outage) {
      // an answer (no access any more, deleted, token refused): the cached
      // value must never be served again, not even during a later outage
      this.value = null;
      throw err;
    }
    if (!v) throw err;
    const age = Date.now() - v.fetchedAt;
    if (age > this.maxStaleMs) {
      throw new PalisadeError(
        ErrorCodes.STALE,
        `secret ${this.key}: last read ${Math.round(age / 1000)} s ago, beyond maxStaleMs (${this.maxStaleMs} ms), and it cannot be refreshed: ${err.code}`,
        { cause: err, status: err.status },
      );
    }
    if (this.listenerCount('refresh-error') > 0) this.emit('refresh-error', err);
    this.value = Object.freeze({ ...v, stale: true });
    return this.value;
  }

  /** When the next background refresh is due (null without background refresh). */
  get nextRefreshAt(): Date | null {
    return this.timer ? new Date(this.timerDue) : null;
  }

  private schedule(ms: number): void {
    if (this.closed || !this.background) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = Date.now() + ms;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.refresh().catch((e) => {
        if (this.listenerCount('refresh-error') > 0) this.emit('refresh-error', e);
      });
    }, ms);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.value = null;
  }
}
