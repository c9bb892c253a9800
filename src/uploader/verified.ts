/**
 * Verified reads: the one place where a read whose body does not verify is tried again.
 *
 * The stores retry transport failures themselves (S3Store through the AWS SDK's retry
 * middleware and its body re-reads; the local store has none to retry). What they cannot
 * see is a body that arrived whole but wrong: bits flipped in transit or by a proxy, which
 * only the reader's check (a chunk's hash, a manifest's checksum or seal) notices. A body
 * that fails that check is fetched once more, so damage in transit costs one request, and
 * only an object that is bad twice is reported, as `... (read twice)`: the stored object
 * itself is damaged then. A missing object (404) is asked for once more too before it is
 * reported, since a damaged restore must not be blamed on a transient listing glitch.
 *
 * Used by Repository for chunks (and so by restore, check, copy and the lazy disks of the
 * file-level commands) and manifests.
 */
import { IntegrityError } from "../errors.js";
import { type ObjectStore, StoreError } from "./store.js";

/** A body that did not verify, or a missing object: worth one more read. */
function isWorthRereading(error: unknown): boolean {
  return error instanceof IntegrityError || (error instanceof StoreError && error.kind === "not-found");
}

export class VerifiedReads {
  constructor(
    readonly store: ObjectStore,
    /** Reads per object, the first included. */
    readonly attempts = 2,
  ) {}

  /**
   * `verify(store.get(key))`, where `verify` throws IntegrityError for a body that is not
   * what the caller expects; read again (up to `attempts` reads) while it does, or while the
   * object is reported missing. The last failure is thrown: an IntegrityError marked
   * "(read N times)", or the store's not-found error.
   */
  async get<T>(key: string, verify: (body: Buffer) => T | Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await verify(await this.store.get(key));
      } catch (error) {
        if (!isWorthRereading(error) || attempt >= this.attempts) {
          if (error instanceof IntegrityError && attempt > 1) {
            throw new IntegrityError(`${error.message} (read ${attempt === 2 ? "twice" : `${attempt} times`})`, { cause: error });
          }
          throw error;
        }
      }
    }
  }
}
