/**
 * The repository config object: identity, format version and the parameters every
 * client must use identically (chunking, compression). Written once by `init`.
 */
import { randomBytes } from "node:crypto";
import { PloopvaultError } from "../errors.js";
import { validateChunkerParams, type ChunkerParams } from "../chunker/params.js";

export const REPOSITORY_FORMAT = "ploopvault-repository";
export const REPOSITORY_VERSION = 1;

export interface RepositoryConfig {
  format: typeof REPOSITORY_FORMAT;
  version: number;
  id: string;
  created: string;
  chunker: ChunkerParams;
  compression: { algorithm: "zstd"; level: number };
  /** null for an unencrypted repository. */
  encryption: null;
}

export function newRepositoryConfig(chunker: ChunkerParams, compressionLevel: number, created: Date): RepositoryConfig {
  const config: RepositoryConfig = {
    format: REPOSITORY_FORMAT,
    version: REPOSITORY_VERSION,
    id: randomBytes(16).toString("hex"),
    created: created.toISOString(),
    chunker,
    compression: { algorithm: "zstd", level: compressionLevel },
    encryption: null,
  };
  validateConfig(config, "new repository config");
  return config;
}

export function encodeConfig(config: RepositoryConfig): Buffer {
  return Buffer.from(`${JSON.stringify(config, null, 2)}\n`, "utf8");
}

export function decodeConfig(body: Buffer, where: string): RepositoryConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    throw new PloopvaultError(`${where}: repository config is not valid JSON`);
  }
  validateConfig(parsed, where);
  return parsed;
}

function validateConfig(value: unknown, where: string): asserts value is RepositoryConfig {
  const c = value as Partial<RepositoryConfig> | null;
  if (typeof c !== "object" || c === null || c.format !== REPOSITORY_FORMAT) {
    throw new PloopvaultError(`${where}: not a ploopvault repository config`);
  }
  if (c.version !== REPOSITORY_VERSION) {
    throw new PloopvaultError(`${where}: repository format version ${String(c.version)} is not supported by this ploopvault (supports ${REPOSITORY_VERSION})`);
  }
  if (typeof c.id !== "string" || !/^[0-9a-f]{32}$/.test(c.id)) throw new PloopvaultError(`${where}: bad repository id`);
  if (typeof c.chunker !== "object" || c.chunker === null) throw new PloopvaultError(`${where}: missing chunker parameters`);
  validateChunkerParams(c.chunker, where);
  const level = c.compression?.level;
  if (c.compression?.algorithm !== "zstd" || typeof level !== "number" || !Number.isInteger(level) || level < -7 || level > 22) {
    throw new PloopvaultError(`${where}: bad compression settings`);
  }
  if (c.encryption !== null) throw new PloopvaultError(`${where}: encrypted repositories are not supported by this ploopvault`);
}
