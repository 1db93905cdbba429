import { EventEmitter } from 'node:events';
import type { Palisade } from './client.js';
import { ErrorCodes, PalisadeError } from './errors.js';
import { apiPath } from './http.js';

export interface LeasedSecretOptions {
  /** Ask for this much more time at each renewal (seconds; default: the lease's own duration). */
  incrementS?: number;
  /** Renew when this fraction of the lease has passed (default 2/3). */
  renewAt?: number;
  /** Revoke the lease on close() (default true: the credentials die with the service). */
  revokeOnClose?: boolean;
}

/** Credentials with a lease, as a dynamic secrets engine issues them. */
export interface LeasedValue {
  data: Record<string, unknown>;
  leaseId: string;
  /** When the lease runs out, as last renewed (ms since the epoch). */
  expiresAt: number;
}

/**
 * A dynamic secret (database credentials, …): read once, its lease renewed
 * at two thirds of its duration, and new credentials read before the lease
 * reaches its max TTL (a renewal that grants less than a third of what was
 * asked). Events: `change` (LeasedValue) when new credentials replace the old,
 * `renewed` ({ leaseId, expiresAt }), `renew-error` (PalisadeError) when a
 * renewal failed (retried until the lease runs out).
 */
export class LeasedSecret extends EventEmitter {
  private value: LeasedValue | null = null;
  private inflight: Promise<LeasedValue> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly renewAt: number;

  constructor(
    private readonly client: Palisade,
    readonly path: string,
    private readonly options: LeasedSecretOptions,
  ) {
    super();
    apiPath(path);
    this.renewAt = options.renewAt ?? 2 / 3;
    if (!(this.renewAt > 0 && this.renewAt < 1)) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'renewAt must be between 0 and 1');
  }

  /** The current credentials (read on first use, or when the lease has run out). */
  async get(): Promise<LeasedValue> {
    if (this.closed) throw new PalisadeError(ErrorCodes.CLOSED, `${this.path}: closed`);
    const v = this.value;
    if (v && Date.now() < v.expiresAt) return v;
    return this.fetchNew();
  }

  private fetchNew(): Promise<LeasedValue> {
    if (!this.inflight) {
      this.inflight = this.read().finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  private async read(): Promise<LeasedValue> {
    const body = (await this.client.request('GET', apiPath(this.path))).body;
    if (typeof body?.lease_id !== 'string' || body.lease_id === '' || typeof body.data !== 'object') {
      throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `GET /v1/${apiPath(this.path)}: the answer has no lease`);
    }
    const duration = Number(body.lease_duration) * 1000;
    if (body.lease_duration === undefined || body.lease_duration === null || !Number.isFinite(duration) || duration < 0) {
      throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `GET /v1/${apiPath(this.path)}: lease_duration is not a number of seconds`);
    }
    const old = this.value;
    // 0: a lease without an expiry: kept, never renewed
    const v: LeasedValue = { data: body.data, leaseId: body.lease_id, expiresAt: duration === 0 ? Infinity : Date.now() + duration };
    this.client.transport.redactor.add(body.lease_id);
    this.value = v;
    if (this.closed) {
      await this.revoke(v.leaseId);
      throw new PalisadeError(ErrorCodes.CLOSED, `${this.path}: closed`);
    }
    if (duration > 0) this.schedule(duration * this.renewAt, duration);
    if (old) {
      this.emit('change', v);
      // the old credentials are replaced: end them now rather than at their expiry
      this.revoke(old.leaseId).catch(() => {});
    }
    return v;
  }

  private schedule(ms: number, asked: number): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.closed || !Number.isFinite(ms) || !Number.isFinite(asked)) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.renew(asked).catch(() => {});
    }, Math.max(ms, 1_000));
    this.timer.unref();
  }

  /** Renew now; new credentials when the lease cannot be extended enough. */
  async renew(askedMs?: number): Promise<void> {
    const v = this.value;
    if (!v || this.closed) return;
    const increment = this.options.incrementS ?? Math.round((askedMs ?? v.expiresAt - Date.now()) / 1000);
    try {
      const body = (await this.client.request('PUT', 'sys/leases/renew', { lease_id: v.leaseId, increment })).body;
      const granted = Number(body?.lease_duration) * 1000;
      if (!(granted > 0) || granted < (increment * 1000) / 3) {
        // at (or near) the max TTL: new credentials before these run out
        await this.fetchNew();
        return;
      }
      v.expiresAt = Date.now() + granted;
      this.emit('renewed', { leaseId: v.leaseId, expiresAt: v.expiresAt });
      this.schedule(granted * this.renewAt, increment * 1000);
    } catch (e) {
      const err = e instanceof PalisadeError ? e : new PalisadeError(ErrorCodes.SERVER, `${this.path}: renewal failed`);
      if (this.listenerCount('renew-error') > 0) this.emit('renew-error', err);
      const left = v.expiresAt - Date.now();
      if (err.code === ErrorCodes.BAD_REQUEST || err.code === ErrorCodes.NOT_FOUND) {
        // the lease is gone (revoked, expired): new credentials at once
        await this.fetchNew().catch((e2) => {
          if (this.listenerCount('renew-error') > 0) this.emit('renew-error', e2);
          this.schedule(5_000, increment * 1000);
        });
        return;
      }
      if (left > 0) this.schedule(Math.min(left / 3, 30_000), increment * 1000);
      else this.fetchNew().catch(() => this.schedule(5_000, increment * 1000));
    }
  }

  private async revoke(leaseId: string): Promise<void> {
    await this.client.request('PUT', 'sys/leases/revoke', { lease_id: leaseId });
    this.client.transport.redactor.delete(leaseId);
  }

  /** Stop renewing; revoke the lease unless revokeOnClose is false. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const v = this.value;
    this.value = null;
    if (v && (this.options.revokeOnClose ?? true)) await this.revoke(v.leaseId).catch(() => {});
  }
}
