import { EventEmitter } from 'node:events';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { Agent, Dispatcher } from 'undici';
import type { Palisade } from './client.js';
import { ErrorCodes, PalisadeError } from './errors.js';
import { apiPath } from './http.js';

export interface MtlsOptions {
  /** Where the PKI engine is mounted (default `pki`). */
  mount?: string;
  /** The PKI role to issue from (it decides which names this workload may have). */
  role: string;
  commonName: string;
  altNames?: string[];
  ipSans?: string[];
  /** URI SANs, e.g. a SPIFFE ID the role pins. */
  uriSans?: string[];
  /** Requested lifetime (`24h`, …; default: the role's). */
  ttl?: string;
  /**
   * CA certificates (PEM) to verify the servers this dispatcher connects to.
   * Default: the issuing CA and chain of the certificate itself (peers from
   * the same PKI).
   */
  ca?: string | Buffer;
  /** Renew when this fraction of the certificate's remaining life has passed (default 2/3). */
  renewAt?: number;
  /**
   * Ask the PKI engine every this many ms whether the certificate was revoked,
   * and re-issue at once when it was (default 60 000; 0 turns it off).
   */
  revocationCheckMs?: number;
  /** undici Agent options (connections per origin, keep-alive, …); `connect` TLS fields are set here. */
  agent?: Omit<Agent.Options, 'connect'>;
}

export interface CertificateInfo {
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

interface Issued {
  agent: Agent;
  info: CertificateInfo;
  renewAt: number;
}

/**
 * An undici dispatcher (for `fetch(url, { dispatcher })` or `request`) that
 * presents a client certificate issued by Palisade's PKI engine. The
 * certificate is renewed at two thirds of its life (and at once when it is
 * found revoked): new connections use the new one, requests in flight finish
 * on the old connections, which are then closed.
 *
 * Events: `renewed` ({ serial, notAfter, reason: 'schedule' | 'revoked' | 'manual' }),
 * `renew-error` (PalisadeError; retried from 30 s, doubling to 5 min, while the
 * current certificate serves).
 */
export class MtlsDispatcher extends Dispatcher {
  private current: Issued | null = null;
  private timer: NodeJS.Timeout | null = null;
  private revocationTimer: NodeJS.Timeout | null = null;
  private retryMs = 30_000;
  private closed = false;
  private revoked = false;
  private renewing: Promise<void> | null = null;

  constructor(
    private readonly client: Palisade,
    private readonly options: MtlsOptions,
  ) {
    super();
    if (!options.role || !options.commonName) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'mtlsDispatcher: role and commonName are required');
    }
    const f = options.renewAt ?? 2 / 3;
    if (!(f > 0 && f < 1)) throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'renewAt must be between 0 and 1');
  }

  /** @internal issue the first certificate */
  async start(): Promise<void> {
    await this.renew('schedule');
    const every = this.options.revocationCheckMs ?? 60_000;
    if (every > 0) {
      this.revocationTimer = setInterval(() => {
        this.checkRevocation().catch(() => {});
      }, every);
      this.revocationTimer.unref();
    }
  }

  /** The certificate now presented. */
  get certificate(): CertificateInfo {
    if (!this.current) throw new PalisadeError(ErrorCodes.CLOSED, 'mtlsDispatcher: no certificate');
    return this.current.info;
  }

  /** Issue a new certificate now (one renewal at a time). */
  renew(reason: 'schedule' | 'revoked' | 'manual' = 'manual'): Promise<void> {
    if (!this.renewing) {
      this.renewing = this.issue(reason).finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }

  /** Ask the PKI engine whether the current certificate was revoked; re-issue if so. Answers whether it was. */
  async checkRevocation(): Promise<boolean> {
    const c = this.current;
    if (!c || this.closed) return false;
    const mount = this.options.mount ?? 'pki';
    const d = (await this.client.request('GET', apiPath(mount, 'cert', c.info.serial))).body?.data;
    if (!(Number(d?.revocation_time) > 0)) return false;
    if (this.current !== c) return true; // replaced meanwhile
    this.revoked = true;
    try {
      await this.renew('revoked');
    } catch (e) {
      this.fire('renew-error', e);
    }
    return true;
  }

  private async issue(reason: 'schedule' | 'revoked' | 'manual'): Promise<void> {
    const o = this.options;
    const body: Record<string, unknown> = { common_name: o.commonName };
    if (o.altNames?.length) body.alt_names = o.altNames.join(',');
    if (o.ipSans?.length) body.ip_sans = o.ipSans.join(',');
    if (o.uriSans?.length) body.uri_sans = o.uriSans.join(',');
    if (o.ttl) body.ttl = o.ttl;
    const d = (await this.client.request('POST', apiPath(o.mount ?? 'pki', 'issue', o.role), body)).body?.data;
    if (typeof d?.certificate !== 'string' || typeof d?.private_key !== 'string') {
      throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `pki/issue/${o.role}: no certificate or private key in the answer`);
    }
    this.client.transport.redactor.add(d.private_key);
    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(d.certificate);
      if (!x509.checkPrivateKey(createPrivateKey(d.private_key))) throw new Error('mismatch');
    } catch {
      throw new PalisadeError(ErrorCodes.CERTIFICATE, `pki/issue/${o.role}: the certificate and key do not form a pair`);
    }
    const notBefore = new Date(x509.validFrom);
    const notAfter = new Date(x509.validTo);
    const now = Date.now();
    if (!(notAfter.getTime() > now && notBefore.getTime() <= now + 60_000)) {
      throw new PalisadeError(ErrorCodes.CERTIFICATE, `pki/issue/${o.role}: the issued certificate is not valid now`);
    }
    const chain: string[] = Array.isArray(d.ca_chain) && d.ca_chain.length > 0 ? d.ca_chain : [d.issuing_ca].filter(Boolean);
    // the leaf and its chain: a peer that trusts only the root can still build the path
    const certChain = [d.certificate, ...chain].join('\n');
    const agent = new Agent({
      ...(o.agent ?? {}),
      connect: { cert: certChain, key: d.private_key, ca: o.ca ?? chain.join('\n') },
    });
    const serial = String(d.serial_number ?? x509.serialNumber);
    const old = this.current;
    if (this.closed) {
      await agent.close();
      return;
    }
    this.current = {
      agent,
      info: { serial, notBefore, notAfter },
      renewAt: now + (notAfter.getTime() - now) * (o.renewAt ?? 2 / 3),
    };
    this.revoked = false;
    this.retryMs = 30_000;
    this.scheduleRenewal(this.current.renewAt - now);
    // requests in flight finish on the old connections; close() waits for them
    if (old) old.agent.close().catch(() => {});
    this.fire('renewed', { serial, notAfter, reason });
  }

  private scheduleRenewal(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.closed) return;
    // setTimeout holds at most 2^31-1 ms: longer waits are taken in steps
    const step = Math.min(Math.max(ms, 0), 2 ** 31 - 1);
    this.timer = setTimeout(() => {
      this.timer = null;
      const c = this.current;
      if (c && Date.now() < c.renewAt) {
        this.scheduleRenewal(c.renewAt - Date.now());
        return;
      }
      this.renew('schedule').catch((e) => {
        this.fire('renew-error', e);
        this.scheduleRenewal(this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 300_000);
      });
    }, step);
    this.timer.unref();
  }

  // undici types the dispatcher's events; these are the SDK's own
  private fire(name: string, arg: unknown): void {
    const ee = this as unknown as EventEmitter;
    if (name.endsWith('-error') && ee.listenerCount(name) === 0) return;
    ee.emit(name, arg);
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandlers): boolean {
    const c = this.current;
    if (this.closed || !c) {
      handler.onError?.(new PalisadeError(ErrorCodes.CLOSED, 'mtlsDispatcher: closed'));
      return false;
    }
    if (this.revoked || Date.now() >= c.info.notAfter.getTime()) {
      // fail closed: a revoked or expired certificate is not presented
      handler.onError?.(
        new PalisadeError(ErrorCodes.CERTIFICATE, `mtlsDispatcher: certificate ${c.info.serial} is ${this.revoked ? 'revoked' : 'expired'} and no new one could be issued`),
      );
      return false;
    }
    return c.agent.dispatch(options, handler);
  }

  override async close(): Promise<void> {
    this.stop();
    const c = this.current;
    if (c) await c.agent.close();
  }

  override async destroy(): Promise<void> {
    this.stop();
    const c = this.current;
    if (c) await c.agent.destroy();
  }

  private stop(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.revocationTimer) clearInterval(this.revocationTimer);
    this.timer = null;
    this.revocationTimer = null;
  }
}
