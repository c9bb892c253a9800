/**
 * Where `dump` writes: stdout, or a file given with --target, written under a temporary
 * name beside it (owner-only) and renamed into place only when complete, so a failed dump
 * never leaves something that looks finished.
 */
import { randomBytes } from "node:crypto";
import { open, rename, rm, stat } from "node:fs/promises";
import { writeFully } from "../util/positional-io.js";
import { basename, dirname, join } from "node:path";
import { PloopvaultError } from "../errors.js";
import type { ByteSink } from "./dump.js";

export async function withDumpTarget<T>(target: string, force: boolean, write: (sink: ByteSink) => Promise<T>): Promise<T> {
  if (!force) {
    const exists = await stat(target).then(
      () => true,
      () => false,
    );
    if (exists) throw new PloopvaultError(`dump target ${target} already exists (use --force to replace it)`);
  }
  const temp = join(dirname(target), `.${basename(target)}.ploopvault-partial-${randomBytes(4).toString("hex")}`);
  let fh;
  try {
    fh = await open(temp, "wx", 0o600);
  } catch (error) {
    throw new PloopvaultError(`cannot create dump target ${target}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  const handle = fh;
  let position = 0;
  const sink: ByteSink = {
    async write(data: Buffer): Promise<void> {
      await writeFully(handle, data, position);
      position += data.length;
    },
  };
  try {
    const result = await write(sink);
    await fh.sync();
    await fh.close();
    await rename(temp, target);
    return result;
  } catch (error) {
    await fh.close().catch(() => undefined);
    await rm(temp, { force: true });
    const code = (error as NodeJS.ErrnoException).code;
    if (!(error instanceof PloopvaultError) && code !== undefined) throw new PloopvaultError(`cannot write dump target ${target}: ${code}`, { cause: error });
    throw error;
  }
}
