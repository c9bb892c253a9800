/**
 * Starting and stopping the suite's throwaway S3 server (Ceph RGW via scripts/rgw.sh).
 * No vitest runtime import here: test/global-setup.ts runs outside the test workers.
 * Test files use test/helpers/s3-server.ts, which re-exports this.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

export interface S3Connection {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /**
   * A second user of the same server, owning no buckets: the "backup node" whose rights
   * the object-lock tests restrict with bucket policies (scripts/rgw.sh creates it; for an
   * external server PLOOPVAULT_TEST_S3_NODE_USER, _NODE_ACCESS_KEY, _NODE_SECRET_KEY).
   */
  node?: { user: string; accessKeyId: string; secretAccessKey: string };
}

export interface TestS3Server extends S3Connection {
  /** The RGW's directory (data, logs) if this helper started one. */
  dir?: string;
  stop(): Promise<void>;
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
  const node =
    env.PLOOPVAULT_TEST_S3_NODE_ACCESS_KEY && env.PLOOPVAULT_TEST_S3_NODE_SECRET_KEY
      ? {
          user: env.PLOOPVAULT_TEST_S3_NODE_USER || "ploopvault-node",
          accessKeyId: env.PLOOPVAULT_TEST_S3_NODE_ACCESS_KEY,
          secretAccessKey: env.PLOOPVAULT_TEST_S3_NODE_SECRET_KEY,
        }
      : undefined;
  return { endpoint, accessKeyId, secretAccessKey, region: env.PLOOPVAULT_TEST_S3_REGION || "us-east-1", ...(node === undefined ? {} : { node }) };
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
    // RGW_WATCH_PID: the script's watcher purges the server if this process dies without teardown
    const result = await execa("bash", [RGW_SCRIPT, "start", dir, String(port)], {
      reject: false,
      timeout: 180_000,
      env: { RGW_WATCH_PID: String(process.pid) },
    });
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
      const nodeUser = values.get("node_user");
      const nodeAccess = values.get("node_access");
      const nodeSecret = values.get("node_secret");
      return {
        endpoint,
        accessKeyId,
        secretAccessKey,
        region: values.get("region") ?? "us-east-1",
        ...(nodeUser && nodeAccess && nodeSecret ? { node: { user: nodeUser, accessKeyId: nodeAccess, secretAccessKey: nodeSecret } } : {}),
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
