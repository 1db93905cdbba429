import type { Palisade } from './client.js';
import { ErrorCodes, PalisadeError } from './errors.js';
import { apiPath } from './http.js';

export interface FieldOptions {
  /** Key derivation context for `derived` keys (bound to the ciphertext: the same one decrypts). */
  context?: string | Buffer;
  /** Associated data for AEAD keys (authenticated, not encrypted; the same one decrypts). */
  associatedData?: string | Buffer;
}

const b64 = (v: string | Buffer): string => (typeof v === 'string' ? Buffer.from(v, 'utf8') : v).toString('base64');

function extras(o: FieldOptions): Record<string, string> {
  const e: Record<string, string> = {};
  if (o.context !== undefined) e.context = b64(o.context);
  if (o.associatedData !== undefined) e.associated_data = b64(o.associatedData);
  return e;
}

/**
 * Field-level encryption with the transit engine: the key never leaves
 * Palisade; the service stores `vault:v<N>:…` ciphertexts.
 */
export class Transit {
  constructor(
    private readonly client: Palisade,
    readonly mount: string,
  ) {
    apiPath(mount);
  }

  /** Encrypt one value (a string is UTF-8). */
  async encryptField(key: string, plaintext: string | Buffer, options: FieldOptions = {}): Promise<string> {
    const r = await this.client.request('POST', apiPath(this.mount, 'encrypt', key), { plaintext: b64(plaintext), ...extras(options) }, { secretBody: true });
    const ct = r.body?.data?.ciphertext;
    if (typeof ct !== 'string') throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `encrypt/${key}: no ciphertext in the answer`);
    return ct;
  }

  /** Decrypt one value to a UTF-8 string. */
  async decryptField(key: string, ciphertext: string, options: FieldOptions = {}): Promise<string> {
    return (await this.decryptFieldBytes(key, ciphertext, options)).toString('utf8');
  }

  /** Decrypt one value to bytes. */
  async decryptFieldBytes(key: string, ciphertext: string, options: FieldOptions = {}): Promise<Buffer> {
    if (typeof ciphertext !== 'string' || !ciphertext.startsWith('vault:v')) {
      throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, 'decryptField: not a transit ciphertext (vault:v<N>:…)');
    }
    const r = await this.client.request('POST', apiPath(this.mount, 'decrypt', key), { ciphertext, ...extras(options) }, { secretBody: true });
    const pt = r.body?.data?.plaintext;
    if (typeof pt !== 'string') throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `decrypt/${key}: no plaintext in the answer`);
    return Buffer.from(pt, 'base64');
  }

  /** Encrypt many values in one request; answers in the same order. Any failure fails the whole batch. */
  async encryptBatch(key: string, plaintexts: Array<string | Buffer>, options: FieldOptions = {}): Promise<string[]> {
    if (plaintexts.length === 0) return [];
    const x = extras(options);
    const items = await this.batch('encrypt', key, plaintexts.map((p) => ({ plaintext: b64(p), ...x })));
    return items.map((it, i) => {
      if (typeof it?.ciphertext !== 'string') throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `encrypt/${key}: item ${i} has no ciphertext`);
      return it.ciphertext;
    });
  }

  /** Decrypt many ciphertexts in one request to UTF-8 strings; same order. */
  async decryptBatch(key: string, ciphertexts: string[], options: FieldOptions = {}): Promise<string[]> {
    if (ciphertexts.length === 0) return [];
    const x = extras(options);
    const items = await this.batch('decrypt', key, ciphertexts.map((c) => ({ ciphertext: c, ...x })));
    return items.map((it, i) => {
      if (typeof it?.plaintext !== 'string') throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `decrypt/${key}: item ${i} has no plaintext`);
      return Buffer.from(it.plaintext, 'base64').toString('utf8');
    });
  }

  /**
   * A copy of `record` with `fields` encrypted (one request for all of them).
   * Fields that are absent, null or undefined stay so; other values must be
   * strings (encrypt JSON yourself: `JSON.stringify` first).
   */
  async encryptFields<T extends Record<string, unknown>>(key: string, record: T, fields: Array<keyof T & string>, options: FieldOptions = {}): Promise<T> {
    const present = fields.filter((f) => record[f] !== undefined && record[f] !== null);
    for (const f of present) {
      if (typeof record[f] !== 'string') throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `encryptFields: field ${f} is not a string`);
    }
    const cts = await this.encryptBatch(key, present.map((f) => record[f] as string), options);
    const out: Record<string, unknown> = { ...record };
    present.forEach((f, i) => (out[f] = cts[i]));
    return out as T;
  }

  /** A copy of `record` with `fields` decrypted (one request). */
  async decryptFields<T extends Record<string, unknown>>(key: string, record: T, fields: Array<keyof T & string>, options: FieldOptions = {}): Promise<T> {
    const present = fields.filter((f) => record[f] !== undefined && record[f] !== null);
    for (const f of present) {
      if (typeof record[f] !== 'string') throw new PalisadeError(ErrorCodes.INVALID_ARGUMENT, `decryptFields: field ${f} is not a ciphertext string`);
    }
    const pts = await this.decryptBatch(key, present.map((f) => record[f] as string), options);
    const out: Record<string, unknown> = { ...record };
    present.forEach((f, i) => (out[f] = pts[i]));
    return out as T;
  }

  private async batch(op: 'encrypt' | 'decrypt', key: string, input: object[]): Promise<any[]> {
    // Vault answers a batch with a failed item as 400 with every item's result
    const r = await this.client.request('POST', apiPath(this.mount, op, key), { batch_input: input }, { answerStatuses: [400], secretBody: true });
    const results = r.body?.data?.batch_results;
    if (!Array.isArray(results) || results.length !== input.length) {
      throw new PalisadeError(ErrorCodes.BAD_RESPONSE, `${op}/${key}: batch_results does not match the batch`);
    }
    const failed = results.findIndex((it: any) => typeof it?.error === 'string' && it.error !== '');
    if (failed >= 0) {
      const why = this.client.transport.redactor.scrubWith(results[failed].error, input.flatMap((it) => Object.values(it).filter((x): x is string => typeof x === 'string')));
      throw new PalisadeError(ErrorCodes.BAD_REQUEST, `${op}/${key}: item ${failed} of the batch failed: ${why}`, { status: 400, errors: [why] });
    }
    return results;
  }
}
