/**
 * A repository in an S3 bucket (AWS or any S3-compatible server: Ceph RGW, MinIO...),
 * under an optional key prefix.
 *
 * - put: one PutObject with the whole body (S3 PUTs are atomic); ifAbsent sends
 *   `If-None-Match: *` and maps 412 to kind "exists". Integrity on the wire is covered by
 *   SigV4's signed payload SHA-256, so no extra checksums are sent
 *   (requestChecksumCalculation 'WHEN_REQUIRED': the SDK's default aws-chunked trailing
 *   checksums are refused by RGW and others).
 * - list: ListObjectsV2 pages of 1000 (url-encoded keys, so any key survives the XML).
 * - delete: DeleteObjects in batches of 1000, a few batches at once; per-key errors fail.
 * - errors: StoreError kinds (see s3StoreError); retries are the SDK's (standard mode,
 *   `maxAttempts`), with a connection timeout so an unreachable endpoint fails in seconds.
 */
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { StoreError, validateKey, validatePrefix, type ObjectInfo, type ObjectStore, type PutOptions, type StoreErrorKind } from "./store.js";

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket ("" or e.g. "team/repo"); leading/trailing '/' are ignored. */
  prefix?: string;
  /** Endpoint URL of an S3-compatible server; path-style addressing is then used. */
  endpoint?: string;
  /** Default: the SDK's chain (AWS_REGION, profile); with an endpoint, falls back to us-east-1. */
  region?: string;
  /** Default: the SDK's default credential chain (env, profile, SSO, IMDS...). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Default: true when an endpoint is given. */
  forcePathStyle?: boolean;
  /** Sockets per client (upper bound for useful upload concurrency). Default 32. */
  maxSockets?: number;
  /** Attempts per request including the first (SDK retry strategy). Default 4. */
  maxAttempts?: number;
  /** SDK retry mode. Default "standard". */
  retryMode?: "standard" | "adaptive";
  /** Milliseconds to establish a TCP connection. Default 2000 (a dead host fails in ~8 s with 4 attempts). */
  connectionTimeoutMs?: number;
  /** Milliseconds a socket may stay idle during a request before it fails. Default 30000. */
  socketTimeoutMs?: number;
}

const DELETE_BATCH = 1000;
const DELETE_PARALLEL_BATCHES = 4;

const AUTH_CODES = new Set([
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "AccessDenied",
  "ExpiredToken",
  "InvalidToken",
  "TokenRefreshRequired",
  "AllAccessDisabled",
  "AccountProblem",
  "InvalidSecurity",
  "RequestTimeTooSkewed",
  "CredentialsProviderError",
  "UserSuspended",
]);
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ECONNABORTED",
  "EHOSTDOWN",
  "ENETDOWN",
]);

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  ETIMEDOUT: "timed out",
  TimeoutError: "timed out",
  RequestTimeout: "timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
};

/** For the HTTP handler: drop its "socket usage at capacity" hint (callers queue on purpose). */
const handlerLogger = {
  debug: (): void => {},
  info: (): void => {},
  warn: (message: unknown): void => {
    if (!String(message).includes("socket usage at capacity")) console.warn(message);
  },
  error: (message: unknown): void => console.error(message),
};

interface SdkErrorShape {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  errors?: unknown[];
  $metadata?: { httpStatusCode?: number; attempts?: number };
  $response?: { statusCode?: number };
}

function shape(error: unknown): SdkErrorShape {
  return typeof error === "object" && error !== null ? (error as SdkErrorShape) : {};
}

function httpStatus(error: unknown): number | undefined {
  const e = shape(error);
  return e.$metadata?.httpStatusCode ?? e.$response?.statusCode;
}

/** The network error code of an error, looking into AggregateErrors (happy eyeballs). */
function networkCode(error: unknown): string | undefined {
  const e = shape(error);
  if (e.code !== undefined && NETWORK_CODES.has(e.code)) return e.code;
  for (const inner of e.errors ?? []) {
    const c = networkCode(inner);
    if (c !== undefined) return c;
  }
  const cause = (error as { cause?: unknown } | null)?.cause;
  if (cause !== undefined && cause !== error) return networkCode(cause);
  return undefined;
}

function errorCode(error: unknown): string {
  const e = shape(error);
  return e.Code ?? e.name ?? e.code ?? "Error";
}

/** Temporarily set the SDK's own opt-out for its "node >= 22 soon" NodeVersionSupportWarning. */
function withoutNodeVersionWarning<T>(make: () => T): T {
  const name = "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED";
  const previous = process.env[name];
  process.env[name] = "true";
  try {
    return make();
  } finally {
    if (previous === undefined) delete process.env[name];
    else process.env[name] = previous;
  }
}

function decodeListKey(key: string, urlEncoded: boolean): string {
  return urlEncoded ? decodeURIComponent(key.replace(/\+/g, " ")) : key;
}

export class S3Store implements ObjectStore {
  readonly location: string;
  readonly bucket: string;
  /** "" or "some/prefix/" */
  private readonly keyPrefix: string;
  private readonly endpointName: string;
  private readonly client: S3Client;
  private readonly maxAttempts: number;
  private readonly hasEndpoint: boolean;
  private readonly region: string | undefined;
  /** Set once HeadBucket confirmed the bucket (tells a 404 HEAD of a key from a missing bucket). */
  private bucketVerified = false;

  constructor(options: S3StoreOptions) {
    if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(options.bucket)) {
      throw new StoreError("io", `invalid S3 bucket name "${options.bucket}"`);
    }
    this.bucket = options.bucket;
    const prefix = (options.prefix ?? "").replace(/^\/+|\/+$/g, "");
    if (prefix !== "") validatePrefix(`${prefix}/`);
    this.keyPrefix = prefix === "" ? "" : `${prefix}/`;
    this.location = `s3://${this.bucket}${prefix === "" ? "" : `/${prefix}`}`;
    this.hasEndpoint = options.endpoint !== undefined && options.endpoint !== "";
    this.endpointName = this.hasEndpoint ? options.endpoint! : "AWS S3";
    this.maxAttempts = options.maxAttempts ?? 4;
    const maxSockets = options.maxSockets ?? 32;
    this.region =
      options.region ?? (this.hasEndpoint ? (process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || "us-east-1") : undefined);
    const config: S3ClientConfig = {
      maxAttempts: this.maxAttempts,
      retryMode: options.retryMode ?? "standard",
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      forcePathStyle: options.forcePathStyle ?? this.hasEndpoint,
      followRegionRedirects: !this.hasEndpoint,
      requestHandler: {
        connectionTimeout: options.connectionTimeoutMs ?? 2000,
        socketTimeout: options.socketTimeoutMs ?? 30_000,
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
        logger: handlerLogger,
      },
    };
    if (this.hasEndpoint) config.endpoint = options.endpoint!;
    if (this.region !== undefined) config.region = this.region;
    if (options.credentials !== undefined) config.credentials = options.credentials;
    try {
      this.client = withoutNodeVersionWarning(() => new S3Client(config));
    } catch (error) {
      throw new StoreError("io", `cannot set up the S3 client for ${this.location} at ${this.endpointName}: ${errorMessage(error)}`, { cause: error });
    }
  }

  private objectKey(key: string): string {
    validateKey(key);
    return `${this.keyPrefix}${key}`;
  }

  /** Turn an SDK error into a StoreError naming the operation, object and endpoint. */
  private storeError(error: unknown, action: string, key?: string): StoreError {
    return s3StoreError(error, {
      action,
      what: key === undefined ? this.location : `${this.location}/${key}`,
      bucket: this.bucket,
      endpoint: this.endpointName,
      ...(key === undefined ? {} : { key }),
    });
  }

  async ensureContainer(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      this.bucketVerified = true;
      return;
    } catch (error) {
      if (httpStatus(error) !== 404) throw this.storeError(error, "check bucket");
    }
    try {
      const location = !this.hasEndpoint && this.region !== undefined && this.region !== "us-east-1" ? this.region : undefined;
      await this.client.send(
        new CreateBucketCommand({
          Bucket: this.bucket,
          ...(location === undefined ? {} : { CreateBucketConfiguration: { LocationConstraint: location as never } }),
        }),
      );
    } catch (error) {
      if (errorCode(error) !== "BucketAlreadyOwnedByYou") {
        if (errorCode(error) === "BucketAlreadyExists") {
          throw new StoreError("io", `cannot create bucket ${this.bucket} at ${this.endpointName}: the name is taken by another account`, { cause: error });
        }
        throw this.storeError(error, "create bucket");
      }
    }
    this.bucketVerified = true;
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    const objectKey = this.objectKey(key);
    const buffer = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    for (let conflict = 0; ; conflict++) {
      try {
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: objectKey,
            Body: buffer,
            ContentLength: buffer.length,
            ContentType: "application/octet-stream",
            ...(options?.ifAbsent ? { IfNoneMatch: "*" } : {}),
          }),
        );
        return;
      } catch (error) {
        const status = httpStatus(error);
        if (options?.ifAbsent) {
          if (status === 412 || errorCode(error) === "PreconditionFailed") {
            throw new StoreError("exists", `object ${key} already exists in ${this.location}`, { key, cause: error });
          }
          // AWS: a concurrent conditional write to the same key is in flight; try again
          if (status === 409 && errorCode(error) === "ConditionalRequestConflict" && conflict < 5) {
            await new Promise((r) => setTimeout(r, 50 * 2 ** conflict));
            continue;
          }
          if (status === 501) {
            throw new StoreError("io", `${this.endpointName} does not support conditional writes (If-None-Match), needed for ${this.location}/${key}`, {
              key,
              cause: error,
            });
          }
        }
        throw this.storeError(error, "write", key);
      }
    }
  }

  async get(key: string): Promise<Buffer> {
    return this.fetch(key, undefined);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new StoreError("io", `invalid range offset=${offset} length=${length} for ${key}`, { key });
    }
    if (length === 0) {
      // no such thing as an empty HTTP range; still report a missing object
      if ((await this.stat(key)) === null) throw new StoreError("not-found", `object ${key} not found in ${this.location}`, { key });
      return Buffer.alloc(0);
    }
    return this.fetch(key, { offset, length });
  }

  /** GetObject (optionally ranged), reading the whole body; body read failures are retried. */
  private async fetch(key: string, range: { offset: number; length: number } | undefined): Promise<Buffer> {
    const objectKey = this.objectKey(key);
    for (let attempt = 1; ; attempt++) {
      let response: GetObjectCommandOutput;
      try {
        response = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: objectKey,
            ...(range === undefined ? {} : { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` }),
          }),
        );
      } catch (error) {
        if (range !== undefined && (httpStatus(error) === 416 || errorCode(error) === "InvalidRange")) {
          return Buffer.alloc(0); // offset at or past the end of an existing object
        }
        if (httpStatus(error) === 404 && errorCode(error) === "NoSuchKey") {
          throw new StoreError("not-found", `object ${key} not found in ${this.location}`, { key, cause: error });
        }
        throw this.storeError(error, "read", key);
      }
      try {
        if (response.Body === undefined) throw new Error("response has no body");
        const bytes = await response.Body.transformToByteArray();
        const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        if (response.ContentLength !== undefined && body.length !== response.ContentLength) {
          if (attempt < this.maxAttempts) continue;
          throw new StoreError(
            "io",
            `cannot read ${this.location}/${key} at ${this.endpointName}: body cut short (${body.length} of ${response.ContentLength} bytes), ${attempt} attempts`,
            { key },
          );
        }
        if (range !== undefined && body.length > range.length) return body.subarray(0, range.length); // server ignored the range end
        return body;
      } catch (error) {
        if (error instanceof StoreError) throw error;
        if (attempt < this.maxAttempts && networkCode(error) !== undefined) continue;
        throw this.storeError(error, "read", key);
      }
    }
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      const info: ObjectInfo = { key, size: response.ContentLength ?? 0 };
      if (response.LastModified !== undefined) info.modified = response.LastModified;
      return info;
    } catch (error) {
      if (httpStatus(error) === 404) {
        // a HEAD response has no body: a missing bucket looks like a missing key
        await this.verifyBucket(error);
        return null;
      }
      throw this.storeError(error, "stat", key);
    }
  }

  private async verifyBucket(cause: unknown): Promise<void> {
    if (this.bucketVerified) return;
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      if (httpStatus(error) === 404) {
        throw new StoreError("no-container", `bucket ${this.bucket} does not exist at ${this.endpointName}`, { cause: cause ?? error });
      }
      throw this.storeError(error, "check bucket");
    }
    this.bucketVerified = true;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: `${this.keyPrefix}${prefix}`,
            MaxKeys: 1000,
            EncodingType: "url",
            ...(token === undefined ? {} : { ContinuationToken: token }),
          }),
        );
      } catch (error) {
        throw this.storeError(error, "list", prefix === "" ? undefined : prefix);
      }
      const urlEncoded = page.EncodingType === "url";
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        const full = decodeListKey(object.Key, urlEncoded);
        if (!full.startsWith(this.keyPrefix)) continue;
        const info: ObjectInfo = { key: full.slice(this.keyPrefix.length), size: object.Size ?? 0 };
        if (object.LastModified !== undefined) info.modified = object.LastModified;
        yield info;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated && token === undefined) {
        throw new StoreError("io", `listing ${this.location}/${prefix} at ${this.endpointName}: truncated page without a continuation token`);
      }
    } while (token !== undefined);
  }

  async delete(keys: readonly string[]): Promise<void> {
    const objectKeys = [...new Set(keys)].map((key) => this.objectKey(key));
    const batches: string[][] = [];
    for (let i = 0; i < objectKeys.length; i += DELETE_BATCH) batches.push(objectKeys.slice(i, i + DELETE_BATCH));
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < batches.length) await this.deleteBatch(batches[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(DELETE_PARALLEL_BATCHES, batches.length) }, worker));
  }

  private async deleteBatch(objectKeys: string[]): Promise<void> {
    let response;
    try {
      response = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: objectKeys.map((Key) => ({ Key })), Quiet: true },
        }),
      );
    } catch (error) {
      throw this.storeError(error, "delete objects in", undefined);
    }
    const failures = (response.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
    if (failures.length > 0) {
      const first = failures[0]!;
      const key = (first.Key ?? "").slice(this.keyPrefix.length);
      const code = first.Code ?? "Error";
      const kind: StoreErrorKind = AUTH_CODES.has(code) ? "auth" : "io";
      throw new StoreError(
        kind,
        `cannot delete ${failures.length} of ${objectKeys.length} objects in ${this.location} at ${this.endpointName}, e.g. ${key}: ${code}${first.Message ? ` (${first.Message})` : ""}`,
        { key },
      );
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message.split("\n")[0] ?? error.name;
  return String(error);
}

/**
 * Map an AWS SDK error to a StoreError:
 * NoSuchKey/404 -> not-found; NoSuchBucket -> no-container; InvalidAccessKeyId,
 * SignatureDoesNotMatch, AccessDenied, 403, missing credentials -> auth; connection
 * refused, DNS failure, timeouts -> unreachable; anything else (5xx after retries...) -> io.
 */
export function s3StoreError(
  error: unknown,
  context: { action: string; what: string; bucket: string; endpoint: string; key?: string },
): StoreError {
  if (error instanceof StoreError) return error;
  const status = httpStatus(error);
  const code = errorCode(error);
  const options = context.key === undefined ? { cause: error } : { key: context.key, cause: error };
  const detail = errorMessage(error);
  if (code === "NoSuchBucket") {
    return new StoreError("no-container", `bucket ${context.bucket} does not exist at ${context.endpoint}`, options);
  }
  if (code === "NoSuchKey") {
    return new StoreError("not-found", `cannot ${context.action} ${context.what}: not found`, options);
  }
  if (AUTH_CODES.has(code) || status === 401 || status === 403) {
    const why = code === "CredentialsProviderError" ? `no S3 credentials found (${detail})` : `access denied by ${context.endpoint} (${code}${detail && detail !== code ? `: ${detail}` : ""})`;
    return new StoreError("auth", `cannot ${context.action} ${context.what}: ${why}`, options);
  }
  const net = networkCode(error);
  if (net !== undefined || code === "TimeoutError" || code === "RequestTimeout" || code === "AbortError") {
    const attempts = shape(error).$metadata?.attempts;
    const why = NETWORK_REASONS[net ?? code] ?? net ?? code;
    return new StoreError(
      "unreachable",
      `cannot ${context.action} ${context.what}: S3 endpoint ${context.endpoint} unreachable (${why}${attempts && attempts > 1 ? `, ${attempts} attempts` : ""})`,
      options,
    );
  }
  if (status === 404) {
    // S3 servers say NoSuchKey/NoSuchBucket; a bare 404 comes from something else (a proxy, a web server)
    return new StoreError("io", `cannot ${context.action} ${context.what}: ${context.endpoint} answered HTTP 404 without an S3 error code (is it an S3 endpoint?)`, options);
  }
  if (/region is missing/i.test(detail)) {
    return new StoreError("io", `cannot ${context.action} ${context.what}: no AWS region configured (set AWS_REGION)`, options);
  }
  return new StoreError("io", `cannot ${context.action} ${context.what} at ${context.endpoint}: ${code}${status ? ` (HTTP ${status})` : ""}${detail && detail !== code ? `: ${detail}` : ""}`, options);
}
