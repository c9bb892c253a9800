/**
 * The S3 requests of the data path without the AWS SDK: whole-object GETs (restore, check,
 * copy) and plain PUTs (a backup's chunks), signed here (AWS Signature Version 4) and sent
 * straight over node:http(s). The SDK's middleware stack costs ~0.5-1 ms of main-thread
 * CPU per request: a third of a restore's CPU from a Ceph RGW on the same node, a quarter
 * of a first backup's (docs/performance.md, "Morning of 2026-12-05"). This module makes one
 * attempt and says what came back; S3Store retries it with the same retry strategy, the
 * same error classification and the same messages as its SDK requests. Path-style
 * endpoints only (--endpoint: MinIO, Ceph RGW...): AWS itself keeps the SDK (virtual
 * hosts, region redirects, FIPS and dual-stack endpoints).
 */
import { createHash, createHmac } from "node:crypto";
import { type Agent as HttpAgent, type IncomingMessage, request as httpRequest } from "node:http";
import { type Agent as HttpsAgent, request as httpsRequest } from "node:https";

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface DirectTarget {
  /** The endpoint's origin (scheme, host, port); its path must be "/". */
  endpoint: URL;
  bucket: string;
  region: string;
  credentials: () => Promise<S3Credentials>;
  agent: HttpAgent | HttpsAgent;
  /** A new connection must be up within this. */
  connectionTimeoutMs: number;
  /** No byte either way for this long: the attempt timed out. */
  idleTimeoutMs: number;
  /** The response headers must arrive within this. */
  requestTimeoutMs: number;
}

/** What one direct request got: the body, an S3 error answer, or a failure of the connection or of the body. */
export type DirectOutcome =
  | { kind: "ok"; body: Buffer }
  | { kind: "status"; status: number; code: string; message: string; retryAfter: Date | undefined }
  | { kind: "network"; error: Error }
  | { kind: "timeout" }
  | { kind: "short"; received: number; declared: number };

const EMPTY_SHA256 = createHash("sha256").digest("hex");
/** Bodies up to this size get one buffer of their declared size up front. */
const PREALLOCATE_MAX = 16 << 20;

/** S3's URI encoding of a key: every byte but A-Z a-z 0-9 - _ . ~ percent-encoded, "/" kept. */
export function encodeS3Path(key: string): string {
  return key
    .split("/")
    .map((segment) => encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`))
    .join("/");
}

function amzDate(now: Date): string {
  return now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

/** The last signing key derived (a day's, a region's, a secret's): every request of a run reuses it. */
let lastSigningKey: { secret: string; day: string; region: string; key: Buffer } | undefined;

/** SigV4's signing key for S3: HMAC chain over the day, the region, the service and "aws4_request". */
function signingKey(secret: string, day: string, region: string): Buffer {
  const last = lastSigningKey;
  if (last !== undefined && last.secret === secret && last.day === day && last.region === region) return last.key;
  const kDate = createHmac("sha256", `AWS4${secret}`).update(day).digest();
  const kRegion = createHmac("sha256", kDate).update(region).digest();
  const kService = createHmac("sha256", kRegion).update("s3").digest();
  const key = createHmac("sha256", kService).update("aws4_request").digest();
  lastSigningKey = { secret, day, region, key };
  return key;
}

/**
 * The headers of a SigV4-signed request: host, x-amz-date, x-amz-content-sha256 (the
 * payload's SHA-256, hex), x-amz-security-token (temporary credentials), authorization,
 * and `extra` (signed too). `path` is already URI-encoded (encodeS3Path); no query string.
 */
export function signedHeaders(o: {
  method: "GET" | "PUT";
  host: string;
  path: string;
  payloadSha256: string;
  region: string;
  credentials: S3Credentials;
  now: Date;
  extra?: Record<string, string>;
}): Record<string, string> {
  const date = amzDate(o.now);
  const day = date.slice(0, 8);
  const headers: Record<string, string> = { host: o.host, "x-amz-content-sha256": o.payloadSha256, "x-amz-date": date };
  if (o.credentials.sessionToken !== undefined && o.credentials.sessionToken !== "") headers["x-amz-security-token"] = o.credentials.sessionToken;
  for (const [name, value] of Object.entries(o.extra ?? {})) headers[name.toLowerCase()] = value;
  const names = Object.keys(headers).sort();
  const canonicalHeaders = names.map((n) => `${n}:${headers[n]!.trim().replace(/\s+/g, " ")}\n`).join("");
  const signedNames = names.join(";");
  const canonicalRequest = [o.method, o.path, "", canonicalHeaders, signedNames, o.payloadSha256].join("\n");
  const scope = `${day}/${o.region}/s3/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", date, scope, createHash("sha256").update(canonicalRequest).digest("hex")].join("\n");
  const signature = createHmac("sha256", signingKey(o.credentials.secretAccessKey, day, o.region))
    .update(stringToSign)
    .digest("hex");
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${o.credentials.accessKeyId}/${scope}, SignedHeaders=${signedNames}, Signature=${signature}`;
  return headers;
}

/** The endpoint as a URL if it can take direct requests (an http(s) origin without a path), else null. */
export function directEndpoint(endpoint: string): URL | null {
  try {
    const url = new URL(endpoint);
    if ((url.protocol !== "http:" && url.protocol !== "https:") || (url.pathname !== "/" && url.pathname !== "") || url.search !== "") return null;
    if (url.username !== "" || url.password !== "") return null;
    return url;
  } catch {
    return null;
  }
}

/** A GET of a whole object, or a PUT of `body` (`objectKey`: the full key in the bucket). */
export type DirectRequest =
  | { method: "GET"; objectKey: string; signal?: AbortSignal }
  | {
      method: "PUT";
      objectKey: string;
      body: Buffer;
      /** SHA-256 of `body`, hex (SigV4's payload hash): the caller hashes once for all attempts. */
      payloadSha256: string;
      signal?: AbortSignal;
    };

/**
 * One request, directly. What came back: see DirectOutcome (a PUT's "ok" body is empty).
 * `signal` aborts it (the outcome is then a network failure; the caller checks its signal
 * first).
 */
export async function directRequest(target: DirectTarget, request: DirectRequest): Promise<DirectOutcome> {
  const credentials = await target.credentials(); // a provider's error is the caller's to report
  const { endpoint } = target;
  const { method } = request;
  const body = request.method === "PUT" ? request.body : null;
  const path = `/${encodeS3Path(target.bucket)}/${encodeS3Path(request.objectKey)}`;
  const payloadSha256 = request.method === "PUT" ? request.payloadSha256 : EMPTY_SHA256;
  const headers: Record<string, string | number> = signedHeaders({
    method,
    host: endpoint.host,
    path,
    payloadSha256,
    region: target.region,
    credentials,
    now: new Date(),
  });
  if (body !== null) {
    headers["content-length"] = body.length;
    headers["content-type"] = "application/octet-stream";
  }
  const send = endpoint.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (outcome: DirectOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(headersDue);
      request.signal?.removeEventListener("abort", onAbort);
      if (outcome.kind !== "ok") req.destroy();
      resolve(outcome);
    };
    const onAbort = (): void => finish({ kind: "network", error: new Error("aborted") });
    const req = send({
      protocol: endpoint.protocol,
      hostname: endpoint.hostname.replace(/^\[|\]$/g, ""),
      port: endpoint.port === "" ? undefined : Number(endpoint.port),
      method,
      path,
      headers,
      agent: target.agent,
      timeout: target.idleTimeoutMs,
    });
    const headersDue = setTimeout(() => finish({ kind: "timeout" }), target.requestTimeoutMs);
    req.on("timeout", () => finish({ kind: "timeout" }));
    req.on("socket", (socket) => {
      if (!socket.connecting) return; // a kept-alive connection
      const connectDue = setTimeout(() => finish({ kind: "timeout" }), target.connectionTimeoutMs);
      socket.once("connect", () => clearTimeout(connectDue));
      socket.once("close", () => clearTimeout(connectDue));
    });
    req.on("error", (error) => finish({ kind: "network", error }));
    request.signal?.addEventListener("abort", onAbort, { once: true });
    if (request.signal?.aborted) onAbort();
    req.on("response", (res: IncomingMessage) => {
      clearTimeout(headersDue);
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        readText(res, 64 * 1024).then(
          (text) => finish({ kind: "status", status, ...s3ErrorOf(text), retryAfter: retryAfterOf(res.headers["retry-after"]) }),
          (error: Error) => finish({ kind: "network", error }),
        );
        return;
      }
      if (method === "PUT") {
        res.on("error", (error) => finish({ kind: "network", error }));
        res.on("end", () => finish({ kind: "ok", body: Buffer.alloc(0) }));
        res.resume();
        return;
      }
      const declared = Number(res.headers["content-length"]);
      // one buffer of the declared size, filled as the body arrives; a declared size past
      // PREALLOCATE_MAX (a large manifest, or a server that lies) is collected in pieces
      let body: Buffer | null = Number.isSafeInteger(declared) && declared >= 0 && declared <= PREALLOCATE_MAX ? Buffer.allocUnsafe(declared) : null;
      const pieces: Buffer[] = [];
      let received = 0;
      res.on("data", (piece: Buffer) => {
        if (body !== null && received + piece.length <= body.length) piece.copy(body, received);
        else pieces.push(piece);
        received += piece.length;
      });
      res.on("error", (error) => finish({ kind: "network", error }));
      res.on("close", () => {
        if (received !== declared && Number.isSafeInteger(declared))
          body = null; // fewer or more bytes than declared
        else if (body === null) body = Buffer.concat(pieces);
        if (body !== null && res.complete && received === body.length) finish({ kind: "ok", body });
        else finish({ kind: "short", received, declared: Number.isSafeInteger(declared) ? declared : -1 });
      });
    });
    req.end(body ?? undefined);
  });
}

/** The Code and Message of an S3 error document (empty for a body without one, e.g. a HEAD's). */
function s3ErrorOf(text: string | null): { code: string; message: string } {
  const field = (name: string): string => (text === null ? "" : (new RegExp(`<${name}>([^<]*)</${name}>`).exec(text)?.[1] ?? ""));
  const code = field("Code");
  return { code, message: field("Message") };
}

function retryAfterOf(value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return new Date(Date.now() + seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : new Date(at);
}

/** The body as text, or null if it is longer than `limit` bytes. */
function readText(res: IncomingMessage, limit: number): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    res.on("data", (piece: Buffer) => {
      size += piece.length;
      if (size <= limit) parts.push(piece);
    });
    res.on("end", () => resolve(size > limit ? null : Buffer.concat(parts).toString("utf8")));
    res.on("error", reject);
  });
}
