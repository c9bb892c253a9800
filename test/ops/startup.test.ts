/**
 * Start-up cost (bench/startup.ts measures it): V8's compile cache lives in the state
 * directory only when that directory is ours and not writable by others (the cache holds
 * code the process runs), owner-only, and is emptied after a run that died without
 * exiting (a bad entry can crash every later run); a run that spawns nothing does not
 * load execa.
 */
import { chmod, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, runCli } from "../helpers/cli.js";

const compileCacheSupported = Number(process.versions.node.split(".")[0]) >= 22;

describe("start-up", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "pv-startup-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.runIf(compileCacheSupported)("keeps V8's compile cache in a state dir of ours (0700), never in one others can write", async () => {
    const state = join(dir, "state");
    await mkdir(state, { mode: 0o700 });
    expect((await runCli(["--version"], { env: { PLOOPVAULT_STATE: state } })).code).toBe(0);
    const cache = join(state, "compile-cache");
    expect((await stat(cache)).mode & 0o777).toBe(0o700);
    expect((await readdir(cache)).length).toBeGreaterThan(0);

    const shared = join(dir, "shared");
    await mkdir(shared);
    await chmod(shared, 0o777);
    expect((await runCli(["--version"], { env: { PLOOPVAULT_STATE: shared } })).code).toBe(0);
    expect(await readdir(shared)).toEqual([]);

    const off = join(dir, "off");
    await mkdir(off, { mode: 0o700 });
    expect((await runCli(["--version"], { env: { PLOOPVAULT_STATE: off, NODE_DISABLE_COMPILE_CACHE: "1" } })).code).toBe(0);
    expect(await readdir(off)).toEqual([]);
  });

  it.runIf(compileCacheSupported)("empties the compile cache after a run that died without exiting, and runs without it once", async () => {
    const state = join(dir, "crash-state");
    await mkdir(state, { mode: 0o700 });
    const env = { PLOOPVAULT_STATE: state };
    const cache = join(state, "compile-cache");
    expect((await runCli(["--version"], { env })).code).toBe(0);
    const entries = await readdir(cache);
    expect(entries.length).toBeGreaterThan(0);
    expect(entries.filter((e) => e.startsWith("run-"))).toEqual([]); // a run that exits takes its marker away

    // A run killed while it uses the cache (blocked in its password command): its marker stays.
    const repo = join(dir, "crash-repo");
    const killed = execa(process.execPath, [CLI, "init", "--repo", repo, "--encrypt", "--password-command", "sleep 20"], { reject: false, env });
    const marker = join(cache, `run-${killed.pid}`);
    for (
      let waited = 0;
      !(await stat(marker).then(
        () => true,
        () => false,
      ));
      waited += 50
    ) {
      if (waited > 20_000) throw new Error("the run never marked its use of the compile cache");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    killed.kill("SIGKILL");
    expect((await killed).signal).toBe("SIGKILL");
    expect(await readdir(cache)).toContain(`run-${killed.pid}`);

    // The next run empties the cache (entries and the dead run's marker) and does not use it.
    expect((await runCli(["--version"], { env })).code).toBe(0);
    expect(await readdir(cache)).toEqual([]);
    // The one after builds it again.
    expect((await runCli(["--version"], { env })).code).toBe(0);
    expect((await readdir(cache)).length).toBeGreaterThan(0);
    expect((await readdir(cache)).filter((e) => e.startsWith("run-"))).toEqual([]);
  });

  it("--version and --help load neither execa nor the AWS SDK", async () => {
    for (const args of [["--version"], ["--help"], ["snapshots", "--help"]]) {
      const probe = `const seen = []; const { registerHooks } = await import("node:module");
registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.push(r.url); return r; } });
process.on("exit", () => process.stderr.write("\\nLOADED " + JSON.stringify(seen.filter((u) => /node_modules\\/(execa|@aws-sdk)\\//.test(u)))));
process.argv.splice(1, 0, ${JSON.stringify(CLI)}); await import(${JSON.stringify(CLI)});`;
      const r = await execa(process.execPath, ["--input-type=module", "-e", probe, "--", ...args], { reject: false });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(/LOADED (.*)$/.exec(r.stderr)?.[1], args.join(" ")).toBe("[]");
    }
  });

  it("a run loads the modules of its own command only; --version none; help all of them", async () => {
    const ownModules = async (args: string[]): Promise<string[]> => {
      const probe = `const seen = new Set(); const { registerHooks } = await import("node:module");
registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.add(r.url); return r; } });
process.on("exit", () => process.stderr.write("\\nLOADED " + JSON.stringify([...seen].filter((u) => /\\/dist\\/src\\//.test(u)).map((u) => u.replace(/.*\\/dist\\/src\\//, "")))));
process.argv.splice(1, 0, ${JSON.stringify(CLI)}); await import(${JSON.stringify(CLI)});`;
      const r = await execa(process.execPath, ["--input-type=module", "-e", probe, "--", ...args], { reject: false });
      expect(r.exitCode, r.stderr).toBe(0);
      return JSON.parse(/LOADED (.*)$/.exec(r.stderr)?.[1] ?? "null") as string[];
    };
    const commandModules = (loaded: string[]): string[] =>
      loaded.filter((m) => m.startsWith("commands/") && m !== "commands/common.js" && m !== "commands/all.js").sort();
    expect(commandModules(await ownModules(["--version"]))).toEqual([]);
    const backup = await ownModules(["backup", "--help"]);
    expect(commandModules(backup)).toEqual(["commands/backup.js"]);
    // what only other commands need: restore, check, the NBD server, copy, file listings
    expect(backup.filter((m) => /^(restore|check|nbd|copy|files)\//.test(m))).toEqual([]);
    expect(commandModules(await ownModules(["--help"]))).toContain("commands/serve-nbd.js");
  });
});
