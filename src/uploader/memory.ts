/**
 * An ObjectStore in memory: the whole contract of store.ts (atomic puts, conditional
 * create and compare-and-swap, etags, storage-side modification times, prefix listings),
 * for the fast unit tier (`npm run test:unit`), which drives backup, restore, prune and
 * check against it without a server or a disk. The contract suite runs against it beside
 * the local and S3 stores, so it cannot drift from them. Bodies are copied in and out.
 */
import { createHash } from "node:crypto";
import { StoreError, validateKey, validatePrefix, type ObjectInfo, type ObjectStore, type PutOptions } from "./store.js";

interface StoredObject {
  body: Buffer;
  etag: string;
  modified: Date;
}

export class MemoryStore implements ObjectStore {
  readonly location: string;
  private readonly objects = new Map<string, StoredObject>();
  private version = 0;

  /** `exists: false` models a missing bucket/directory until ensureContainer(). */
  constructor(
    name = "memory",
    private exists = true,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.location = `memory://${name}`;
  }

  private checkContainer(): void {
    if (!this.exists) throw new StoreError("no-container", `repository ${this.location} does not exist`);
  }

  async ensureContainer(): Promise<void> {
    this.exists = true;
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    validateKey(key);
    this.checkContainer();
    if (options?.signal?.aborted) throw options.signal.reason;
    const current = this.objects.get(key);
    if (options?.ifAbsent && current !== undefined) throw new StoreError("exists", `object ${key} already exists in ${this.location}`, { key });
    if (options?.ifMatch !== undefined && current?.etag !== options.ifMatch) {
      throw new StoreError("changed", `object ${key} in ${this.location} was changed or removed by another writer (conditional write refused)`, { key });
    }
    const copy = Buffer.from(body);
    // like S3: the etag of a simple object is its content hash (plus a version, so that
    // every put is a new version even with equal content, as a local file's inode is)
    const etag = `"${createHash("md5").update(copy).digest("hex")}-${++this.version}"`;
    this.objects.set(key, { body: copy, etag, modified: this.now() });
  }

  private object(key: string): StoredObject {
    validateKey(key);
    this.checkContainer();
    const found = this.objects.get(key);
    if (found === undefined) throw new StoreError("not-found", `object ${key} not found in ${this.location}`, { key });
    return found;
  }

  async get(key: string): Promise<Buffer> {
    return Buffer.from(this.object(key).body);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const { body } = this.object(key);
    return Buffer.from(body.subarray(offset, Math.min(body.length, offset + length)));
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    validateKey(key);
    this.checkContainer();
    const found = this.objects.get(key);
    return found === undefined ? null : { key, size: found.body.length, modified: found.modified, etag: found.etag };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
    this.checkContainer();
    const matching = [...this.objects.entries()].filter(([key]) => key.startsWith(prefix));
    for (const [key, o] of matching) yield { key, size: o.body.length, modified: o.modified, etag: o.etag };
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) validateKey(key);
    this.checkContainer();
    for (const key of keys) this.objects.delete(key);
  }

  async close(): Promise<void> {}
}
