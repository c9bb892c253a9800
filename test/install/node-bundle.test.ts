/**
 * contrib/node-glibc-bundle.sh (docs/install.md, old-glibc nodes such as Virtuozzo 7):
 * the bundled node loads only the C libraries it carries (checked in /proc/self/maps),
 * whatever the machine's own, and runs ploopvault. What cannot be checked here is a real
 * glibc 2.17 / kernel 3.10 node; docs/install.md says so.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI } from "../helpers/cli.js";
import { PROJECT_ROOT } from "../helpers/s3-server.js";

const SCRIPT = join(PROJECT_ROOT, "contrib", "node-glibc-bundle.sh");

describe("contrib/node-glibc-bundle.sh", { timeout: 120_000 }, () => {
  let prefix: string;
  beforeAll(async () => {
    prefix = join(await mkdtemp(join(tmpdir(), "pv-node-bundle-")), "opt", "ploopvault-node");
  });
  afterAll(async () => {
    await rm(join(prefix, "..", ".."), { recursive: true, force: true });
  });

  it("refuses a relative prefix and a missing binary with one line", async () => {
    const relative = await execa("sh", [SCRIPT, process.execPath, "opt/node"], { reject: false });
    expect(relative.exitCode).toBe(2);
    expect(relative.stderr).toMatch(/PREFIX must be an absolute path/);
    const missing = await execa("sh", [SCRIPT, "/nonexistent/node", prefix], { reject: false });
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(/\/nonexistent\/node is not an executable/);
  });

  it("makes a node that loads only its own C libraries and runs ploopvault", async () => {
    await execa("sh", [SCRIPT, process.execPath, prefix]);
    const node = join(prefix, "bin", "node");
    const interpreter = (await execa("patchelf", ["--print-interpreter", node])).stdout;
    expect(interpreter.startsWith(join(prefix, "lib"))).toBe(true);
    const maps = await execa(node, ["-e", "process.stdout.write(require('fs').readFileSync('/proc/self/maps','utf8'))"]);
    const libraries = [
      ...new Set(
        maps.stdout
          .split("\n")
          .map((l) => l.split(/\s+/).pop() ?? "")
          .filter((p) => /\.so(\.\d+)*$/.test(p)),
      ),
    ];
    expect(libraries.some((l) => /\/libc\.so\.6$/.test(l))).toBe(true);
    expect(libraries.filter((l) => !l.startsWith(join(prefix, "lib")))).toEqual([]);
    const version = await execa(node, [CLI, "--version"]);
    expect(version.stdout).toMatch(/^ploopvault \S+ \(Node\.js v/);
    expect(version.stderr).toBe("");
  });
});
