/**
 * The S3 server of the test suite, and an independent S3 client (the `minio` package) for
 * tests that inspect, count or corrupt stored objects: never the project's own store code,
 * so a bug in the store cannot hide itself.
 *
 * test/global-setup.ts starts one Ceph RGW per run (scripts/rgw.sh; ~4 s, needs root) or
 * uses the server given by PLOOPVAULT_TEST_S3_ENDPOINT (+ _ACCESS_KEY, _SECRET_KEY,
 * optional _REGION), and provides its S3Connection to every test file:
 *
 *   import { makeTestBucket, testS3, listKeys } from "../helpers/s3-server.js";
 *   const s3 = testS3();                      // endpoint, keys, region
 *   const bucket = await makeTestBucket();    // fresh empty bucket, unique per call
 *   // ... ploopvault --repo s3://$bucket --endpoint $s3.endpoint (env AWS_ACCESS_KEY_ID ...)
 *   expect(await listKeys(bucket, "chunks/")).toHaveLength(3);
 *
 * Buckets are not removed automatically (the throwaway RGW goes away with the run); call
 * removeTestBucket() in afterAll when running against a long-lived server.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import * as Minio from "minio";
import { inject } from "vitest";

export interface S3Connection {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

export interface TestS3Server extends S3Connection {
  /** The RGW's directory (data, logs) if this helper started one. */
  dir?: string;
  stop(): Promise<void>;
}

declare module "vitest" {
  export interface ProvidedContext {
    s3: S3Connection;
  }
}

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const RGW_SCRIPT = join(PROJECT_ROOT, "scripts/rgw.sh");

/** A TCP port nothing listens on right now (127.0.0.1). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolvePort(address.port) : reject(new Error("no port"))));
    });
  });
}

/** Connection info from PLOOPVAULT_TEST_S3_ENDPOINT & co, or null if not set. */
export function s3FromEnv(env: NodeJS.ProcessEnv = process.env): S3Connection | null {
  const endpoint = env.PLOOPVAULT_TEST_S3_ENDPOINT;
  if (endpoint === undefined || endpoint === "") return null;
  const accessKeyId = env.PLOOPVAULT_TEST_S3_ACCESS_KEY;
  const secretAccessKey = env.PLOOPVAULT_TEST_S3_SECRET_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error("PLOOPVAULT_TEST_S3_ENDPOINT is set: also set PLOOPVAULT_TEST_S3_ACCESS_KEY and PLOOPVAULT_TEST_S3_SECRET_KEY");
  }
  return { endpoint, accessKeyId, secretAccessKey, region: env.PLOOPVAULT_TEST_S3_REGION || "us-east-1" };
}

/**
 * Start a throwaway Ceph RGW (scripts/rgw.sh) on a free port; stop() kills it and deletes
 * its directory (kept if PLOOPVAULT_KEEP_RGW=1, for looking at logs).
 */
export async function startTestS3(options: { dir?: string; port?: number } = {}): Promise<TestS3Server> {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "the test S3 server (Ceph RGW, scripts/rgw.sh) needs root; run the suite as root or point it at a server with " +
        "PLOOPVAULT_TEST_S3_ENDPOINT, PLOOPVAULT_TEST_S3_ACCESS_KEY and PLOOPVAULT_TEST_S3_SECRET_KEY",
    );
  }
  const dir = options.dir ?? join(PROJECT_ROOT, ".tmp", `rgw-${process.pid}-${randomBytes(3).toString("hex")}`);
  mkdirSync(dirname(dir), { recursive: true });
  let lastError: unknown;
  // a port picked here can be taken before radosgw binds it: try a few
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = options.port ?? (await freePort());
    const result = await execa("bash", [RGW_SCRIPT, "start", dir, String(port)], { reject: false, timeout: 180_000, all: false });
    if (result.exitCode === 0) {
      const values = new Map<string, string>();
      for (const line of result.stdout.split("\n")) {
        const eq = line.indexOf("=");
        if (eq > 0) values.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
      }
      const endpoint = values.get("endpoint");
      const accessKeyId = values.get("access");
      const secretAccessKey = values.get("secret");
      if (!endpoint || !accessKeyId || !secretAccessKey) {
        await execa("bash", [RGW_SCRIPT, "purge", dir], { reject: false });
        throw new Error(`scripts/rgw.sh start printed no connection info:\n${result.stdout}\n${result.stderr}`);
      }
      return {
        endpoint,
        accessKeyId,
        secretAccessKey,
        region: values.get("region") ?? "us-east-1",
        dir,
        stop: async () => {
          const keep = process.env.PLOOPVAULT_KEEP_RGW === "1";
          const r = await execa("bash", [RGW_SCRIPT, keep ? "stop" : "purge", dir], { reject: false, timeout: 60_000 });
          if (r.exitCode !== 0) throw new Error(`scripts/rgw.sh ${keep ? "stop" : "purge"} ${dir} failed:\n${r.stderr}`);
        },
      };
    }
    lastError = new Error(`scripts/rgw.sh start ${dir} ${port} failed (exit ${result.exitCode}${result.timedOut ? ", timed out" : ""}):\n${result.stderr}`);
    await execa("bash", [RGW_SCRIPT, "purge", dir], { reject: false });
    if (options.port !== undefined || !/already in use|Address already in use|bind/i.test(result.stderr)) break;
  }
  throw lastError;
}

/** The run's S3 server (provided by test/global-setup.ts). */
export function testS3(): S3Connection {
  const s3 = inject("s3");
  if (s3 === undefined) throw new Error("no test S3 server: is test/global-setup.ts configured as vitest globalSetup?");
  return s3;
}

let cachedClient: { key: string; client: Minio.Client } | undefined;

/** A `minio` client for the given (default: the run's) server. */
export function minioClient(connection: S3Connection = testS3()): Minio.Client {
  const key = JSON.stringify(connection);
  if (cachedClient?.key === key) return cachedClient.client;
  const url = new URL(connection.endpoint);
  const useSSL = url.protocol === "https:";
  const client = new Minio.Client({
    endPoint: url.hostname,
    port: url.port === "" ? (useSSL ? 443 : 80) : Number(url.port),
    useSSL,
    accessKey: connection.accessKeyId,
    secretKey: connection.secretAccessKey,
    region: connection.region,
    pathStyle: true,
  });
  cachedClient = { key, client };
  return client;
}

/** Create a fresh, empty bucket with a unique name ("pv-test-..."); returns its name. */
export async function makeTestBucket(label = "t"): Promise<string> {
  const safe = label.toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 20);
  const bucket = `pv-${safe}-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`.replace(/-+/g, "-");
  await minioClient().makeBucket(bucket, testS3().region);
  return bucket;
}

/** Every key under `prefix` (recursive), sorted. */
export async function listKeys(bucket: string, prefix = ""): Promise<string[]> {
  const keys: string[] = [];
  const stream = minioClient().listObjectsV2(bucket, prefix, true);
  for await (const item of stream as AsyncIterable<Minio.BucketItem>) {
    if (item.name !== undefined) keys.push(item.name);
  }
  return keys.sort();
}

export async function getObject(bucket: string, key: string): Promise<Buffer> {
  const stream = await minioClient().getObject(bucket, key);
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

/** Size of an object, or null if it does not exist. */
export async function objectSize(bucket: string, key: string): Promise<number | null> {
  try {
    return (await minioClient().statObject(bucket, key)).size;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "NotFound" || code === "NoSuchKey") return null;
    throw error;
  }
}

/** Write (e.g. corrupt) an object behind the store's back. */
export async function putObject(bucket: string, key: string, body: Buffer | string): Promise<void> {
  const buffer = typeof body === "string" ? Buffer.from(body) : body;
  await minioClient().putObject(bucket, key, buffer, buffer.length);
}

export async function removeObject(bucket: string, key: string): Promise<void> {
  await minioClient().removeObject(bucket, key);
}

/** Delete every object of the bucket, then the bucket. */
export async function removeTestBucket(bucket: string): Promise<void> {
  const client = minioClient();
  const keys = await listKeys(bucket);
  for (let i = 0; i < keys.length; i += 1000) await client.removeObjects(bucket, keys.slice(i, i + 1000));
  await client.removeBucket(bucket);
}
