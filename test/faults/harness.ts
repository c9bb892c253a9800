/**
 * Shared by the fault tests: an S3 repository reached through a fault proxy, the CLI
 * environment that makes stalls cheap (short idle timeout), and the "one clean line"
 * assertion.
 */
import { readdir } from "node:fs/promises";
import { expect } from "vitest";
import { runCli, s3Repo, type CliResult, type RepoTarget } from "../helpers/cli.js";
import { startFaultProxy, type FaultProxy, type FaultProxyOptions } from "../helpers/fault-proxy.js";
import { testS3 } from "../helpers/s3-server.js";

/** Client settings for runs through the proxy: stalls are abandoned after 1.5 s. */
export const FAULT_CLIENT_ENV: Record<string, string> = {
  PLOOPVAULT_S3_IDLE_TIMEOUT_MS: "1500",
  PLOOPVAULT_S3_REQUEST_TIMEOUT_MS: "30000",
  PLOOPVAULT_S3_RETRY_BUDGET_MS: "60000",
};

export interface ProxiedRepo {
  repo: RepoTarget;
  proxy: FaultProxy;
  /** CLI environment that talks to the repository through the proxy. */
  env: Record<string, string>;
  run(args: readonly string[], extraEnv?: Record<string, string>): Promise<CliResult>;
  close(): Promise<void>;
}

/** A fresh bucket, a proxy in front of the test S3 server, and an initialised repository. */
export async function proxiedRepo(label: string, options: Omit<FaultProxyOptions, "target"> = {}, initArgs: string[] = []): Promise<ProxiedRepo> {
  const repo = await s3Repo(label);
  const proxy = await startFaultProxy({ target: testS3().endpoint, stallMs: 20_000, ...options });
  const env = { ...repo.env, ...FAULT_CLIENT_ENV, AWS_ENDPOINT_URL: proxy.url };
  const run = (args: readonly string[], extraEnv: Record<string, string> = {}): Promise<CliResult> =>
    runCli([args[0]!, ...repo.args, ...args.slice(1)], { env: { ...env, ...extraEnv }, timeoutMs: 240_000 });
  const init = await runCli(["init", ...repo.args, ...initArgs], { env: repo.env });
  expect(init.code, init.stderr).toBe(0);
  return {
    repo,
    proxy,
    env,
    run,
    async close() {
      await proxy.close();
      await repo.cleanup();
    },
  };
}

/** Exit 1 (or `code`), exactly one line on stderr, no stack trace. */
export function expectCleanFailure(r: CliResult, pattern?: RegExp, code = 1): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^ploopvault: /);
  if (pattern !== undefined) expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** Entries of a directory that do not start with "." (a restore's partial files are hidden). */
export async function visibleEntries(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => !n.startsWith(".")).sort();
}
