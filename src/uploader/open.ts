/**
 * Repository URL (`--repo`, PLOOPVAULT_REPO) -> ObjectStore:
 *   s3://BUCKET[/PREFIX]   S3; endpoint from options.endpoint or env AWS_ENDPOINT_URL
 *                          (path-style then), credentials and region from the SDK chain
 *   s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]
 *                          restic's form: the endpoint is part of the URL, so a cron line
 *                          or config file cannot lose it (--endpoint, if also given, must agree)
 *   file://PATH            local directory (file:///abs/path or file://relative/path)
 *   PATH                   local directory; a path that looks like a URL of another kind
 *                          ("s3:/...", "sftp:...", "http://...") is refused rather than
 *                          created as a directory of that name (write ./NAME for such a directory)
 *
 * S3 retry and timeout settings (docs/fault-tolerance.md), from the environment unless
 * given as options: AWS_MAX_ATTEMPTS and AWS_RETRY_MODE (the SDK's own names),
 * PLOOPVAULT_S3_CONNECT_TIMEOUT_MS, PLOOPVAULT_S3_IDLE_TIMEOUT_MS,
 * PLOOPVAULT_S3_REQUEST_TIMEOUT_MS, PLOOPVAULT_S3_RETRY_BUDGET_MS; and
 * PLOOPVAULT_S3_DIRECT=0 to send every request through the AWS SDK (s3-direct.ts).
 */
import { fileURLToPath } from "node:url";
import { errorLine, UsageError } from "../errors.js";
import { LocalDirectoryStore } from "./local.js";
import type { S3StoreOptions } from "./s3.js";
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
  /** S3 attempts per request (default env AWS_MAX_ATTEMPTS, else 6). */
  maxAttempts?: number;
  /** Default env AWS_RETRY_MODE, else "adaptive". */
  retryMode?: "standard" | "adaptive";
  connectionTimeoutMs?: number;
  idleTimeoutMs?: number;
  requestTimeoutMs?: number;
  retryBudgetMs?: number;
}

/** A positive integer from the environment, or undefined; a bad value is a usage error naming the variable. */
function envInt(name: string, min: number): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === "") return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`environment variable ${name} must be an integer >= ${min}, got "${raw}"`);
  return n;
}

function envRetryMode(): "standard" | "adaptive" | undefined {
  const raw = process.env.AWS_RETRY_MODE;
  if (raw === undefined || raw.trim() === "") return undefined;
  if (raw === "standard" || raw === "adaptive") return raw;
  throw new UsageError(`environment variable AWS_RETRY_MODE must be "standard" or "adaptive", got "${raw}"`);
}

export type ParsedRepoUrl = { kind: "s3"; bucket: string; prefix: string; endpoint?: string } | { kind: "local"; path: string };

const BUCKET = /^[a-z0-9][a-z0-9.\-_]{1,254}$/i;

const FORMS = "s3://BUCKET[/PREFIX], s3:http://HOST:PORT/BUCKET[/PREFIX], file://PATH or a directory path";

function parseBucketAndPrefix(url: string, rest: string): { bucket: string; prefix: string } {
  const slash = rest.indexOf("/");
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = (slash < 0 ? "" : rest.slice(slash + 1)).replace(/^\/+|\/+$/g, "");
  if (!BUCKET.test(bucket)) throw new UsageError(`invalid repository URL "${url}": "${bucket}" is not a valid bucket name (${FORMS})`);
  if (/[?#]/.test(rest)) throw new UsageError(`invalid repository URL "${url}": no query or fragment allowed (${FORMS})`);
  if (prefix.split("/").some((s) => s === "." || s === ".." || (s === "" && prefix !== ""))) {
    throw new UsageError(`invalid repository URL "${url}": bad prefix "${prefix}"`);
  }
  return { bucket, prefix };
}

export function parseRepoUrl(url: string): ParsedRepoUrl {
  if (url.trim() === "") throw new UsageError("empty repository URL");
  const endpointForm = /^s3:(https?):\/\/([^/?#]+)\/(.*)$/i.exec(url);
  if (endpointForm) {
    const endpoint = `${endpointForm[1]!.toLowerCase()}://${endpointForm[2]!}`;
    try {
      new URL(endpoint);
    } catch {
      throw new UsageError(`invalid repository URL "${url}": "${endpointForm[2]}" is not a host[:port]`);
    }
    return { kind: "s3", ...parseBucketAndPrefix(url, endpointForm[3]!), endpoint };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === "s3") return { kind: "s3", ...parseBucketAndPrefix(url, url.slice("s3://".length)) };
  if (scheme === "file") {
    let path: string;
    if (url.startsWith("file:///")) {
      try {
        path = fileURLToPath(url);
      } catch (error) {
        throw new UsageError(`invalid repository URL "${url}": ${errorLine(error)}`);
      }
    } else {
      // file://relative/path or file://host/path: we take everything after "file://" as a path
      path = decodeURIComponent(url.slice("file://".length));
    }
    if (path === "") throw new UsageError(`invalid repository URL "${url}": no path`);
    return { kind: "local", path };
  }
  if (scheme !== undefined) throw new UsageError(`unsupported repository URL "${url}": use ${FORMS}`);
  // "s3:http:/host/..." (one slash lost), "sftp:host:/path", "rest:http://...": a URL of
  // some kind, never meant as a directory named like that
  const lookalike = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  if (lookalike !== undefined) {
    throw new UsageError(
      `repository "${url}" looks like a URL ("${lookalike}:"), not a directory: use ${FORMS} (write ./${url} for a local directory of that name)`,
    );
  }
  return { kind: "local", path: url };
}

/** Async because the AWS SDK (~0.1 s and ~25 MB to load) is imported only for s3:// URLs. */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<ObjectStore> {
  const parsed = parseRepoUrl(url);
  if (parsed.kind === "local") return new LocalDirectoryStore(parsed.path);
  const given = options.endpoint ?? (process.env.AWS_ENDPOINT_URL || undefined);
  if (parsed.endpoint !== undefined && given !== undefined && given.replace(/\/+$/, "") !== parsed.endpoint) {
    throw new UsageError(`repository URL "${url}" names the endpoint ${parsed.endpoint}, but --endpoint / AWS_ENDPOINT_URL says ${given}: give one of them`);
  }
  const endpoint = parsed.endpoint ?? given;
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
  const settings: Pick<S3StoreOptions, "maxAttempts" | "retryMode" | "connectionTimeoutMs" | "idleTimeoutMs" | "requestTimeoutMs" | "retryBudgetMs"> = {
    maxAttempts: options.maxAttempts ?? envInt("AWS_MAX_ATTEMPTS", 1),
    retryMode: options.retryMode ?? envRetryMode(),
    connectionTimeoutMs: options.connectionTimeoutMs ?? envInt("PLOOPVAULT_S3_CONNECT_TIMEOUT_MS", 1),
    idleTimeoutMs: options.idleTimeoutMs ?? envInt("PLOOPVAULT_S3_IDLE_TIMEOUT_MS", 1),
    requestTimeoutMs: options.requestTimeoutMs ?? envInt("PLOOPVAULT_S3_REQUEST_TIMEOUT_MS", 1),
    retryBudgetMs: options.retryBudgetMs ?? envInt("PLOOPVAULT_S3_RETRY_BUDGET_MS", 0),
  };
  for (const [name, value] of Object.entries(settings)) if (value !== undefined) (s3 as unknown as Record<string, unknown>)[name] = value;
  const direct = process.env.PLOOPVAULT_S3_DIRECT;
  if (direct !== undefined && direct !== "") {
    if (direct !== "0" && direct !== "1") throw new UsageError(`PLOOPVAULT_S3_DIRECT=${JSON.stringify(direct).slice(0, 40)}: use 0 or 1`);
    s3.direct = direct === "1";
  }
  const { S3Store } = await import("./s3.js");
  return new S3Store(s3);
}
