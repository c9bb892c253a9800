/**
 * The package as an operator installs it: `npm pack` of a copy of the sources (its
 * prepack script builds dist/), then `npm install -g` of the tarball into a temporary
 * prefix with nothing but the runtime and the npm registry (no dev dependencies, no build
 * step on the node). The installed `ploopvault` prints its version, backs up a real ext4
 * disk in a ploop image, lists a file in the backup and restores it bit-identical.
 */
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PLOOP_WRAPPER } from "../helpers/cli.js";
import { PROJECT_ROOT } from "../helpers/s3-server.js";
import { asPloopDisk, buildSmallDisk } from "../helpers/small-disks.js";

/** The environment of a user's shell: none of the npm_* variables `npm test` sets for its children. */
function userEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^npm_/i.test(k)) env[k] = v;
  return { ...env, ...extra };
}

describe("npm pack, then npm install -g of the tarball", { timeout: 600_000 }, () => {
  let work: string;
  let prefix: string;
  let installed: string;
  let tarball: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "pv-pack-"));
    // a copy of the sources, so that prepack's build does not rewrite the dist/ other tests run
    const source = join(work, "source");
    await mkdir(source);
    for (const entry of ["package.json", "package-lock.json", "tsconfig.json", "README.md", "src", "scripts", "bench", "test", "docs", "contrib"]) {
      await cp(join(PROJECT_ROOT, entry), join(source, entry), { recursive: true });
    }
    await symlink(join(PROJECT_ROOT, "node_modules"), join(source, "node_modules"));
    const packed = await execa("npm", ["pack", "--json", "--pack-destination", work], { cwd: source, env: userEnv() });
    const name = (JSON.parse(packed.stdout) as { filename: string }[])[0]!.filename;
    tarball = join(work, name);
    prefix = join(work, "prefix");
    await execa("npm", ["install", "-g", "--prefix", prefix, "--no-audit", "--no-fund", "--prefer-offline", tarball], { cwd: work, env: userEnv() });
    installed = join(prefix, "lib", "node_modules", "ploopvault");
  }, 600_000);

  afterAll(async () => {
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it("holds the built program, docs and contrib, and no sources, tests or dev dependencies", async () => {
    const listing = (await execa("tar", ["tzf", tarball])).stdout.split("\n");
    expect(listing).toContain("package/dist/src/cli.js");
    expect(listing).toContain("package/contrib/ploopvault.bash");
    expect(listing).toContain("package/docs/operations.md");
    expect(listing.filter((f) => /^package\/(src|test|bench|scripts)\//.test(f) || (f.endsWith(".ts") && !f.endsWith(".d.ts")))).toEqual([]);
    const modules = await readdir(join(installed, "node_modules"));
    for (const dev of ["typescript", "vitest", "minio", "fast-check"]) expect(modules, dev).not.toContain(dev);
    expect(modules).toContain("@aws-sdk");
  });

  it("`ploopvault --version` runs from the prefix's bin", async () => {
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string };
    const r = await execa(join(prefix, "bin", "ploopvault"), ["--version"], { env: userEnv() });
    expect(r.stdout).toMatch(new RegExp(`^ploopvault ${pkg.version.replaceAll(".", "\\.")} \\(Node\\.js v`));
    expect(r.stderr).toBe("");
  });

  it("backs up a real ext4 disk in a ploop image, lists a file in it and restores it bit-identical", async () => {
    const disk = await buildSmallDisk(work, "demo", { gpt: true, sizeMiB: 24 });
    const descriptor = await asPloopDisk(disk.raw, join(work, "private"), "101");
    const bin = join(prefix, "bin", "ploopvault");
    const env = userEnv({ PLOOPVAULT_PLOOP: PLOOP_WRAPPER });
    const repo = join(work, "repo");
    const common = ["--repo", repo, "--state-dir", join(work, "state")];
    await execa(bin, ["init", ...common], { env });
    const backup = await execa(bin, ["backup", ...common, "--disk", descriptor, "--name", "101", "-q"], { env });
    expect(backup.stdout).toBe("");
    const listed = await execa(bin, ["ls", ...common, "101:latest", "/dir/sub"], { env });
    expect(listed.stdout).toMatch(/deep\.txt/);
    const target = join(work, "restored.raw");
    await execa(bin, ["restore", ...common, "101:latest", "--format", "raw", "--target", target], { env });
    expect((await readFile(target)).equals(await readFile(disk.raw))).toBe(true);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
  });
});
