/**
 * Object names of the repository layout (docs/repository-format.md, a contract):
 *   config
 *   chunks/<first two hex>/<chunk id>
 *   backups/<ct>/<backup id>/{manifest,DiskDescriptor.xml,<container config>}
 *   locks/...
 */
import { randomBytes } from "node:crypto";
import { UsageError } from "../errors.js";

export const CONFIG_KEY = "config";
export const CHUNKS_PREFIX = "chunks/";
export const BACKUPS_PREFIX = "backups/";
export const MANIFEST_NAME = "manifest";
export const DESCRIPTOR_NAME = "DiskDescriptor.xml";

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function chunkKey(idHex: string): string {
  return `${CHUNKS_PREFIX}${idHex.slice(0, 2)}/${idHex}`;
}

/** Container ids and backup ids become object-name segments: keep them plain. */
export function validateName(kind: string, name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new UsageError(`invalid ${kind} "${name}": use letters, digits, '.', '_' and '-' (max 128, not starting with a symbol)`);
  }
  return name;
}

export function backupPrefix(ct: string, backupId: string): string {
  return `${BACKUPS_PREFIX}${ct}/${backupId}/`;
}

export function manifestKey(ct: string, backupId: string): string {
  return `${backupPrefix(ct, backupId)}${MANIFEST_NAME}`;
}

/** Parse "backups/<ct>/<id>/manifest"; null for any other key. */
export function parseManifestKey(key: string): { ct: string; id: string } | null {
  const parts = key.split("/");
  if (parts.length !== 4 || `${parts[0]}/` !== BACKUPS_PREFIX || parts[3] !== MANIFEST_NAME) return null;
  const [, ct, id] = parts as [string, string, string, string];
  return NAME_PATTERN.test(ct) && NAME_PATTERN.test(id) ? { ct, id } : null;
}

/** Backup ids sort by time: "20261123T201420Z-3fa9c2d1". */
export function newBackupId(time: Date): string {
  const stamp = time
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${stamp}-${randomBytes(4).toString("hex")}`;
}
