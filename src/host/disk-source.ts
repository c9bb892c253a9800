/**
 * Gathers what a backup of one ploop disk stores besides the data: the descriptor as it
 * was, and the container config found beside the disk (ve.conf next to root.hdd).
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { PloopvaultError, UsageError } from "../errors.js";
import { validateName } from "../repository/layout.js";

export const CONTAINER_CONFIG_NAME = "ve.conf";

export async function readDescriptorBytes(descriptorPath: string): Promise<Buffer> {
  try {
    return await readFile(descriptorPath);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new PloopvaultError(`${descriptorPath}: cannot read disk descriptor (${code === "ENOENT" ? "no such file" : (code ?? String(error))})`, {
      cause: error,
    });
  }
}

/** ve.conf in the container's private area (the parent of root.hdd/), if present. */
export async function findContainerConfig(descriptorPath: string, explicitPath?: string): Promise<{ name: string; body: Buffer } | null> {
  const candidates = explicitPath ? [explicitPath] : [join(dirname(dirname(descriptorPath)), CONTAINER_CONFIG_NAME)];
  for (const path of candidates) {
    try {
      return { name: CONTAINER_CONFIG_NAME, body: await readFile(path) };
    } catch (error) {
      if (explicitPath)
        throw new PloopvaultError(`${path}: cannot read container config (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
    }
  }
  return null;
}

/** Default container id for --disk: the descriptor's folder's parent name (/vz/private/101/root.hdd/DD.xml -> 101). */
export function defaultContainerId(descriptorPath: string): string {
  return basename(dirname(dirname(descriptorPath)));
}

/**
 * The container id recorded for `--disk PATH`: `name` (--name) if given, else the default
 * from the path. A path it cannot be told from gets a message about the path, not about
 * an empty container id.
 */
export function containerIdForDisk(descriptorPath: string, name: string | undefined): string {
  if (name !== undefined) return validateName("container id", name);
  const derived = defaultContainerId(descriptorPath);
  try {
    return validateName("container id", derived);
  } catch {
    if (!existsSync(descriptorPath)) throw new UsageError(`--disk ${descriptorPath}: no such file`);
    throw new UsageError(
      `--disk ${descriptorPath}: cannot tell the container id from the path (expected .../CTID/root.hdd/DiskDescriptor.xml): give --name CTID`,
    );
  }
}
