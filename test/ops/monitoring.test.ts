/**
 * Monitoring after a backup run: the Prometheus textfile (after success, partial success
 * and failure; last-success times and counters carried across runs; written atomically)
 * and the success/failure hooks (arguments, environment, results file, output kept off
 * stdout, timeouts).
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseMetrics } from "../../src/ops/metrics.js";
import { descriptorOf } from "../helpers/corpus.js";
import { jsonLines, localRepo, PLOOP_WRAPPER, runCli, type RepoTarget } from "../helpers/cli.js";
import { NO_CONFIG, privateRootWith } from "./util.js";

type Samples = ReturnType<typeof parseMetrics>;
const value = (samples: Samples, name: string, labels: Record<string, string> = {}): number | undefined =>
  samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v) && (labels.ct !== undefined || s.labels.ct === undefined))
    ?.value;

/** Every line is a comment or a sample in the exposition format; each family has HELP and TYPE. */
function expectValidExposition(text: string): void {
  expect(text.endsWith("\n")).toBe(true);
  const families = new Set<string>();
  for (const line of text.trimEnd().split("\n")) {
    const help = /^# (HELP|TYPE) (\w+) (.+)$/.exec(line);
    if (help) {
      if (help[1] === "TYPE") {
        expect(["gauge", "counter"]).toContain(help[3]);
        families.add(help[2]!);
      }
      continue;
    }
    const sample = /^(\w+)\{((?:\w+="(?:[^"\\]|\\.)*",?)*)\} (-?\d+(?:\.\d+)?)$/.exec(line);
    expect(sample, line).not.toBeNull();
    expect(families.has(sample![1]!), line).toBe(true);
  }
}

describe("metrics file and hooks", () => {
  let repo: RepoTarget;
  let priv: { root: string; cleanup: () => Promise<void> };
  let work: string;
  let metrics: string;

  beforeAll(async () => {
    repo = await localRepo();
    priv = await privateRootWith(["101"]);
    // a container whose descriptor is garbage: its backup fails, 101's succeeds
    await mkdir(join(priv.root, "105", "root.hdd"), { recursive: true });
    await writeFile(join(priv.root, "105", "root.hdd", "DiskDescriptor.xml"), "this is not xml\n");
    work = await mkdtemp(join(tmpdir(), "pv-ops-monitor-"));
    metrics = join(work, "textfile", "ploopvault.prom");
    const init = await runCli(["init", ...repo.args], { env: NO_CONFIG });
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo.cleanup();
    await priv.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  const containerArgs = (): string[] => ["--private-root", priv.root, "--vzlist-bin", "/nonexistent/vzlist", "--ploop-bin", PLOOP_WRAPPER, "--host", "node1"];

  it("after a partial run: exit code 3, per-container outcome, no last success yet; the failure hook gets status partial", async () => {
    const hookOut = join(work, "partial-hook.txt");
    const r = await runCli(
      [
        "backup",
        ...repo.args,
        ...containerArgs(),
        "--all",
        "-q",
        "--metrics-file",
        metrics,
        "--hook-success",
        `echo success > ${hookOut}`,
        "--hook-failure",
        `echo "$1 $2 $PLOOPVAULT_CONTAINERS_OK / $PLOOPVAULT_CONTAINERS_FAILED" > ${hookOut}`,
      ],
      { env: NO_CONFIG },
    );
    expect(r.code, r.stderr).toBe(3);
    const text = await readFile(metrics, "utf8");
    expectValidExposition(text);
    const s = parseMetrics(text);
    expect(value(s, "ploopvault_backup_last_run_exit_code", { host: "node1" })).toBe(3);
    expect(value(s, "ploopvault_backup_last_run_success")).toBe(0);
    expect(value(s, "ploopvault_backup_last_success_timestamp_seconds")).toBeUndefined();
    expect(value(s, "ploopvault_backup_failures_total")).toBe(1);
    expect(value(s, "ploopvault_backup_containers", { status: "ok" })).toBe(1);
    expect(value(s, "ploopvault_backup_containers", { status: "failed" })).toBe(1);
    expect(value(s, "ploopvault_backup_container_success", { ct: "101", host: "node1" })).toBe(1);
    expect(value(s, "ploopvault_backup_container_success", { ct: "105" })).toBe(0);
    expect(value(s, "ploopvault_backup_container_failures_total", { ct: "105" })).toBe(1);
    expect(value(s, "ploopvault_backup_container_failures_total", { ct: "101" })).toBe(0);
    expect(value(s, "ploopvault_backup_container_logical_bytes", { ct: "101" })).toBe(256 * 1024 * 1024);
    expect(value(s, "ploopvault_backup_container_new_bytes", { ct: "101" })).toBeGreaterThan(0);
    expect(value(s, "ploopvault_backup_container_logical_bytes", { ct: "105" })).toBeUndefined();
    expect(await readFile(hookOut, "utf8")).toBe("partial 3 101 / 105\n");
    // written by rename: no temp file is left next to it
    expect(await readdir(join(work, "textfile"))).toEqual(["ploopvault.prom"]);
  });

  let lastSuccess: number;

  it("after a successful run: last success time; containers not in the run are dropped", async () => {
    const before = Date.now() / 1000;
    const r = await runCli(["backup", ...repo.args, ...containerArgs(), "101", "-q", "--metrics-file", metrics], { env: NO_CONFIG });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    const text = await readFile(metrics, "utf8");
    expectValidExposition(text);
    const s = parseMetrics(text);
    expect(value(s, "ploopvault_backup_last_run_exit_code")).toBe(0);
    expect(value(s, "ploopvault_backup_last_run_success")).toBe(1);
    lastSuccess = value(s, "ploopvault_backup_last_success_timestamp_seconds")!;
    expect(lastSuccess).toBeGreaterThanOrEqual(Math.floor(before));
    expect(lastSuccess).toBe(value(s, "ploopvault_backup_last_run_timestamp_seconds"));
    expect(value(s, "ploopvault_backup_last_run_duration_seconds")).toBeGreaterThan(0);
    expect(value(s, "ploopvault_backup_runs_total")).toBe(2);
    expect(value(s, "ploopvault_backup_failures_total")).toBe(1);
    expect(value(s, "ploopvault_backup_container_success", { ct: "101" })).toBe(1);
    expect(value(s, "ploopvault_backup_container_last_success_timestamp_seconds", { ct: "101" })).toBe(lastSuccess);
    expect(s.some((x) => x.labels.ct === "105")).toBe(false);
  });

  it("after a failed run: exit code 1, the last success time is kept, containers keep their series with success 0", async () => {
    const r = await runCli(
      ["backup", "--repo", join(work, "no-such-repo"), "--state-dir", repo.stateDir, ...containerArgs(), "101", "-q", "--metrics-file", metrics],
      { env: NO_CONFIG },
    );
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    const text = await readFile(metrics, "utf8");
    expectValidExposition(text);
    const s = parseMetrics(text);
    expect(value(s, "ploopvault_backup_last_run_exit_code")).toBe(1);
    expect(value(s, "ploopvault_backup_last_run_success")).toBe(0);
    expect(value(s, "ploopvault_backup_last_success_timestamp_seconds")).toBe(lastSuccess);
    expect(value(s, "ploopvault_backup_last_run_timestamp_seconds")).toBeGreaterThan(lastSuccess);
    expect(value(s, "ploopvault_backup_runs_total")).toBe(3);
    expect(value(s, "ploopvault_backup_failures_total")).toBe(2);
    expect(value(s, "ploopvault_backup_container_success", { ct: "101" })).toBe(0);
    expect(value(s, "ploopvault_backup_container_last_success_timestamp_seconds", { ct: "101" })).toBe(lastSuccess);
    expect(value(s, "ploopvault_backup_container_logical_bytes", { ct: "101" })).toBe(256 * 1024 * 1024);
  });

  it("runs the success hook with status, exit code and results file as arguments and environment", async () => {
    const dump = join(work, "hook-success");
    await mkdir(dump);
    const hook = `printf '%s\\n' "$@" > ${dump}/args; env | grep '^PLOOPVAULT_' | sort > ${dump}/env; cp "$PLOOPVAULT_RESULTS_JSON" ${dump}/results.json; echo output of the hook; echo its stderr >&2`;
    const r = await runCli(
      [
        "backup",
        ...repo.args,
        "--disk",
        descriptorOf("101"),
        "--name",
        "301",
        "--host",
        "node1",
        "--json",
        "--hook-success",
        hook,
        "--hook-failure",
        `touch ${dump}/failure-ran`,
      ],
      {
        env: { ...NO_CONFIG, PLOOPVAULT_NEW_PASSWORD: "not-for-hooks" },
      },
    );
    expect(r.code, r.stderr).toBe(0);
    // the hook's output is logged on stderr; stdout holds only the --json result
    expect(jsonLines(r.stdout)).toEqual([expect.objectContaining({ ct: "301", status: "ok" })]);
    expect(r.stderr).toContain("hook-success: output of the hook\n");
    expect(r.stderr).toContain("hook-success: its stderr\n");

    const args = (await readFile(join(dump, "args"), "utf8")).trimEnd().split("\n");
    expect(args.slice(0, 2)).toEqual(["success", "0"]);
    expect(args[2]).toMatch(/results\.json$/);
    const env = Object.fromEntries(
      (await readFile(join(dump, "env"), "utf8"))
        .trimEnd()
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(env).toMatchObject({
      PLOOPVAULT_STATUS: "success",
      PLOOPVAULT_EXIT_CODE: "0",
      PLOOPVAULT_RESULTS_JSON: args[2],
      PLOOPVAULT_ERROR: "",
      PLOOPVAULT_COMMAND: "backup",
      PLOOPVAULT_HOST: "node1",
      PLOOPVAULT_CONTAINERS_OK: "301",
      PLOOPVAULT_CONTAINERS_FAILED: "",
    });
    expect(Number(env.PLOOPVAULT_DURATION_SECONDS)).toBeGreaterThan(0);
    expect(env.PLOOPVAULT_NEW_PASSWORD).toBeUndefined(); // passwords are not handed to hooks
    const results = JSON.parse(await readFile(join(dump, "results.json"), "utf8")) as {
      status: string;
      exitCode: number;
      results: { ct: string; status: string; backup: string }[];
    };
    expect(results).toMatchObject({ command: "backup", status: "success", exitCode: 0, error: null, host: "node1" });
    expect(results.results).toEqual([expect.objectContaining({ ct: "301", status: "ok", backup: jsonLines<{ backup: string }>(r.stdout)[0]!.backup })]);
    await expect(readFile(args[2]!)).rejects.toThrow(); // removed after the hook
    await expect(readFile(join(dump, "failure-ran"))).rejects.toThrow();
  });

  it("runs the failure hook after a failure; a failing hook is a warning, the exit code stays", async () => {
    const out = join(work, "failure-hook.txt");
    const r = await runCli(
      [
        "backup",
        "--repo",
        join(work, "missing"),
        "--state-dir",
        repo.stateDir,
        "--disk",
        descriptorOf("101"),
        "--hook-failure",
        `echo "$1 $2 $PLOOPVAULT_ERROR" > ${out}; exit 7`,
      ],
      { env: NO_CONFIG },
    );
    expect(r.code).toBe(1);
    expect(await readFile(out, "utf8")).toBe(`failure 1 repository directory ${join(work, "missing")} does not exist\n`);
    expect(r.stderr).toMatch(/^ploopvault: repository directory .* does not exist$/m);
    expect(r.stderr).toMatch(/^warning: --hook-failure .* exited with 7$/m);
  });

  it("kills a hook that runs past --hook-timeout", async () => {
    const t0 = Date.now();
    const r = await runCli(["backup", ...repo.args, "--disk", descriptorOf("101"), "-q", "--hook-success", "sleep 60", "--hook-timeout", "1"], {
      env: NO_CONFIG,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^warning: --hook-success "sleep 60" timed out after 1 s and was killed$/m);
    expect(Date.now() - t0).toBeLessThan(30_000);
  });
});
