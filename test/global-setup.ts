/**
 * Starts the services the suite needs once for all test files.
 *
 * S3: the server named by PLOOPVAULT_TEST_S3_ENDPOINT (+ PLOOPVAULT_TEST_S3_ACCESS_KEY,
 * PLOOPVAULT_TEST_S3_SECRET_KEY, optional PLOOPVAULT_TEST_S3_REGION), e.g. MinIO from
 * docker-compose.minio.yml; otherwise a throwaway Ceph RGW (scripts/rgw.sh, needs root),
 * stopped and deleted at teardown. Test files get the connection with inject("s3") or the
 * helpers in test/helpers/s3-server.ts.
 *
 * Corpus: the small corpus of real ext4 disks in ploop images (scripts/corpus.ts), and the
 * SHA-256 of each disk as flattened by the real ploop (the independent oracle), built once
 * per run into a temporary directory; test files get it with test/helpers/corpus.ts.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { buildCorpus } from "../scripts/corpus.js";
import { ploopFlatten } from "./helpers/ploop-tool.js";
import { s3FromEnv, startTestS3, type TestS3Server } from "./helpers/rgw-server.js";
import { sha256File } from "./ploop/fixtures.js";

async function prepareCorpus(): Promise<{ dir: string; cts: string[]; flatSha256: Record<string, string>; flatDir: string; base: string }> {
  const base = await mkdtemp(join(tmpdir(), "pv-corpus-"));
  const dir = join(base, "private");
  const flatDir = join(base, "flat");
  const containers = await buildCorpus(dir, { scale: "small" });
  const cts = containers.map((c) => c.ctid).sort();
  const flatSha256: Record<string, string> = {};
  await Promise.all(
    cts.map(async (ct) => {
      const out = join(base, `${ct}.flat`);
      await ploopFlatten(join(dir, ct, "root.hdd", "DiskDescriptor.xml"), out);
      flatSha256[ct] = await sha256File(out);
      await rm(out);
    }),
  );
  return { dir, cts, flatSha256, flatDir, base };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const verbose = process.env.PLOOPVAULT_TEST_VERBOSE === "1";
  const external = s3FromEnv();
  let server: TestS3Server | undefined;
  const started = Date.now();
  const corpusPromise = prepareCorpus();
  try {
    if (external !== null) {
      project.provide("s3", external);
    } else {
      server = await startTestS3();
      if (verbose)
        process.stderr.write(`test S3 server (Ceph RGW) at ${server.endpoint} started in ${((Date.now() - started) / 1000).toFixed(1)} s (${server.dir})\n`);
      const { endpoint, accessKeyId, secretAccessKey, region, node } = server;
      project.provide("s3", { endpoint, accessKeyId, secretAccessKey, region, ...(node === undefined ? {} : { node }) });
    }
    const corpus = await corpusPromise;
    if (verbose) process.stderr.write(`corpus ready in ${((Date.now() - started) / 1000).toFixed(1)} s (${corpus.dir})\n`);
    project.provide("corpus", { dir: corpus.dir, cts: corpus.cts, flatSha256: corpus.flatSha256, flatDir: corpus.flatDir });
    return async () => {
      await server?.stop();
      await rm(corpus.base, { recursive: true, force: true });
    };
  } catch (error) {
    // a failed setup gets no teardown: stop what did start
    await server?.stop().catch(() => undefined);
    await corpusPromise.then(
      (corpus) => rm(corpus.base, { recursive: true, force: true }),
      () => undefined,
    );
    throw error;
  }
}
