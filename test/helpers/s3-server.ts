/**
 * The S3 server of the test suite, and an independent S3 client (the `minio` package) for
 * tests that inspect, count or corrupt stored objects: never the project's own store code,
 * so a bug in the store cannot hide itself.
 *
 * test/global-setup.ts starts one Ceph RGW per run (scripts/rgw.sh; ~4 s, needs root) or
 * uses the server given by PLOOPVAULT_TEST_S3_ENDPOINT (+ _ACCESS_KEY, _SECRET_KEY,
 * optional _REGION), and provides its S3Connection to every test file:
 *
 *   import { makeTestBucket, testS3, listKeys } from "./s3-server.js";
 *   const s3 = testS3();                      // endpoint, keys, region
 *   const bucket = await makeTestBucket();    // fresh empty bucket, unique per call
 *   // ... ploopvault --repo s3://$bucket --endpoint $s3.endpoint (env AWS_ACCESS_KEY_ID ...)
 *   expect(await listKeys(bucket, "chunks/")).toHaveLength(3);
 *
 * Buckets are not removed automatically (the throwaway RGW goes away with the run); call
 * removeTestBucket() in afterAll when running against a long-lived server.
 */
import { randomBytes } from "node:crypto";
import * as Minio from "minio";
import { inject } from "vitest";
import type { S3StoreOptions } from "../../src/uploader/s3.js";
import type { S3Connection } from "./rgw-server.js";

export { freePort, PROJECT_ROOT, s3FromEnv, startTestS3, type S3Connection, type TestS3Server } from "./rgw-server.js";

declare module "vitest" {
  export interface ProvidedContext {
    s3: S3Connection;
  }
}

/** The run's S3 server (provided by test/global-setup.ts). */
export function testS3(): S3Connection {
  const s3 = inject("s3");
  if (s3 === undefined) throw new Error("no test S3 server: is test/global-setup.ts configured as vitest globalSetup?");
  return s3;
}

/**
 * Options of an S3Store (the project's store, for the tests of it) on `bucket` of the run's
 * server: its endpoint, region and keys; `overrides` win.
 */
export function testStoreOptions(bucket: string, prefix: string, overrides: Partial<S3StoreOptions> = {}): S3StoreOptions {
  const s3 = testS3();
  return {
    bucket,
    prefix,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    ...overrides,
  };
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
  const safe = label
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")
    .slice(0, 20);
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
