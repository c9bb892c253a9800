/**
 * Quick store throughput check (not a test): PUT then GET N objects of SIZE bytes at
 * concurrency C through S3Store, and the same through LocalDirectoryStore for comparison.
 *
 *   npm run build && node dist/scripts/s3-throughput.js [--count 256] [--size 1048576] [--concurrency 8]
 *
 * S3 server: PLOOPVAULT_TEST_S3_ENDPOINT (+ _ACCESS_KEY, _SECRET_KEY) if set, else a
 * throwaway Ceph RGW started with scripts/rgw.sh (needs root) and purged afterwards.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { execa } from "execa";
import { LocalDirectoryStore } from "../src/uploader/local.js";
import { S3Store } from "../src/uploader/s3.js";
import type { ObjectStore } from "../src/uploader/store.js";

const { values } = parseArgs({
  options: {
    count: { type: "string", default: "256" },
    size: { type: "string", default: String(1 << 20) },
    concurrency: { type: "string", default: "8" },
    port: { type: "string", default: "7480" },
  },
});
const count = Number(values.count);
const size = Number(values.size);
const concurrency = Number(values.concurrency);
const projectRoot = resolve(import.meta.dirname, "../..");

async function parallel(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

async function measure(name: string, store: ObjectStore, bodies: Buffer[]): Promise<void> {
  const mib = (bodies.length * size) / (1 << 20);
  let t = performance.now();
  await parallel(bodies.length, concurrency, (i) => store.put(`bench/${i}`, bodies[i]!));
  const put = (performance.now() - t) / 1000;
  t = performance.now();
  await parallel(bodies.length, concurrency, async (i) => {
    const body = await store.get(`bench/${i}`);
    if (!body.equals(bodies[i]!)) throw new Error(`object ${i} differs`);
  });
  const get = (performance.now() - t) / 1000;
  await store.delete(bodies.map((_, i) => `bench/${i}`));
  console.log(
    `${name}: PUT ${(mib / put).toFixed(0)} MiB/s (${(bodies.length / put).toFixed(0)} obj/s), GET ${(mib / get).toFixed(0)} MiB/s, ` +
      `${bodies.length} x ${size} B at concurrency ${concurrency}`,
  );
}

async function main(): Promise<void> {
  const bodies = Array.from({ length: count }, () => randomBytes(size));
  let endpoint = process.env.PLOOPVAULT_TEST_S3_ENDPOINT;
  let accessKeyId = process.env.PLOOPVAULT_TEST_S3_ACCESS_KEY ?? "";
  let secretAccessKey = process.env.PLOOPVAULT_TEST_S3_SECRET_KEY ?? "";
  let rgwDir: string | undefined;
  try {
    if (!endpoint) {
      rgwDir = join(projectRoot, ".tmp", `rgw-bench-${process.pid}`);
      const t = performance.now();
      const r = await execa("bash", [join(projectRoot, "scripts/rgw.sh"), "start", rgwDir, values.port!], {
        env: { RGW_WATCH_PID: String(process.pid) },
        stderr: "inherit",
      });
      console.log(`RGW started in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      const kv = new Map(r.stdout.split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const));
      endpoint = kv.get("endpoint")!;
      accessKeyId = kv.get("access")!;
      secretAccessKey = kv.get("secret")!;
    }
    const bucket = `bench-${Date.now().toString(36)}`;
    const s3 = new S3Store({ bucket, endpoint, region: "us-east-1", credentials: { accessKeyId, secretAccessKey } });
    await s3.ensureContainer();
    await measure(`S3Store -> ${endpoint}`, s3, bodies);
    await s3.close();

    const dir = mkdtempSync(join(tmpdir(), "pv-bench-"));
    try {
      await measure(`LocalDirectoryStore -> ${dir}`, new LocalDirectoryStore(dir), bodies);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    if (rgwDir !== undefined) await execa("bash", [join(projectRoot, "scripts/rgw.sh"), "purge", rgwDir], { stderr: "inherit" });
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
