/**
 * Gathers what a backup of one ploop disk stores besides the data: the descriptor as it
 * was, and the container config found beside the disk (ve.conf next to root.hdd).
 */
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { PloopvaultError } from "../errors.js";

export const CONTAINER_CONFIG_NAME = "ve.conf";

export async function readDescriptorBytes(descriptorPath: string): Promise<Buffer> {
  try {
    return await readFile(descriptorPath);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new PloopvaultError(`${descriptorPath}: cannot read disk descriptor (${code === "ENOENT" ? "no such file" : (code ?? String(error))})`, { cause: error });
  }
}

/** ve.conf in the container's private area (the parent of root.hdd/), if present. */
export async function findContainerConfig(descriptorPath: string, explicitPath?: string): Promise<{ name: string; body: Buffer } | null> {
  const candidates = explicitPath ? [explicitPath] : [join(dirname(dirname(descriptorPath)), CONTAINER_CONFIG_NAME)];
  for (const path of candidates) {
    try {
      return { name: CONTAINER_CONFIG_NAME, body: await readFile(path) };
    } catch (error) {
      if (explicitPath) throw new PloopvaultError(`${path}: cannot read container config (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
    }
  }
  return null;
}

/** Default container id for --disk: the descriptor's folder's parent name (/vz/private/101/root.hdd/DD.xml -> 101). */
export function defaultContainerId(descriptorPath: string): string {
  return basename(dirname(dirname(descriptorPath)));
}
