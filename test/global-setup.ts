/**
 * Starts the services the suite needs once for all test files.
 *
 * S3: the server named by PLOOPVAULT_TEST_S3_ENDPOINT (+ PLOOPVAULT_TEST_S3_ACCESS_KEY,
 * PLOOPVAULT_TEST_S3_SECRET_KEY, optional PLOOPVAULT_TEST_S3_REGION), e.g. MinIO from
 * docker-compose.minio.yml; otherwise a throwaway Ceph RGW (scripts/rgw.sh, needs root),
 * stopped and deleted at teardown. Test files get the connection with inject("s3") or the
 * helpers in test/helpers/s3-server.ts.
 */
import type { TestProject } from "vitest/node";
import { s3FromEnv, startTestS3, type TestS3Server } from "./helpers/s3-server.js";

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = s3FromEnv();
  let server: TestS3Server | undefined;
  if (external !== null) {
    project.provide("s3", external);
  } else {
    const started = Date.now();
    server = await startTestS3();
    if (process.env.PLOOPVAULT_TEST_VERBOSE === "1") {
      process.stderr.write(`test S3 server (Ceph RGW) at ${server.endpoint} started in ${((Date.now() - started) / 1000).toFixed(1)} s (${server.dir})\n`);
    }
    const { endpoint, accessKeyId, secretAccessKey, region } = server;
    project.provide("s3", { endpoint, accessKeyId, secretAccessKey, region });
  }
  return async () => {
    await server?.stop();
  };
}
