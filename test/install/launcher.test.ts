/**
 * The command's first line is its launcher (src/cli.ts): run as a program, as an operator's
 * cron does, node starts with glibc's arenas limited and a small V8 young generation.
 * The probe runs the built CLI's own first line over a script that reports what the
 * process got, after making the garbage that grows an unbounded young generation to 64 MiB.
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI } from "../helpers/cli.js";

/** `node` on PATH is the node running the tests, as it is the operator's node for theirs. */
const env = { PATH: `${dirname(process.execPath)}:${process.env.PATH ?? "/usr/bin:/bin"}` };

describe("the ploopvault launcher line", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "pv-launcher-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("runs the built command as a program", async () => {
    const r = await execa(CLI, ["--version"], { env, reject: false });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`Node.js ${process.version}`);
  });

  it("starts node with MALLOC_ARENA_MAX=2 and a young generation of at most 16 MiB", async () => {
    const launcher = (await readFile(CLI, "utf8")).split("\n", 1)[0]!;
    expect(launcher.startsWith("#!")).toBe(true);
    const probe = join(dir, "probe.mjs");
    await writeFile(
      probe,
      [
        launcher,
        'import v8 from "node:v8";',
        "const kept = [];",
        "for (let i = 0; i < 3_000_000; i++) { kept.push({ i }); if (kept.length > 200_000) kept.length = 0; }",
        'const newSpace = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space");',
        "console.log(JSON.stringify({ arenas: process.env.MALLOC_ARENA_MAX ?? null, newSpaceBytes: newSpace?.space_size ?? -1 }));",
        "",
      ].join("\n"),
    );
    await chmod(probe, 0o700);
    const r = await execa(probe, [], { env: { ...env, MALLOC_ARENA_MAX: "" }, extendEnv: false, reject: false });
    expect(r.stderr).toBe("");
    const got = JSON.parse(r.stdout) as { arenas: string | null; newSpaceBytes: number };
    expect(got.arenas).toBe("2");
    expect(got.newSpaceBytes).toBeGreaterThan(0);
    expect(got.newSpaceBytes).toBeLessThanOrEqual(16 * 1024 * 1024);
  });
});
