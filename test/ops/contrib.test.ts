/**
 * contrib/: the bash completion is exactly what `ploopvault completion bash` prints and
 * completes in a real bash; the systemd units (and the ones printed in
 * docs/operations.md) pass `systemd-analyze verify`, and the docs' cron lines are the
 * contrib cron file's.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { PROJECT_ROOT } from "../helpers/s3-server.js";

const CONTRIB = join(PROJECT_ROOT, "contrib");

describe("bash completion", () => {
  it("contrib/ploopvault.bash is the output of `ploopvault completion bash`", async () => {
    const r = await runCli(["completion", "bash"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout, "regenerate: node dist/src/cli.js completion bash > contrib/ploopvault.bash").toBe(
      await readFile(join(CONTRIB, "ploopvault.bash"), "utf8"),
    );
    const zsh = await runCli(["completion", "zsh"]);
    expect(zsh.code).toBe(2);
    expect(zsh.stderr).toMatch(/zsh.*not supported/);
  });

  /** What bash offers for the command line `words` (the last word is being completed). */
  async function complete(words: string[]): Promise<string[]> {
    const script = `source ${JSON.stringify(join(CONTRIB, "ploopvault.bash"))}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")})
COMP_CWORD=${words.length - 1}
_ploopvault
printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = await execa("bash", ["--norc", "--noprofile", "-c", script], { cwd: PROJECT_ROOT });
    return r.stdout.split("\n").filter((l) => l !== "");
  }

  it("completes commands, subcommands, each command's options, choices and files", async () => {
    expect(await complete(["ploopvault", "re"])).toEqual(["restore", "release"]);
    expect(await complete(["ploopvault", "key", ""])).toEqual(["list", "add", "remove", "passwd"]);
    expect(await complete(["ploopvault", "backup", "--repo", "/srv/repo", "--al"])).toEqual(["--all"]);
    expect(await complete(["ploopvault", "prune", "--keep-d"])).toEqual(["--keep-daily"]);
    // an option of another command is not offered
    expect(await complete(["ploopvault", "snapshots", "--keep-d"])).toEqual([]);
    expect(await complete(["ploopvault", "restore", "101:latest", "--format", ""])).toEqual(["ploop", "raw"]);
    expect(await complete(["ploopvault", "key", "add", "--new-pa"])).toEqual(["--new-password-file"]);
    // an option's value is a file name; so is a free argument
    expect(await complete(["ploopvault", "backup", "--disk", "contr"])).toEqual(["contrib"]);
    expect(await complete(["ploopvault", "backup", "--repo", "re"])).toEqual([]);
    expect(await complete(["ploopvault", "restore", "--target", "READ"])).toEqual(["README.md"]);
  });
});

describe("systemd units and cron lines", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "pv-units-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** systemd-analyze's complaints about `units` (name -> text), with ploopvault replaced by an existing binary. */
  async function verify(units: Map<string, string>): Promise<string> {
    const paths: string[] = [];
    for (const [name, text] of units) {
      const path = join(dir, name);
      await writeFile(path, text.replaceAll("/usr/local/bin/ploopvault", "/bin/true"));
      paths.push(path);
    }
    const r = await execa("systemd-analyze", ["verify", ...paths], { reject: false });
    return `${r.stdout}${r.stderr}`.trim();
  }

  it("the contrib units verify cleanly", async () => {
    const names = ["ploopvault-backup.service", "ploopvault-backup.timer", "ploopvault-prune.service", "ploopvault-prune.timer"];
    const units = new Map(await Promise.all(names.map(async (n) => [n, await readFile(join(CONTRIB, n), "utf8")] as const)));
    expect(await verify(units)).toBe("");
    // the check itself: a unit with an inline comment (not allowed by systemd) is reported
    expect(await verify(new Map([["bad.timer", "[Timer]\nOnCalendar=daily\nPersistent=true   # after boot\n"]]))).toMatch(
      /bad.timer:3: Failed to parse boolean/,
    );
  });

  it("the units and cron lines in docs/operations.md are the contrib files' (same directives) and verify", async () => {
    const doc = await readFile(join(PROJECT_ROOT, "docs", "operations.md"), "utf8");
    const blocks = [...doc.matchAll(/```(?:ini|cron)\n([\s\S]*?)```/g)].map((m) => m[1]!);
    const units = new Map<string, string>();
    for (const block of blocks) {
      const name = /^# \/etc\/systemd\/system\/(\S+)/.exec(block)?.[1];
      if (name !== undefined) units.set(name, block);
    }
    expect([...units.keys()].sort()).toEqual(["ploopvault-backup.service", "ploopvault-backup.timer"]);
    const directives = (text: string): string[] => text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
    for (const [name, text] of units) expect(directives(text), name).toEqual(directives(await readFile(join(CONTRIB, name), "utf8")));
    expect(await verify(units)).toBe("");
    const cron = blocks.find((b) => b.startsWith("# /etc/cron.d/ploopvault"));
    expect(cron).toBeDefined();
    expect(directives(cron!)).toEqual(directives(await readFile(join(CONTRIB, "ploopvault.cron"), "utf8")));
  });
});
