/**
 * A repository in an S3 bucket (AWS or any S3-compatible server: Ceph RGW, MinIO...),
 * under an optional key prefix.
 *
 * - put: one PutObject with the whole body (S3 PUTs are atomic), or from
 *   `multipartThresholdBytes` on (manifests of large disks: ~150 MB for 1 TiB) a managed
 *   multipart upload (@aws-sdk/lib-storage): parts of `multipartPartBytes` sent 4 at a
 *   time, each retried on its own, the upload aborted on failure so no parts are left
 *   behind; the object appears only when CompleteMultipartUpload succeeds. ifAbsent sends
 *   `If-None-Match: *` and maps 412 to kind "exists"; ifMatch sends `If-Match: <etag>`
 *   and maps 412 (and 404: object gone) to kind "changed" (AWS S3 since 2024, Ceph RGW;
 *   a 412 to the quoted ETag is retried once unquoted, which is what RGW 16.2 compares).
 *   Integrity on the wire is covered by SigV4's signed payload SHA-256, so no extra checksums are sent
 *   (requestChecksumCalculation 'WHEN_REQUIRED': the SDK's default aws-chunked trailing
 *   checksums are refused by RGW and others).
 * - list: ListObjectsV2 pages of 1000 (url-encoded keys, so any key survives the XML).
 * - delete: DeleteObjects in batches of 1000, a few batches at once; per-key errors fail.
 * - errors: StoreError kinds (see s3StoreError).
 *
 * Faults (docs/fault-tolerance.md): every request goes through the SDK's retry middleware
 * with our own strategy (S3RetryStrategy): `maxAttempts` attempts, exponential backoff
 * with full jitter (base 100 ms, cap 5 s), a longer one for SlowDown/503/429 (base 1 s,
 * cap 20 s; in "adaptive" mode a throttled client also holds back new requests), and no
 * retry that would start after `retryBudgetMs`. Every attempt has a connection timeout, an
 * idle timeout (no byte either way for `idleTimeoutMs`: a stalled server is abandoned and
 * the request retried) and an overall `requestTimeoutMs` until the response headers.
 * GET bodies are read whole and checked against Content-Length; a body cut short, reset or
 * stalled is fetched again. A conditional put (ifAbsent or ifMatch) that the server may
 * have applied before the connection broke is recognised: when a retry is refused (412),
 * or the put fails for good, the stored object is compared with ours, and an identical one
 * means our earlier attempt landed (manifests, configs and lock objects are unique).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { forEachConcurrent } from "../util/limiter.js";
import { createHash } from "node:crypto";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { Upload } from "@aws-sdk/lib-storage";
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  GetObjectRetentionCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import {
  StoreError,
  validateKey,
  validatePrefix,
  type BucketState,
  type ObjectInfo,
  type ObjectStore,
  type ObjectVersion,
  type PutOptions,
  type Retention,
  type StoreErrorKind,
  type VersionRead,
} from "./store.js";
import { type DirectOutcome, type DirectRequest, type DirectTarget, directEndpoint, directRequest } from "./s3-direct.js";

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
  /** Attempts per request including the first. Default 6. */
  maxAttempts?: number;
  /**
   * "standard": each request backs off on its own. "adaptive" (default): a throttling
   * answer (SlowDown, 503, 429) also delays every new request of this client until its
   * backoff is over, so a throttled server sees the whole client slow down.
   */
  retryMode?: "standard" | "adaptive";
  /** Milliseconds to establish a TCP connection. Default 2000. */
  connectionTimeoutMs?: number;
  /** Milliseconds a request may go without a byte sent or received before it is abandoned (and retried). Default 20000. */
  idleTimeoutMs?: number;
  /** @deprecated alias of idleTimeoutMs */
  socketTimeoutMs?: number;
  /** Milliseconds from sending a request to its response headers (upload included) before it is abandoned. Default 300000. */
  requestTimeoutMs?: number;
  /** No retry starts later than this many milliseconds after an operation's first attempt. Default 300000. */
  retryBudgetMs?: number;
  /** Objects of at least this many bytes are sent as multipart uploads. Default 64 MiB. */
  multipartThresholdBytes?: number;
  /** Part size of multipart uploads, >= 5 MiB (the S3 minimum). Default 16 MiB. */
  multipartPartBytes?: number;
  /**
   * Whole-object GETs and plain PUTs signed and sent without the SDK (s3-direct.ts), with
   * an endpoint and path-style addressing. Default true; env PLOOPVAULT_S3_DIRECT=0 turns
   * it off.
   */
  direct?: boolean;
}

export const S3_DEFAULTS = {
  maxAttempts: 6,
  retryMode: "adaptive" as const,
  connectionTimeoutMs: 2000,
  idleTimeoutMs: 20_000,
  requestTimeoutMs: 300_000,
  retryBudgetMs: 300_000,
  multipartThresholdBytes: 64 << 20,
  multipartPartBytes: 16 << 20,
  /** Parts in flight per multipart upload. */
  multipartConcurrency: 4,
};

/** Backoff of transient failures (5xx, resets, timeouts): full jitter over base * 2^n, capped. */
const TRANSIENT_BASE_MS = 100;
const TRANSIENT_CAP_MS = 5_000;
/** Backoff of throttling (SlowDown, 503, 429): longer. */
const THROTTLE_BASE_MS = 1_000;
const THROTTLE_CAP_MS = 20_000;

type RetryStrategyV2 = Extract<NonNullable<S3ClientConfig["retryStrategy"]>, { acquireInitialRetryToken: unknown }>;
type RetryErrorInfo = Parameters<RetryStrategyV2["refreshRetryTokenForRetry"]>[1];

class RetryToken {
  constructor(
    private readonly retryCount: number,
    private readonly delay: number,
    readonly started: number,
  ) {}
  getRetryCount(): number {
    return this.retryCount;
  }
  getRetryDelay(): number {
    return this.delay;
  }
}

/** Full jitter: uniformly random in [0, min(cap, base * 2^retry)], but at least base/2 for throttling. */
export function backoffDelay(retry: number, throttled: boolean, random: () => number = Math.random): number {
  const base = throttled ? THROTTLE_BASE_MS : TRANSIENT_BASE_MS;
  const cap = throttled ? THROTTLE_CAP_MS : TRANSIENT_CAP_MS;
  const ceiling = Math.min(cap, base * 2 ** Math.min(retry, 30));
  const floor = throttled ? base / 2 : 0;
  return Math.floor(floor + random() * Math.max(0, ceiling - floor));
}

/**
 * The SDK retry strategy (RetryStrategyV2) of an S3Store. Retries what the SDK classifies
 * as transient (5xx, connection resets, timeouts) or throttling, nothing else; the SDK
 * middleware sleeps the delay of the token we return. No retry-capacity bucket: a backup
 * must finish if the server lets it, and the time budget bounds the damage.
 */
export class S3RetryStrategy implements RetryStrategyV2 {
  readonly mode: string;
  /** adaptive: no new request starts before this time (ms since epoch). */
  private holdUntil = 0;
  constructor(
    private readonly maxAttemptsValue: number,
    mode: "standard" | "adaptive",
    private readonly budgetMs: number,
  ) {
    this.mode = mode;
  }

  async acquireInitialRetryToken(_scope: string): Promise<RetryToken> {
    if (this.mode === "adaptive") {
      const wait = this.holdUntil - Date.now();
      if (wait > 0) await sleep(wait);
    }
    return new RetryToken(0, 0, Date.now());
  }

  async refreshRetryTokenForRetry(token: RetryToken, errorInfo: RetryErrorInfo): Promise<RetryToken> {
    const status = httpStatus(errorInfo.error);
    const throttled = errorInfo.errorType === "THROTTLING" || status === 503 || status === 429;
    if (!throttled && errorInfo.errorType !== "TRANSIENT") throw new Error("not a retryable error");
    const attempts = token.getRetryCount() + 1;
    if (attempts >= this.maxAttemptsValue) throw new Error("out of attempts");
    let delay = backoffDelay(token.getRetryCount(), throttled);
    const hint = errorInfo.retryAfterHint;
    if (hint instanceof Date) delay = Math.max(delay, Math.min(hint.getTime() - Date.now(), THROTTLE_CAP_MS));
    const now = Date.now();
    if (now + delay - token.started > this.budgetMs) throw new Error("out of time");
    if (throttled && this.mode === "adaptive") this.holdUntil = Math.max(this.holdUntil, now + delay);
    return new RetryToken(attempts, delay, token.started);
  }

  recordSuccess(_token: RetryToken): void {}

  async maxAttempts(): Promise<number> {
    return this.maxAttemptsValue;
  }
}

const DELETE_BATCH = 1000;
/** How errors name the endpoint when none was given (the SDK's regional AWS endpoint). */
const AWS_DEFAULT_ENDPOINT = "AWS S3";
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

/** The SDK's throttling error codes (@smithy/service-error-classification). */
const THROTTLING_CODES = new Set([
  "BandwidthLimitExceeded",
  "EC2ThrottledException",
  "LimitExceededException",
  "PriorRequestNotComplete",
  "ProvisionedThroughputExceededException",
  "RequestLimitExceeded",
  "RequestThrottled",
  "RequestThrottledException",
  "SlowDown",
  "ThrottledException",
  "Throttling",
  "ThrottlingException",
  "TooManyRequestsException",
  "TransactionInProgressException",
]);
/** The SDK's transient errors: these statuses and codes, and connections reset, refused or timed out. */
const TRANSIENT_STATUSES = new Set([500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(["TimeoutError", "RequestTimeout", "RequestTimeoutException"]);
const TRANSIENT_NETWORK_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

/**
 * A failed direct request as the SDK would have reported it: an error shaped like the
 * SDK's (name and Code, $metadata with the status and the attempts so far) and its class
 * for the retry strategy, the way the SDK classifies its own.
 */
function directFailure(outcome: Exclude<DirectOutcome, { kind: "ok" }>, attempts: number): { errorType: string; error: Error; retryAfterHint?: Date } {
  const $metadata = { attempts };
  switch (outcome.kind) {
    case "status": {
      const code = outcome.code !== "" ? outcome.code : outcome.status === 404 ? "NotFound" : "Unknown";
      const error = Object.assign(new Error(outcome.message !== "" ? outcome.message : code), {
        name: code,
        Code: code,
        $metadata: { ...$metadata, httpStatusCode: outcome.status },
      });
      const errorType =
        outcome.status === 429 || THROTTLING_CODES.has(code)
          ? "THROTTLING"
          : TRANSIENT_STATUSES.has(outcome.status) || TRANSIENT_CODES.has(code)
            ? "TRANSIENT"
            : outcome.status >= 500
              ? "SERVER_ERROR"
              : "CLIENT_ERROR";
      return { errorType, error, ...(outcome.retryAfter === undefined ? {} : { retryAfterHint: outcome.retryAfter }) };
    }
    case "network": {
      const error = Object.assign(outcome.error, { $metadata });
      const code = (outcome.error as { code?: string }).code;
      return { errorType: code !== undefined && TRANSIENT_NETWORK_CODES.has(code) ? "TRANSIENT" : "CLIENT_ERROR", error };
    }
    case "timeout":
      return { errorType: "TRANSIENT", error: Object.assign(new Error("request timed out"), { name: "TimeoutError", $metadata }) };
    case "short":
      return {
        errorType: "TRANSIENT",
        error: Object.assign(new Error(`body cut short (${outcome.received} bytes)`), { name: "ResponseBodyCutShort", $metadata }),
      };
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
  private readonly retryBudgetMs: number;
  private readonly hasEndpoint: boolean;
  private readonly region: string | undefined;
  /** Set once HeadBucket confirmed the bucket (tells a 404 HEAD of a key from a missing bucket). */
  private bucketVerified = false;
  private control: S3Store | null = null;
  private readonly multipartThresholdBytes: number;
  private readonly multipartPartBytes: number;
  /** The SDK requests' retry strategy, which direct requests share (attempts, backoff, adaptive hold-back). */
  private readonly retryStrategy: S3RetryStrategy;
  /** Where whole-object GETs and plain PUTs go without the SDK; null: through the SDK. */
  private readonly direct: DirectTarget | null;

  constructor(private readonly options: S3StoreOptions) {
    if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(options.bucket)) {
      throw new StoreError("io", `invalid S3 bucket name "${options.bucket}"`);
    }
    this.bucket = options.bucket;
    const prefix = (options.prefix ?? "").replace(/^\/+|\/+$/g, "");
    if (prefix !== "") validatePrefix(`${prefix}/`);
    this.keyPrefix = prefix === "" ? "" : `${prefix}/`;
    this.location = `s3://${this.bucket}${prefix === "" ? "" : `/${prefix}`}`;
    this.hasEndpoint = options.endpoint !== undefined && options.endpoint !== "";
    this.endpointName = this.hasEndpoint ? options.endpoint! : AWS_DEFAULT_ENDPOINT;
    this.maxAttempts = options.maxAttempts ?? S3_DEFAULTS.maxAttempts;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) throw new StoreError("io", `invalid S3 max attempts ${this.maxAttempts}`);
    this.retryBudgetMs = options.retryBudgetMs ?? S3_DEFAULTS.retryBudgetMs;
    this.multipartPartBytes = options.multipartPartBytes ?? S3_DEFAULTS.multipartPartBytes;
    this.multipartThresholdBytes = options.multipartThresholdBytes ?? S3_DEFAULTS.multipartThresholdBytes;
    if (!Number.isSafeInteger(this.multipartPartBytes) || this.multipartPartBytes < 5 << 20) {
      throw new StoreError("io", `invalid S3 multipart part size ${this.multipartPartBytes} (at least 5 MiB)`);
    }
    if (!Number.isSafeInteger(this.multipartThresholdBytes) || this.multipartThresholdBytes <= this.multipartPartBytes) {
      throw new StoreError("io", `invalid S3 multipart threshold ${this.multipartThresholdBytes} (more than one part of ${this.multipartPartBytes})`);
    }
    const maxSockets = options.maxSockets ?? 32;
    this.region = options.region ?? (this.hasEndpoint ? process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || "us-east-1" : undefined);
    const retryMode = options.retryMode ?? S3_DEFAULTS.retryMode;
    this.retryStrategy = new S3RetryStrategy(this.maxAttempts, retryMode, this.retryBudgetMs);
    const httpAgent = new HttpAgent({ keepAlive: true, maxSockets });
    const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets });
    const connectionTimeoutMs = options.connectionTimeoutMs ?? S3_DEFAULTS.connectionTimeoutMs;
    const idleTimeoutMs = options.idleTimeoutMs ?? options.socketTimeoutMs ?? S3_DEFAULTS.idleTimeoutMs;
    const requestTimeoutMs = options.requestTimeoutMs ?? S3_DEFAULTS.requestTimeoutMs;
    const pathStyle = options.forcePathStyle ?? this.hasEndpoint;
    const config: S3ClientConfig = {
      maxAttempts: this.maxAttempts,
      retryMode,
      retryStrategy: this.retryStrategy,
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      forcePathStyle: pathStyle,
      followRegionRedirects: !this.hasEndpoint,
      requestHandler: {
        connectionTimeout: connectionTimeoutMs,
        socketTimeout: idleTimeoutMs,
        requestTimeout: requestTimeoutMs,
        throwOnRequestTimeout: true,
        httpAgent,
        httpsAgent,
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
    const endpointUrl = this.hasEndpoint && pathStyle && options.direct !== false ? directEndpoint(options.endpoint!) : null;
    const client = this.client;
    this.direct =
      endpointUrl === null
        ? null
        : {
            endpoint: endpointUrl,
            bucket: this.bucket,
            region: this.region!,
            credentials: () => client.config.credentials(),
            agent: endpointUrl.protocol === "https:" ? httpsAgent : httpAgent,
            connectionTimeoutMs,
            idleTimeoutMs,
            requestTimeoutMs,
          };
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

  /** A GET whose every attempt brought fewer (or more) bytes than the response declared. */
  private bodyCutShort(key: string, received: number, declared: number | undefined, attempts: number): StoreError {
    const of = declared === undefined ? "" : ` of ${declared}`;
    return new StoreError("io", `cannot read ${this.location}/${key} at ${this.endpointName}: body cut short (${received}${of} bytes), ${attempts} attempts`, {
      key,
    });
  }

  async ensureContainer(options: { objectLock?: boolean } = {}): Promise<void> {
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
          ...(options.objectLock ? { ObjectLockEnabledForBucket: true } : {}),
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

  /**
   * Lock objects go through a client of their own: its own sockets, and its own retry
   * state, so neither uploads filling the sockets nor the adaptive hold-back after a
   * throttled data request delay a registration's refresh. Lock requests are small:
   * shorter timeouts and fewer attempts (a refresh that fails is retried by the lease).
   */
  controlChannel(): ObjectStore {
    this.control ??= new S3Store({
      ...this.options,
      maxSockets: 4,
      retryMode: "standard",
      maxAttempts: Math.min(3, this.maxAttempts),
      requestTimeoutMs: Math.min(30_000, this.options.requestTimeoutMs ?? S3_DEFAULTS.requestTimeoutMs),
      retryBudgetMs: Math.min(60_000, this.retryBudgetMs),
    });
    return this.control;
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<void> {
    if (options?.signal?.aborted) throw options.signal.reason;
    const objectKey = this.objectKey(key);
    const buffer = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    // conditional replacement is for small lock objects only
    if (buffer.length >= this.multipartThresholdBytes && options?.ifMatch === undefined) return this.putMultipart(key, objectKey, buffer, options);
    // a backup's chunks: no condition, no retention
    if (this.direct !== null && !options?.ifAbsent && options?.ifMatch === undefined && options?.retention === undefined) {
      await this.withDirectRetries(
        this.direct,
        {
          method: "PUT",
          objectKey,
          body: buffer,
          payloadSha256: createHash("sha256").update(buffer).digest("hex"),
          ...(options?.signal === undefined ? {} : { signal: options.signal }),
        },
        key,
      );
      return;
    }
    /** Set once an attempt failed in a way that may have left our object stored. */
    let mayHaveLanded = false;
    let ifMatch = options?.ifMatch;
    let contentMd5: string | undefined;
    for (let conflict = 0; ; conflict++) {
      try {
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: objectKey,
            Body: buffer,
            ContentLength: buffer.length,
            ContentType: "application/octet-stream",
            ...(options?.retention === undefined
              ? {}
              : {
                  ObjectLockMode: options.retention.mode === "compliance" ? ("COMPLIANCE" as const) : ("GOVERNANCE" as const),
                  ObjectLockRetainUntilDate: options.retention.until,
                  // AWS requires an integrity header on PUTs with a retention
                  ContentMD5: (contentMd5 ??= createHash("md5").update(buffer).digest("base64")),
                }),
            ...(options?.ifAbsent ? { IfNoneMatch: "*" } : {}),
            ...(ifMatch !== undefined ? { IfMatch: ifMatch } : {}),
          }),
          options?.signal === undefined ? {} : { abortSignal: options.signal },
        );
        return;
      } catch (error) {
        if (options?.signal?.aborted) throw options.signal.reason;
        if (!options?.ifAbsent && options?.ifMatch === undefined) throw this.storeError(error, "write", key);
        const status = httpStatus(error);
        if ((shape(error).$metadata?.attempts ?? 1) > 1) mayHaveLanded = true;
        const refused = status === 412 || errorCode(error) === "PreconditionFailed";
        if (options.ifMatch !== undefined && (refused || status === 404 || errorCode(error) === "NoSuchKey")) {
          // Ceph RGW 16.2 compares a PUT's If-Match with the unquoted ETag (AWS takes the
          // quoted one, as HEAD returns it): a real mismatch fails both ways
          if (status === 412 && ifMatch !== undefined && /^".*"$/.test(ifMatch)) {
            ifMatch = ifMatch.slice(1, -1);
            continue;
          }
          const changed = new StoreError("changed", `object ${key} in ${this.location} was changed or removed by another writer (conditional write refused)`, {
            key,
            cause: error,
          });
          return this.refusedUnlessOurs(key, buffer, mayHaveLanded, changed);
        }
        if (options.ifAbsent && refused) return this.refusedUnlessOurs(key, buffer, mayHaveLanded, this.existsError(key, error));
        // AWS: a concurrent conditional write to the same key is in flight; try again
        if (status === 409 && errorCode(error) === "ConditionalRequestConflict" && conflict < 5) {
          await sleep(50 * 2 ** conflict);
          continue;
        }
        if (status === 501) {
          const header = options.ifMatch !== undefined ? "If-Match" : "If-None-Match";
          throw new StoreError("io", `${this.endpointName} does not support conditional writes (${header}), needed for ${this.location}/${key}`, {
            key,
            cause: error,
          });
        }
        return this.failedUnlessLanded(key, buffer, error);
      }
    }
  }

  private existsError(key: string, cause?: unknown): StoreError {
    return new StoreError("exists", `object ${key} already exists in ${this.location}`, cause === undefined ? { key } : { key, cause });
  }

  /**
   * A conditional write was refused (412): it counts as done if the object holds our body
   * and an earlier attempt of ours may have landed before its answer was lost (the keys
   * written conditionally are unique, so nobody else writes those bytes); else `refused`.
   */
  private async refusedUnlessOurs(key: string, buffer: Buffer, mayHaveLanded: boolean, refused: StoreError): Promise<void> {
    if (mayHaveLanded && (await this.holds(key, buffer))) return;
    throw refused;
  }

  /** A write that failed for good after transient errors counts as done if one of its attempts landed after all. */
  private async failedUnlessLanded(key: string, buffer: Buffer, error: unknown): Promise<void> {
    const failure = this.storeError(error, "write", key);
    if ((failure.kind === "io" || failure.kind === "unreachable") && (await this.holds(key, buffer).catch(() => false))) return;
    throw failure;
  }

  /**
   * A large object as a managed multipart upload. ifAbsent: a HEAD first (parts are not
   * sent for an object that exists), and `If-None-Match: *` on CompleteMultipartUpload for
   * servers that honour it there (AWS); the keys written this way (manifests) carry a random
   * part, so the HEAD alone already rules out all but our own earlier attempts.
   */
  private async putMultipart(key: string, objectKey: string, buffer: Buffer, options: PutOptions | undefined): Promise<void> {
    const signal = options?.signal;
    if (options?.ifAbsent && (await this.stat(key)) !== null) throw this.existsError(key);
    if (signal?.aborted) throw signal.reason;
    const abort = new AbortController();
    const onAbort = (): void => abort.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.bucket,
        Key: objectKey,
        Body: buffer,
        ContentType: "application/octet-stream",
        ...(options?.ifAbsent ? { IfNoneMatch: "*" } : {}),
        // object lock: the retention is set when the upload is created
        ...(options?.retention === undefined
          ? {}
          : {
              ObjectLockMode: options.retention.mode === "compliance" ? ("COMPLIANCE" as const) : ("GOVERNANCE" as const),
              ObjectLockRetainUntilDate: options.retention.until,
              // AWS requires an integrity check on each part of an object with a retention
              ChecksumAlgorithm: "CRC32" as const,
            }),
      },
      partSize: this.multipartPartBytes,
      queueSize: S3_DEFAULTS.multipartConcurrency,
      leavePartsOnError: false,
      abortController: abort,
    });
    let versionId: string | undefined;
    try {
      versionId = (await upload.done()).VersionId;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      // a retried CompleteMultipartUpload whose first attempt landed is refused (412)
      if (options?.ifAbsent && (httpStatus(error) === 412 || errorCode(error) === "PreconditionFailed"))
        await this.refusedUnlessOurs(key, buffer, true, this.existsError(key, error));
      else await this.failedUnlessLanded(key, buffer, error);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    // the retention given to the multipart upload did not take effect on Ceph RGW 16.2
    // (test/uploader/object-lock-store.test.ts): set it on the uploaded version itself
    if (options?.retention !== undefined) await this.extendRetention(key, options.retention, versionId);
  }

  /** True if `key` holds exactly `body` (false if it is missing or different). */
  private async holds(key: string, body: Buffer): Promise<boolean> {
    try {
      return (await this.get(key)).equals(body);
    } catch (error) {
      if (error instanceof StoreError && error.kind === "not-found") return false;
      throw error;
    }
  }

  async get(key: string): Promise<Buffer> {
    if (this.direct !== null) return this.withDirectRetries(this.direct, { method: "GET", objectKey: this.objectKey(key) }, key);
    return (await this.fetch(key, undefined)).body;
  }

  /**
   * A direct request (s3-direct.ts), retried as the SDK retries its own requests: this
   * store's retry strategy decides from the same error classes (throttling, transient,
   * other), and the final error is shaped like an SDK error for s3StoreError, so kinds,
   * messages and attempt counts are those of the SDK path. A GET's body cut short or
   * broken off is retried like a transient error.
   */
  private async withDirectRetries(direct: DirectTarget, request: DirectRequest, key: string): Promise<Buffer> {
    const action = request.method === "GET" ? "read" : "write";
    let token = await this.retryStrategy.acquireInitialRetryToken(`s3:${request.method}`);
    for (let attempt = 1; ; attempt++) {
      if (request.signal?.aborted) throw request.signal.reason;
      let outcome: DirectOutcome;
      try {
        outcome = await directRequest(direct, request);
      } catch (error) {
        throw this.storeError(error, action, key); // no credentials
      }
      if (outcome.kind === "ok") return outcome.body;
      if (request.signal?.aborted) throw request.signal.reason;
      if (outcome.kind === "short" && attempt >= this.maxAttempts) {
        throw this.bodyCutShort(key, outcome.received, outcome.declared >= 0 ? outcome.declared : undefined, attempt);
      }
      const failure = directFailure(outcome, attempt);
      if (request.method === "GET" && outcome.kind === "status" && outcome.status === 404 && outcome.code === "NoSuchKey") {
        throw new StoreError("not-found", `object ${key} not found in ${this.location}`, { key, cause: failure.error });
      }
      try {
        token = await this.retryStrategy.refreshRetryTokenForRetry(token, failure as RetryErrorInfo);
      } catch {
        throw this.storeError(failure.error, action, key);
      }
      await sleep(token.getRetryDelay());
    }
  }

  async getVersion(key: string, versionId?: string): Promise<VersionRead> {
    const { body, response } = await this.fetch(key, undefined, versionId);
    const version = response.VersionId;
    return {
      body,
      versionId: version === undefined || version === "" || version === "null" ? null : version,
      retainUntil: response.ObjectLockRetainUntilDate ?? null,
    };
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
    return (await this.fetch(key, { offset, length })).body;
  }

  /**
   * GetObject (optionally ranged), reading the whole body. Failures while reading the body
   * (reset, stall, fewer bytes than Content-Length) are retried with backoff, up to
   * maxAttempts bodies and within the retry budget; the request itself is retried by the SDK.
   */
  private async fetch(
    key: string,
    range: { offset: number; length: number } | undefined,
    versionId?: string,
  ): Promise<{ body: Buffer; response: GetObjectCommandOutput }> {
    const objectKey = this.objectKey(key);
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      const retryBody = async (): Promise<boolean> => {
        if (attempt >= this.maxAttempts) return false;
        const delay = backoffDelay(attempt - 1, false);
        if (Date.now() + delay - started > this.retryBudgetMs) return false;
        await sleep(delay);
        return true;
      };
      let response: GetObjectCommandOutput;
      try {
        response = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: objectKey,
            ...(range === undefined ? {} : { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` }),
            ...(versionId === undefined ? {} : { VersionId: versionId }),
          }),
        );
      } catch (error) {
        if (range !== undefined && (httpStatus(error) === 416 || errorCode(error) === "InvalidRange")) {
          return { body: Buffer.alloc(0), response: { $metadata: {} } }; // offset at or past the end of an existing object
        }
        if (httpStatus(error) === 404 && (errorCode(error) === "NoSuchKey" || (versionId !== undefined && errorCode(error) === "NoSuchVersion"))) {
          throw new StoreError("not-found", `object ${key} not found in ${this.location}`, { key, cause: error });
        }
        throw this.storeError(error, "read", key);
      }
      try {
        if (response.Body === undefined) throw new Error("response has no body");
        const bytes = await response.Body.transformToByteArray();
        const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        if (response.ContentLength !== undefined && body.length !== response.ContentLength) {
          if (await retryBody()) continue;
          throw this.bodyCutShort(key, body.length, response.ContentLength, attempt);
        }
        if (range !== undefined && body.length > range.length) return { body: body.subarray(0, range.length), response }; // server ignored the range end
        return { body, response };
      } catch (error) {
        if (error instanceof StoreError) throw error;
        // the body broke off (reset, idle timeout, premature close): fetch it again
        if (await retryBody()) continue;
        const failure = this.storeError(error, "read", key);
        throw failure.kind === "io" && !failure.message.includes("attempts")
          ? new StoreError("io", `${failure.message} (body read failed, ${attempt} attempts)`, { key, cause: error })
          : failure;
      }
    }
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      const info: ObjectInfo = { key, size: response.ContentLength ?? 0 };
      if (response.LastModified !== undefined) info.modified = response.LastModified;
      if (response.ETag !== undefined && response.ETag !== "") info.etag = response.ETag;
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
        if (object.ETag !== undefined && object.ETag !== "") info.etag = object.ETag;
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
    await forEachConcurrent(batches, DELETE_PARALLEL_BATCHES, (batch) => this.deleteBatch(batch));
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

  /** ListObjectVersions pages of 1000: versions and delete markers, grouped by key, newest first. */
  async *listVersions(prefix: string): AsyncIterable<ObjectVersion> {
    validatePrefix(prefix);
    let keyMarker: string | undefined;
    let versionMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListObjectVersionsCommand({
            Bucket: this.bucket,
            Prefix: `${this.keyPrefix}${prefix}`,
            MaxKeys: 1000,
            EncodingType: "url",
            ...(keyMarker === undefined ? {} : { KeyMarker: keyMarker }),
            ...(versionMarker === undefined ? {} : { VersionIdMarker: versionMarker }),
          }),
        );
      } catch (error) {
        throw this.storeError(error, "list versions of", prefix === "" ? undefined : prefix);
      }
      const urlEncoded = page.EncodingType === "url";
      const entries: ObjectVersion[] = [];
      const add = (
        raw: { Key?: string; VersionId?: string; IsLatest?: boolean; LastModified?: Date; Size?: number; ETag?: string },
        deleteMarker: boolean,
      ): void => {
        if (raw.Key === undefined || raw.VersionId === undefined) return;
        const full = decodeListKey(raw.Key, urlEncoded);
        if (!full.startsWith(this.keyPrefix)) return;
        const v: ObjectVersion = {
          key: full.slice(this.keyPrefix.length),
          versionId: raw.VersionId,
          latest: raw.IsLatest === true,
          deleteMarker,
          size: raw.Size ?? 0,
        };
        if (raw.LastModified !== undefined) v.modified = raw.LastModified;
        if (raw.ETag !== undefined && raw.ETag !== "") v.etag = raw.ETag;
        entries.push(v);
      };
      for (const v of page.Versions ?? []) add(v, false);
      for (const m of page.DeleteMarkers ?? []) add(m, true);
      // the two arrays of a page, merged back into S3's order: by key, newest first
      entries.sort((a, b) =>
        a.key < b.key ? -1 : a.key > b.key ? 1 : Number(b.latest) - Number(a.latest) || (b.modified?.getTime() ?? 0) - (a.modified?.getTime() ?? 0),
      );
      yield* entries;
      if (!page.IsTruncated) return;
      const nextKey = page.NextKeyMarker;
      if (nextKey === undefined || nextKey === "") {
        throw new StoreError("io", `listing versions of ${this.location}/${prefix} at ${this.endpointName}: truncated page without a key marker`);
      }
      keyMarker = urlEncoded ? decodeListKey(nextKey, true) : nextKey;
      versionMarker = page.NextVersionIdMarker === "" ? undefined : page.NextVersionIdMarker;
    }
  }

  async extendRetention(key: string, retention: Retention, versionId?: string): Promise<void> {
    const objectKey = this.objectKey(key);
    const mode = retention.mode === "compliance" ? ("COMPLIANCE" as const) : ("GOVERNANCE" as const);
    try {
      await this.client.send(
        new PutObjectRetentionCommand({
          Bucket: this.bucket,
          Key: objectKey,
          Retention: { Mode: mode, RetainUntilDate: retention.until },
          ...(versionId === undefined ? {} : { VersionId: versionId }),
        }),
      );
    } catch (error) {
      const code = errorCode(error);
      if (code === "NoSuchKey" || code === "NoSuchVersion" || httpStatus(error) === 404 || code === "MethodNotAllowed") {
        throw new StoreError(
          "not-found",
          `cannot extend the retention of ${this.location}/${key}${versionId ? ` (version ${versionId})` : ""}: no such object version`,
          { key, cause: error },
        );
      }
      // refused as a shortening: fine if the date in place is at least the one asked for
      if (code === "AccessDenied" || httpStatus(error) === 403) {
        const current = await this.retention(objectKey, versionId).catch(() => null);
        if (current !== null && current.getTime() >= retention.until.getTime()) return;
      }
      throw this.storeError(error, "extend the retention of", key);
    }
  }

  /** Retain-until date of a version (raw object key), null when it has none. */
  private async retention(objectKey: string, versionId?: string): Promise<Date | null> {
    try {
      const r = await this.client.send(
        new GetObjectRetentionCommand({ Bucket: this.bucket, Key: objectKey, ...(versionId === undefined ? {} : { VersionId: versionId }) }),
      );
      return r.Retention?.RetainUntilDate ?? null;
    } catch (error) {
      if (errorCode(error) === "ObjectLockConfigurationNotFoundError" || errorCode(error) === "NoSuchObjectLockConfiguration") return null;
      throw error;
    }
  }

  async deleteVersions(versions: readonly { key: string; versionId: string }[]): Promise<{ retained: { key: string; versionId: string }[] }> {
    const retained: { key: string; versionId: string }[] = [];
    for (let i = 0; i < versions.length; i += DELETE_BATCH) {
      const batch = versions.slice(i, i + DELETE_BATCH).map((v) => ({ Key: this.objectKey(v.key), VersionId: v.versionId }));
      let response;
      try {
        response = await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } }));
      } catch (error) {
        throw this.storeError(error, "delete object versions in", undefined);
      }
      const denied: { key: string; versionId: string; code: string; message: string }[] = [];
      for (const e of response.Errors ?? []) {
        if (e.Code === "NoSuchKey" || e.Code === "NoSuchVersion") continue;
        denied.push({ key: (e.Key ?? "").slice(this.keyPrefix.length), versionId: e.VersionId ?? "", code: e.Code ?? "Error", message: e.Message ?? "" });
      }
      if (denied.length === 0) continue;
      // A version under retention is refused with AccessDenied, like a missing permission:
      // look at the retention of a few of them; a refused version that is not retained
      // means the credentials may not delete (an append-only node's), which is an error.
      const other = denied.find((d) => d.code !== "AccessDenied");
      let reason: string | null = other === undefined ? null : `${other.key}: ${other.code}${other.message ? ` (${other.message})` : ""}`;
      if (reason === null) {
        for (const d of denied.slice(0, 3)) {
          const until = await this.retention(this.objectKey(d.key), d.versionId).catch(() => null);
          if (until === null || until.getTime() <= Date.now()) {
            reason = `${d.key} (version ${d.versionId}): access denied and not under retention`;
            break;
          }
        }
      }
      if (reason !== null) {
        const kind: StoreErrorKind = other === undefined || AUTH_CODES.has(other.code) ? "auth" : "io";
        throw new StoreError(
          kind,
          `cannot delete ${denied.length} of ${batch.length} object versions in ${this.location} at ${this.endpointName}, e.g. ${reason}`,
          { key: denied[0]!.key },
        );
      }
      for (const d of denied) retained.push({ key: d.key, versionId: d.versionId });
    }
    return { retained };
  }

  async bucketState(): Promise<BucketState> {
    let objectLock = false;
    try {
      const r = await this.client.send(new GetObjectLockConfigurationCommand({ Bucket: this.bucket }));
      objectLock = r.ObjectLockConfiguration?.ObjectLockEnabled === "Enabled";
    } catch (error) {
      const code = errorCode(error);
      if (code !== "ObjectLockConfigurationNotFoundError" && code !== "NoSuchObjectLockConfiguration" && httpStatus(error) !== 404)
        throw this.storeError(error, "read the object lock configuration of");
      if (code === "NoSuchBucket") throw this.storeError(error, "read the object lock configuration of");
    }
    let versioning: BucketState["versioning"] = "off";
    try {
      const r = await this.client.send(new GetBucketVersioningCommand({ Bucket: this.bucket }));
      versioning = r.Status === "Enabled" ? "enabled" : r.Status === "Suspended" ? "suspended" : "off";
    } catch (error) {
      throw this.storeError(error, "read the versioning state of");
    }
    return { objectLock, versioning };
  }

  sibling(bucket: string): ObjectStore {
    return new S3Store({ ...this.options, bucket });
  }

  async close(): Promise<void> {
    this.client.destroy();
    this.control?.client.destroy();
  }
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message.split("\n")[0] ?? error.name;
  return String(error);
}

/**
 * Why a request was refused, in words an operator can act on. A HEAD answered 403 has no
 * body, so the SDK knows no error code ("Unknown: UnknownError"): say what 403 means.
 */
function authReason(code: string, status: number | undefined, detail: string, endpoint: string): string {
  if (code === "CredentialsProviderError") return `no S3 credentials found (${detail}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`;
  const by = `refused by ${endpoint}`;
  if (code === "SignatureDoesNotMatch") return `${by}: the secret key does not match the access key (SignatureDoesNotMatch): check AWS_SECRET_ACCESS_KEY`;
  if (code === "InvalidAccessKeyId") return `${by}: unknown access key (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID`;
  if (code === "RequestTimeTooSkewed") return `${by}: this host's clock is too far off (RequestTimeTooSkewed): fix the time (NTP)`;
  if (AUTH_CODES.has(code))
    return `access denied by ${endpoint} (${code}${detail && detail !== code && detail !== "UnknownError" ? `: ${detail}` : ""}): the credentials lack a permission this command needs (docs/operations.md, IAM policies)`;
  return `access denied by ${endpoint} (HTTP ${status ?? 403}): wrong credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or no permission for this request`;
}

/**
 * Map an AWS SDK error to a StoreError:
 * NoSuchKey/404 -> not-found; NoSuchBucket -> no-container; InvalidAccessKeyId,
 * SignatureDoesNotMatch, AccessDenied, 403, missing credentials -> auth; connection
 * refused, DNS failure, timeouts -> unreachable; anything else (5xx after retries...) -> io.
 */
export function s3StoreError(error: unknown, context: { action: string; what: string; bucket: string; endpoint: string; key?: string }): StoreError {
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
    return new StoreError("auth", `cannot ${context.action} ${context.what}: ${authReason(code, status, detail, context.endpoint)}`, options);
  }
  const net = networkCode(error);
  if (net !== undefined || code === "TimeoutError" || code === "RequestTimeout" || code === "AbortError") {
    const attempts = shape(error).$metadata?.attempts;
    const why = NETWORK_REASONS[net ?? code] ?? net ?? code;
    // the AWS default was used: far more often a forgotten endpoint than an AWS outage
    const hint =
      context.endpoint === AWS_DEFAULT_ENDPOINT
        ? "; did you forget --endpoint URL / AWS_ENDPOINT_URL (or write the repository as s3:http://HOST:PORT/BUCKET/PREFIX)?"
        : "";
    return new StoreError(
      "unreachable",
      `cannot ${context.action} ${context.what}: S3 endpoint ${context.endpoint} unreachable (${why}${attempts && attempts > 1 ? `, ${attempts} attempts` : ""})${hint}`,
      options,
    );
  }
  if (status === 404) {
    // S3 servers say NoSuchKey/NoSuchBucket; a bare 404 comes from something else (a proxy, a web server)
    return new StoreError(
      "io",
      `cannot ${context.action} ${context.what}: ${context.endpoint} answered HTTP 404 without an S3 error code (is it an S3 endpoint?)`,
      options,
    );
  }
  if (/region is missing/i.test(detail)) {
    return new StoreError("io", `cannot ${context.action} ${context.what}: no AWS region configured (set AWS_REGION)`, options);
  }
  const attempts = shape(error).$metadata?.attempts;
  const tried = attempts !== undefined && attempts > 1 ? `${attempts} attempts` : "";
  const paren = [status ? `HTTP ${status}` : "", tried].filter((x) => x !== "").join(", ");
  return new StoreError(
    "io",
    `cannot ${context.action} ${context.what} at ${context.endpoint}: ${code}${paren ? ` (${paren})` : ""}${detail && detail !== code ? `: ${detail}` : ""}`,
    options,
  );
}
