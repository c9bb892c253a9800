/**
 * The small corpus (real ext4 filesystems in ploop images, built by scripts/corpus.ts) and
 * the real ploop's flattening of each disk, built once per test run by global setup and
 * shared read-only by every test file. Tests that modify a disk copy it first.
 */
import { cp, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inject } from "vitest";

declare module "vitest" {
  export interface ProvidedContext {
    corpus: { dir: string; cts: string[]; flatSha256: Record<string, string>; flatDir: string };
  }
}

export function corpus(): { dir: string; cts: string[]; flatSha256: Record<string, string>; flatDir: string } {
  return inject("corpus");
}

export function descriptorOf(ct: string): string {
  return join(corpus().dir, ct, "root.hdd", "DiskDescriptor.xml");
}

/** A private copy of one container's directory (for tests that change the disk). */
export async function copyContainer(ct: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `pv-ct${ct}-`));
  await cp(join(corpus().dir, ct), join(dir, ct), { recursive: true });
  return join(dir, ct);
}
