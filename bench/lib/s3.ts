/**
 * The S3 side of the benchmark: a throwaway Ceph RGW on 127.0.0.1 (scripts/rgw.sh), the
 * size of a bucket as the server lists it, and the server's own PUT ceiling measured
 * with a plain AWS SDK loop (no ploopvault code), at the concurrency ploopvault uses.
 */
import { randomBytes } from "node:crypto";
import { Agent } from "node:http";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { execa } from "execa";
import { cpuSecondsOf } from "./measure.js";

export interface RgwServer {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  dir: string;
  /** pids of radosgw, ceph-osd and ceph-mon (their CPU is part of an S3 run's work). */
  pids(): number[];
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolvePort(address.port) : reject(new Error("no port"))));
    });
  });
}

/** Why an RGW cannot be started here, or null if it can. */
export async function rgwUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return "the Ceph daemons of scripts/rgw.sh need root";
  for (const bin of ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin"]) {
    const r = await execa("sh", ["-c", `command -v ${bin}`], { reject: false });
    if (r.exitCode !== 0) return `${bin} not found (apt-get install ceph-mon ceph-osd radosgw ceph-common)`;
  }
  return null;
}

export async function startRgw(script: string, dir: string, log: (line: string) => void): Promise<RgwServer> {
  const port = await freePort();
  const started = performance.now();
  const r = await execa("bash", [script, "start", dir, String(port)], { reject: false, env: { RGW_WATCH_PID: String(process.pid) } });
  if (r.exitCode !== 0) {
    await execa("bash", [script, "purge", dir], { reject: false });
    throw new Error(`scripts/rgw.sh start failed:\n${String(r.stderr).trim().split("\n").slice(-10).join("\n")}`);
  }
  const kv = new Map(
    String(r.stdout)
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const),
  );
  log(`Ceph RGW at ${kv.get("endpoint")} started in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const pidFiles = ["client.rgw.a", "osd.0", "mon.a"].map((n) => join(dir, "run", `${n}.pid`));
  let pids: number[] = [];
  for (const f of pidFiles) {
    const pid = Number((await readFile(f, "utf8").catch(() => "")).trim());
    if (pid > 0) pids.push(pid);
  }
  return {
    endpoint: kv.get("endpoint")!,
    accessKeyId: kv.get("access")!,
    secretAccessKey: kv.get("secret")!,
    region: kv.get("region") ?? "us-east-1",
    dir,
    pids: () => pids,
    stop: async () => {
      pids = [];
      await execa("bash", [script, "purge", dir], { reject: false });
    },
  };
}

function client(s3: RgwServer, maxSockets: number): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: { httpAgent: new Agent({ keepAlive: true, maxSockets }) },
  });
}

/** Sum of object sizes and object count in a bucket, as the server lists them. */
export async function bucketSize(s3: RgwServer, bucket: string): Promise<{ bytes: number; objects: number }> {
  const c = client(s3, 4);
  let bytes = 0;
  let objects = 0;
  let token: string | undefined;
  try {
    do {
      const page = await c.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        bytes += o.Size ?? 0;
        objects++;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  } finally {
    c.destroy();
  }
  return { bytes, objects };
}

export interface PutCeiling {
  objectBytes: number;
  concurrency: number;
  objects: number;
  seconds: number;
  bytesPerSecond: number;
  /** CPU seconds the Ceph daemons used for these PUTs. */
  serverCpuSeconds: number;
  /** CPU seconds of the client loop (this process) meanwhile. */
  clientCpuSeconds: number;
}

/**
 * PUT objects of `objectBytes` at `concurrency` for about `seconds` into a fresh bucket:
 * the server's own ceiling for this object size (bodies are random and pre-generated, so
 * the client spends nothing but SigV4's payload hash on them).
 */
export async function measurePutCeiling(s3: RgwServer, objectBytes: number, concurrency: number, seconds: number): Promise<PutCeiling> {
  const c = client(s3, concurrency);
  const bucket = `put-ceiling-${Date.now().toString(36)}`;
  const bodies = Array.from({ length: 64 }, () => randomBytes(objectBytes));
  try {
    await c.send(new CreateBucketCommand({ Bucket: bucket }));
    let n = 0;
    const put = async (): Promise<void> => {
      const i = n++;
      await c.send(new PutObjectCommand({ Bucket: bucket, Key: `o/${i.toString(16).padStart(8, "0")}`, Body: bodies[i % bodies.length]! }));
    };
    // warm-up: connections open, the server's bucket index exists
    for (let i = 0; i < concurrency * 2; i++) await put();
    const before = n;
    const server0 = await cpuSecondsOf(s3.pids());
    const client0 = process.cpuUsage();
    const started = performance.now();
    const deadline = started + seconds * 1000;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < deadline) await put();
      }),
    );
    const elapsed = (performance.now() - started) / 1000;
    const client = process.cpuUsage(client0);
    const serverCpuSeconds = (await cpuSecondsOf(s3.pids())) - server0;
    const objects = n - before;
    return {
      objectBytes,
      concurrency,
      objects,
      seconds: elapsed,
      bytesPerSecond: (objects * objectBytes) / elapsed,
      serverCpuSeconds,
      clientCpuSeconds: (client.user + client.system) / 1e6,
    };
  } finally {
    c.destroy();
  }
}
