/**
 * Does the store really refuse a conditional write? The store contract (store.ts) says a
 * put with `ifAbsent` fails with "exists" when the key is present and one with `ifMatch`
 * fails with "changed" when the etag differs. S3 servers that do not implement
 * `If-None-Match` / `If-Match` on PUT answer 501 (detected by S3Store), but some ignore
 * the header and overwrite: then `init` could replace an existing config and two prunes
 * could both take the prune lock. This probe asks the store, with one scratch object:
 *
 *   1. put A, ifAbsent                 must succeed (the key is new)
 *   2. put B, ifAbsent                 must fail with "exists"
 *   3. put C, ifMatch <a wrong etag>   must fail with "changed"
 *   4. get                             must still be A
 *   5. delete
 *
 * Five requests; callers remember a good result (src/repository/conditional-writes.ts).
 */
import { randomBytes } from "node:crypto";
import { errorLine } from "../errors.js";
import { StoreError, type ObjectStore } from "./store.js";

/** null when the store honours both conditions, else one line saying what it did instead. */
export async function probeConditionalWrites(store: ObjectStore, key: string, bodyOf: (step: string) => Buffer): Promise<string | null> {
  const first = bodyOf("create");
  try {
    await store.put(key, first, { ifAbsent: true });
  } catch (error) {
    return `a conditional create (If-None-Match) of a new object failed: ${errorLine(error)}`;
  }
  try {
    const refused = async (put: () => Promise<void>, kind: "exists" | "changed"): Promise<boolean> => {
      try {
        await put();
        return false;
      } catch (error) {
        if (error instanceof StoreError && error.kind === kind) return true;
        throw error;
      }
    };
    const second = bodyOf("second create");
    if (!(await refused(() => store.put(key, second, { ifAbsent: true }), "exists"))) {
      return `it accepted a second conditional create (If-None-Match: *) of ${key}, which must be refused: the server ignores If-None-Match`;
    }
    const wrongEtag = `"${randomBytes(16).toString("hex")}"`;
    if (!(await refused(() => store.put(key, bodyOf("replace"), { ifMatch: wrongEtag }), "changed"))) {
      return `it accepted a conditional overwrite (If-Match) of ${key} with a wrong etag, which must be refused: the server ignores If-Match`;
    }
    const stored = await store.get(key);
    if (!stored.equals(first)) return `${key} changed although every conditional write after its creation was refused: the server ignores conditional writes`;
    return null;
  } finally {
    await store.delete([key]).catch(() => undefined);
  }
}
