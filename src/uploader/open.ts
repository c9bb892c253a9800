/**
 * Repository URL -> ObjectStore (shared/docs/design.md, "Repository URLs"):
 *   s3://BUCKET[/PREFIX]   S3; endpoint from options.endpoint or env AWS_ENDPOINT_URL
 *                          (path-style then), credentials and region from the SDK chain
 *   file://PATH            local directory (file:///abs/path or file://relative/path)
 *   PATH                   local directory
 */
import { fileURLToPath } from "node:url";
import { UsageError } from "../errors.js";
import { LocalDirectoryStore } from "./local.js";
import { S3Store, type S3StoreOptions } from "./s3.js";
import type { ObjectStore } from "./store.js";

export interface OpenStoreOptions {
  /** S3 endpoint URL for non-AWS servers; default env AWS_ENDPOINT_URL. */
  endpoint?: string;
  /** S3 region; default the SDK chain (AWS_REGION...). */
  region?: string;
  /** S3 credentials; default the SDK chain. */
  credentials?: S3StoreOptions["credentials"];
  /** S3 sockets per client. */
  maxSockets?: number;
  /** S3 attempts per request. */
  maxAttempts?: number;
}

export type ParsedRepoUrl = { kind: "s3"; bucket: string; prefix: string } | { kind: "local"; path: string };

const BUCKET = /^[a-z0-9][a-z0-9.\-_]{1,254}$/i;

export function parseRepoUrl(url: string): ParsedRepoUrl {
  if (url.trim() === "") throw new UsageError("empty repository URL");
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === "s3") {
    const rest = url.slice("s3://".length);
    const slash = rest.indexOf("/");
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    const prefix = (slash < 0 ? "" : rest.slice(slash + 1)).replace(/^\/+|\/+$/g, "");
    if (!BUCKET.test(bucket)) throw new UsageError(`invalid repository URL "${url}": "${bucket}" is not a valid bucket name (s3://BUCKET[/PREFIX])`);
    if (/[?#]/.test(rest)) throw new UsageError(`invalid repository URL "${url}": no query or fragment allowed (s3://BUCKET[/PREFIX])`);
    if (prefix.split("/").some((s) => s === "." || s === ".." || (s === "" && prefix !== ""))) {
      throw new UsageError(`invalid repository URL "${url}": bad prefix "${prefix}"`);
    }
    return { kind: "s3", bucket, prefix };
  }
  if (scheme === "file") {
    let path: string;
    if (url.startsWith("file:///")) {
      try {
        path = fileURLToPath(url);
      } catch (error) {
        throw new UsageError(`invalid repository URL "${url}": ${error instanceof Error ? error.message : String(error)}`);
      }
    } else {
      // file://relative/path or file://host/path: we take everything after "file://" as a path
      path = decodeURIComponent(url.slice("file://".length));
    }
    if (path === "") throw new UsageError(`invalid repository URL "${url}": no path`);
    return { kind: "local", path };
  }
  if (scheme !== undefined) {
    throw new UsageError(`unsupported repository URL "${url}": use s3://BUCKET[/PREFIX], file://PATH or a directory path`);
  }
  return { kind: "local", path: url };
}

export function openStore(url: string, options: OpenStoreOptions = {}): ObjectStore {
  const parsed = parseRepoUrl(url);
  if (parsed.kind === "local") return new LocalDirectoryStore(parsed.path);
  const endpoint = options.endpoint ?? (process.env.AWS_ENDPOINT_URL || undefined);
  if (endpoint !== undefined) {
    let u: URL;
    try {
      u = new URL(endpoint);
    } catch {
      throw new UsageError(`invalid S3 endpoint "${endpoint}": expected a URL such as http://127.0.0.1:9000`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new UsageError(`invalid S3 endpoint "${endpoint}": must be http:// or https://`);
  }
  const s3: S3StoreOptions = { bucket: parsed.bucket, prefix: parsed.prefix };
  if (endpoint !== undefined) s3.endpoint = endpoint;
  if (options.region !== undefined) s3.region = options.region;
  if (options.credentials !== undefined) s3.credentials = options.credentials;
  if (options.maxSockets !== undefined) s3.maxSockets = options.maxSockets;
  if (options.maxAttempts !== undefined) s3.maxAttempts = options.maxAttempts;
  return new S3Store(s3);
}
