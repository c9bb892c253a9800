/**
 * Damaged and hostile metadata inside a backup: a corrupt superblock, inode, extent header,
 * extent tree block or folder block, a folder hard-linked into its own subtree, sizes and
 * extents beyond the filesystem. ls, dump and restore --include fail with exit 1 and one
 * line naming the structure (never a crash or a hang), and check --fs reports each backup
 * as damaged, with ploopvault_check_fs_ok 0 in the metrics file, while an intact copy
 * passes. The damage is made to real mkfs/debugfs filesystems at places debugfs names.
 */
import { copyFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, runCli } from "../helpers/cli.js";
import {
  asPloopDisk,
  buildSmallDisk,
  debugfsRun,
  extentBlockOffset,
  firstBlockOffset,
  inodeOffset,
  patch,
  readAt,
  type SmallDisk,
} from "../helpers/small-disks.js";

interface Case {
  ct: string;
  /** A command (after BACKUP) that reads the damaged structure, and what its error says. */
  args: string[];
  error: RegExp;
  damage: (disk: SmallDisk) => Promise<void>;
  csum: boolean;
}

async function flip(disk: SmallDisk, at: number): Promise<void> {
  const b = await readAt(disk, at, 1);
  await patch(disk, at, Buffer.from([b[0]! ^ 0x5a]));
}

const CASES: Case[] = [
  { ct: "superblock", csum: true, args: ["ls", "/"], error: /superblock: checksum mismatch/, damage: async (d) => flip(d, d.fsOffset + 1024) },
  {
    ct: "inode",
    csum: true,
    args: ["ls", "/dir", "--long"],
    error: /inode \d+: checksum mismatch/,
    damage: async (d) => flip(d, await inodeOffset(d, "/dir/f5")),
  },
  {
    ct: "extentblock",
    csum: true,
    args: ["dump", "/frag", "--target", "OUT"],
    error: /extent tree block \d+: checksum mismatch/,
    damage: async (d) => flip(d, (await extentBlockOffset(d, "/frag")) + 20),
  },
  {
    ct: "dirblock",
    csum: true,
    args: ["ls", "/dir"],
    error: /directory inode \d+: block \d+: checksum mismatch/,
    damage: async (d) => flip(d, (await firstBlockOffset(d, "/dir")) + 40),
  },
  // debugfs rewrites the inode checksum: what is left is the bad extent header itself
  {
    ct: "extentheader",
    csum: true,
    args: ["dump", "/frag", "--target", "OUT"],
    error: /bad extent header magic 0xabcd/,
    damage: async (d) => void (await debugfsRun(d, ["sif /frag block[0] 0x0001abcd"], true)),
  },
  {
    ct: "dirrecord",
    csum: false,
    args: ["ls", "/dir"],
    error: /bad directory record length 0 at offset 0/,
    damage: async (d) => patch(d, (await firstBlockOffset(d, "/dir")) + 4, Buffer.from([0, 0])),
  },
  {
    ct: "extentbeyond",
    csum: false,
    args: ["restore", "--include", "/frag", "--target", "OUT"],
    error: /extent at block 4000000000 .* lies outside the filesystem/,
    damage: async (d) => {
      const leaf = await extentBlockOffset(d, "/frag");
      const b = Buffer.alloc(4);
      b.writeUInt32LE(4_000_000_000);
      await patch(d, leaf + 12 + 8, b); // first extent's ee_start_lo
    },
  },
  {
    ct: "dircycle",
    csum: true,
    args: ["ls", "/", "--recursive"],
    error: /directory inode \d+ is reached twice, as \/dir and \/dir\/sub\/loop/,
    damage: async (d) => void (await debugfsRun(d, ["link /dir /dir/sub/loop"], true)),
  },
  {
    ct: "dirsize",
    csum: true,
    args: ["ls", "/dir"],
    error: /directory size \d+ exceeds the filesystem/,
    damage: async (d) => void (await debugfsRun(d, ["sif /dir size 0x10000000000"], true)),
  },
];

let work: string;
let repoArgs: string[];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-fs-damaged-"));
  repoArgs = ["--repo", join(work, "repo"), "--state-dir", join(work, "state")];
  expect((await runCli(["init", ...repoArgs, "-q"])).code).toBe(0);
  const bases = { true: await buildSmallDisk(work, "csum", { gpt: true }), false: await buildSmallDisk(work, "nocsum", { gpt: true, metadataCsum: false }) };
  for (const c of [...CASES, { ct: "intact", csum: true, damage: async (): Promise<void> => {} }]) {
    const base = bases[String(c.csum) as "true" | "false"];
    const disk = { ...base, raw: join(work, `${c.ct}.raw`) };
    await copyFile(base.raw, disk.raw);
    await c.damage(disk);
    const descriptor = await asPloopDisk(disk.raw, join(work, "private"), c.ct);
    const r = await runCli(["backup", ...repoArgs, "--disk", descriptor, "-q"]);
    expect(r.code, r.stderr).toBe(0);
  }
}, 300_000);

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe("damaged metadata in a backup", () => {
  it.each(CASES)("$ct: one clear error line and exit 1", async (c) => {
    const args = c.args.map((a) => (a === "OUT" ? join(work, `out-${c.ct}`) : a));
    const [command, ...rest] = args;
    const r = await runCli([command!, ...repoArgs, c.ct, ...rest], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^ploopvault: /);
    expect(lines[0]).toMatch(c.error);
    expect(lines[0]).toContain(`backup ${c.ct}/`);
  });

  it("the intact copy reads", async () => {
    const r = await runCli(["ls", ...repoArgs, "intact", "/", "--recursive"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("/dir/sub/deep.txt");
    expect(r.stdout).toContain("/frag");
  });

  it("check --fs reports every damaged backup, passes the intact one, and says so in the metrics file", async () => {
    const metrics = join(work, "check.prom");
    const r = await runCli(["check", ...repoArgs, "--fs", "--json", "--metrics-file", metrics], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trim().split("\n").pop()).toMatch(/^ploopvault: check --fs failed: 9 backups without a sound filesystem/);
    const result = jsonLines<{ filesystems: { ct: string; status: string; errorCount: number; problem?: string; filesystems: { errors: string[] }[] }[] }>(
      r.stdout,
    )[0]!;
    const byCt = new Map(result.filesystems.map((f) => [f.ct, f]));
    expect(byCt.get("intact")!.status).toBe("ok");
    for (const c of CASES) {
      const f = byCt.get(c.ct)!;
      expect(f.status, c.ct).toBe("damaged");
      const text = [f.problem ?? "", ...f.filesystems.flatMap((x) => x.errors)].join("\n");
      expect(text, c.ct).toMatch(c.error);
    }
    const prom = await readFile(metrics, "utf8");
    expect(prom).toMatch(/^ploopvault_check_fs_ok\{ct="intact",backup_host="[^"]+",host="[^"]+"\} 1$/m);
    for (const c of CASES) expect(prom).toMatch(new RegExp(`^ploopvault_check_fs_ok\\{ct="${c.ct}",backup_host="[^"]+",host="[^"]+"\\} 0$`, "m"));
    expect(prom).toMatch(/^ploopvault_check_last_run_exit_code\{host="[^"]+"\} 1$/m);
  });
});
