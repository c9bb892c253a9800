/**
 * File restore against the real e2fsprogs: for every file and folder of the file-restore
 * disks (GPT ext4, MBR ext3 with block maps, whole-disk ext4 with inline data; see
 * scripts/fs-corpus.ts), backed up into a repository, `ls --long --recursive`, `dump`
 * (single files and a tar stream read back by GNU tar) and `restore --include` agree with
 * `debugfs` (ls -p, stat, ea_get, rdump) run on the real ploop's flattening of the disk:
 * content, size, type, mode, owner, mtime, links, symlink targets, device numbers, xattrs.
 */
import { lstat, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openBackupFilesystemBySpec, type BackupFilesystem } from "../../src/files/backup-fs.js";
import { dumpFileContent } from "../../src/files/dump.js";
import { resolveItem, type FileNode } from "../../src/files/listing.js";
import { Repository } from "../../src/repository/repository.js";
import { openStore } from "../../src/uploader/open.js";
import { jsonLines, runCli } from "../helpers/cli.js";
import { compareTree, debugfsTree, expectedNs, expectSamePaths, nsOf, sha256File, type OracleEntry } from "../helpers/debugfs-oracle.js";
import { diskOf, fsCorpus, type FsCorpus } from "../helpers/fs-corpus.js";
import { createHash } from "node:crypto";

const CTS = ["201", "202", "203"] as const;

type Node = FileNode;

let corpus: FsCorpus;
let work: string;
let repoArgs: string[];
const oracles = new Map<string, { entries: Map<string, OracleEntry>; cleanup: () => Promise<void> }>();

beforeAll(async () => {
  corpus = await fsCorpus();
  work = await mkdtemp(join(tmpdir(), "pv-fs-oracle-"));
  repoArgs = ["--repo", join(work, "repo"), "--state-dir", join(work, "state")];
  expect((await runCli(["init", ...repoArgs, "-q"])).code).toBe(0);
  for (const ct of CTS) {
    const r = await runCli(["backup", ...repoArgs, "--disk", diskOf(corpus, ct).descriptorPath, "-q"]);
    expect(r.code, r.stderr).toBe(0);
    const d = diskOf(corpus, ct);
    oracles.set(ct, await debugfsTree(corpus.flat[ct]!, d.fsOffset));
  }
}, 600_000);

afterAll(async () => {
  for (const o of oracles.values()) await o.cleanup();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe.each(CTS)("disk %s", (ct) => {
  it("ls --long --recursive --json lists every entry as debugfs sees it", async () => {
    const oracle = oracles.get(ct)!.entries;
    const r = await runCli(["ls", ...repoArgs, ct, "/", "--recursive", "--long", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = jsonLines<Node & { struct_type: string; entries?: number; bytesFetched?: number }>(r.stdout);
    const nodes = lines.filter((l) => l.struct_type === "node");
    const summary = lines.find((l) => l.struct_type === "summary")!;
    expect(summary.entries).toBe(oracle.size);
    expect(summary.bytesFetched).toBeGreaterThan(0);
    expectSamePaths(
      nodes.map((n) => n.path),
      [...oracle.keys()],
    );
    for (const n of nodes) {
      const e = oracle.get(n.path)!;
      expect({
        path: n.path,
        type: n.type,
        permissions: n.mode & 0o7777,
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        links: n.links,
        inode: n.inode,
        mtime: nsOf(n.mtime),
        target: n.target,
        device: n.device,
      }).toEqual({
        path: e.path,
        type: e.type,
        permissions: e.permissions,
        uid: e.uid,
        gid: e.gid,
        size: e.size,
        links: e.links,
        inode: e.ino,
        mtime: expectedNs(e),
        target: e.target,
        device: e.device,
      });
    }
    // the text form carries the same
    const text = await runCli(["ls", ...repoArgs, ct, "/", "-R", "-l"]);
    expect(text.code, text.stderr).toBe(0);
    const rows = text.stdout.trimEnd().split("\n");
    expect(rows).toHaveLength(oracle.size);
    for (const row of rows) {
      const m = /^(\S{10}) +(\d+) +(\d+) +(\d+) +(\d+|\d+, \d+) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\/.*?)(?: -> (.*))?$/.exec(row);
      expect(m, row).not.toBeNull();
      const e = oracle.get(m![7]!)!;
      expect(e, row).toBeDefined();
      expect([Number(m![3]), Number(m![4]), m![8]], row).toEqual([e.uid, e.gid, e.target]);
      expect(Date.parse(`${m![6]!.replace(" ", "T")}Z`) / 1000, row).toBe(e.mtimeSec);
    }
  }, 300_000);

  it("dump gives every file's content as rdump does", async () => {
    const oracle = oracles.get(ct)!.entries;
    const repoDir = repoArgs[1]!;
    const repo = await Repository.open(await openStore(repoDir));
    let backup: BackupFilesystem;
    try {
      backup = await openBackupFilesystemBySpec(repo, ct, join(work, "state"));
      for (const e of oracle.values()) {
        if (e.type !== "file") continue;
        const item = await resolveItem(backup.fs, e.path);
        const h = createHash("sha256");
        await dumpFileContent(backup.fs, item.inode, { write: async (b) => void h.update(b) });
        expect(h.digest("hex"), e.path).toBe(e.sha256);
      }
    } finally {
      await repo.close();
    }
    // and through the command line, to stdout and to --target, for the files that matter most
    // (not the 1 GiB sparse file: its zeros would be written to disk twice)
    const files = [...oracle.values()].filter((e) => e.type === "file" && e.size < 100 << 20).sort((a, b) => b.size - a.size);
    const picks = [
      ...new Set([files[0]!, files[files.length - 1]!, ...files.filter((e) => /frag|sparse|prealloc|ü|indirect|triple|medium|tiny/.test(e.path))]),
    ];
    for (const e of picks) {
      const out = join(work, `dump-${ct}-${createHash("sha1").update(e.path).digest("hex")}`);
      const r = await execa(process.execPath, [join(process.cwd(), "dist/src/cli.js"), "dump", ...repoArgs, ct, e.path, "-q"], {
        stdout: { file: out },
        reject: false,
      });
      expect(r.exitCode, `${e.path}: ${r.stderr}`).toBe(0);
      expect(await sha256File(out), `dump ${e.path} to stdout`).toBe(e.sha256);
      const viaTarget = `${out}.target`;
      const t = await runCli(["dump", ...repoArgs, ct, e.path, "--target", viaTarget, "--json"]);
      expect(t.code, t.stderr).toBe(0);
      expect(await sha256File(viaTarget), `dump ${e.path} --target`).toBe(e.sha256);
      expect(jsonLines<{ bytesWritten: number; bytesFetched: number }>(t.stdout)[0]!.bytesWritten).toBe(e.size);
      expect(((await lstat(viaTarget)).mode & 0o777).toString(8)).toBe("600");
    }
  }, 300_000);

  it("a tar stream of / lists and extracts with GNU tar as debugfs has it", async () => {
    const oracle = oracles.get(ct)!.entries;
    const tar = join(work, `${ct}.tar`);
    const r = await runCli(["dump", ...repoArgs, ct, "/", "--target", tar]);
    expect(r.code, r.stderr).toBe(0);
    const sockets = [...oracle.values()].filter((e) => e.type === "socket");
    for (const s of sockets) expect(r.stderr).toContain(`${s.path}: a socket`);
    const listing = await execa("tar", ["-tvf", tar, "--full-time", "--numeric-owner"]);
    const rows = listing.stdout.split("\n");
    const expected = [...oracle.values()].filter((e) => e.type !== "socket");
    expect(rows).toHaveLength(expected.length);
    const typeChar: Record<string, string> = { file: "-", dir: "d", symlink: "l", chardev: "c", blockdev: "b", fifo: "p" };
    const seenInodes = new Set<number>();
    for (const row of rows) {
      const m = /^(\S)(\S{9}) (\d+)\/(\d+) +(\S+(?:,\S+)?) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) +(.*)$/.exec(row);
      expect(m, row).not.toBeNull();
      let name = m![7]!;
      let target: string | undefined;
      let hardlink = false;
      const arrow = / -> (.*)$/.exec(name);
      const link = / link to (.*)$/.exec(name);
      if (m![1] === "l" && arrow !== null) {
        target = arrow[1];
        name = name.slice(0, arrow.index);
      } else if (m![1] === "h" && link !== null) {
        hardlink = true;
        name = name.slice(0, link.index);
      }
      const e = oracle.get(`/${name.replace(/\/$/, "")}`);
      expect(e, row).toBeDefined();
      expect(hardlink ? "h" : m![1], row).toBe(hardlink ? "h" : typeChar[e!.type]);
      if (hardlink) expect(seenInodes.has(e!.ino), row).toBe(true);
      seenInodes.add(e!.ino);
      expect([Number(m![3]), Number(m![4])], row).toEqual([e!.uid, e!.gid]);
      if (e!.type === "file" && !hardlink) expect(Number(m![5]), row).toBe(e!.size);
      expect(target, row).toBe(e!.target);
    }
    const extracted = join(work, `${ct}-tar`);
    await execa("mkdir", [extracted]);
    await execa("tar", ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tar, "-C", extracted]);
    await compareTree(extracted, oracle, { mtimeToleranceNs: 0n });
  }, 300_000);

  it("restore --include / writes every entry into the folder as debugfs has it", async () => {
    const oracle = oracles.get(ct)!.entries;
    const target = join(work, `${ct}-restored`);
    const r = await runCli(["restore", ...repoArgs, ct, "--include", "/", "--target", target, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const summary = jsonLines<{ files: number; bytesFetched: number; skipped: string[] }>(r.stdout)[0]!;
    expect(summary.skipped).toEqual([...oracle.values()].filter((e) => e.type === "socket").map((e) => e.path));
    expect(summary.bytesFetched).toBeGreaterThan(0);
    // utimes takes floating-point seconds: the restored mtime is exact to the microsecond
    await compareTree(target, oracle, { mtimeToleranceNs: 1000n });
  }, 300_000);
});
