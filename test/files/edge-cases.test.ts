/**
 * What tar headers and paths make hard, checked against the tree the filesystem was made
 * from (mkfs -d copies names as bytes, owners, modes, sizes and holes): names that are not
 * UTF-8, contain a newline or a backslash; a path over 255 bytes; owners above 2^21 (pax
 * uid/gid); a 10 GiB sparse file (pax size, GNU sparse map); a time before 1970 and one
 * with nanoseconds; long and non-ASCII symlink targets; hard links with long names; a
 * folder with no permissions. `ls` shows such names escaped, `dump` and `restore` take the
 * escaped form, GNU tar extracts the dump exactly, and restore --include writes the same.
 */
import { chmod, chown, link, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonLines, runCli } from "../helpers/cli.js";
import { sha256File } from "../helpers/debugfs-oracle.js";
import { asPloopDisk, debugfsRun } from "../helpers/small-disks.js";

const B = (s: string): Buffer => Buffer.from(s, "utf8");
const LATIN1_NAME = Buffer.concat([B("caf"), Buffer.from([0xe9]), B(".txt")]); // "café" in Latin-1: not UTF-8
const NEWLINE_NAME = B("two\nlines");
const BACKSLASH_NAME = B("back\\slash");
const DEEP = Array.from({ length: 6 }, (_, i) => `level-${i}-${"d".repeat(40)}`);
const LONG_TARGET = `${"../".repeat(10)}${"t".repeat(120)}`;
const UNICODE_TARGET = "ziel-übergröße/ファイル";
const TEN_GIB = 10 * 1024 ** 3;

let work: string;
let source: string;
let repoArgs: string[];

function bufJoin(...parts: (string | Buffer)[]): Buffer {
  return Buffer.concat(parts.flatMap((p, i) => (i === 0 ? [typeof p === "string" ? B(p) : p] : [B("/"), typeof p === "string" ? B(p) : p])));
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "pv-fs-edge-"));
  source = join(work, "source");
  await mkdir(source);
  await writeFile(bufJoin(source, LATIN1_NAME), "latin-1 name\n");
  await writeFile(bufJoin(source, NEWLINE_NAME), "newline in the name\n");
  await writeFile(bufJoin(source, BACKSLASH_NAME), "backslash in the name\n");
  await mkdir(join(source, ...DEEP), { recursive: true });
  await writeFile(join(source, ...DEEP, `${"f".repeat(100)}.txt`), "a path of more than 255 bytes\n");
  await writeFile(join(source, "big-owner"), "uid and gid above 2^21\n");
  await chown(join(source, "big-owner"), 3_000_000, 4_000_000);
  const sparse = await open(join(source, "ten-gib-sparse"), "w");
  await sparse.write(Buffer.alloc(4096, 0x5a), 0, 4096, TEN_GIB - 4096);
  await sparse.write(Buffer.from("start"), 0, 5, 0);
  await sparse.close();
  await writeFile(join(source, "old"), "from 1960\n");
  await execa("touch", ["-h", "-d", "1960-03-04 05:06:07", join(source, "old")]);
  await symlink(LONG_TARGET, join(source, "long-link"));
  await symlink(UNICODE_TARGET, join(source, "unicode-link"));
  await writeFile(join(source, ...DEEP.slice(0, 3), "hard-original"), "hard linked with long names\n");
  await link(join(source, ...DEEP.slice(0, 3), "hard-original"), join(source, `hard-${"h".repeat(150)}`));
  await mkdir(join(source, "locked"));
  await writeFile(join(source, "locked", "inside"), "in a folder without permissions\n");
  await chmod(join(source, "locked"), 0o000);
  const raw = join(work, "edge.raw");
  await execa("truncate", ["-s", "64M", raw]);
  await execa("mkfs.ext4", ["-q", "-F", "-d", source, raw], { env: { E2FSPROGS_FAKE_TIME: "1700000000" } });
  // nanoseconds (mkfs -d copies whole seconds)
  await debugfsRun({ raw, fsOffset: 0, blockSize: 4096 }, ["sif /big-owner mtime @1700000000", `sif /big-owner mtime_extra ${123_456_789 * 4}`], true);
  repoArgs = ["--repo", join(work, "repo"), "--state-dir", join(work, "state")];
  expect((await runCli(["init", ...repoArgs, "-q"])).code).toBe(0);
  const b = await runCli(["backup", ...repoArgs, "--disk", await asPloopDisk(raw, join(work, "private"), "edge"), "-q"]);
  expect(b.code, b.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  if (work !== undefined) {
    await chmod(join(source, "locked"), 0o755).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
});

/** A huge sparse file's first and last MiB (hashing 10 GiB of zeros three times is slow, and says no more). */
async function headAndTail(path: Buffer): Promise<string> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(1 << 20);
    const tail = Buffer.alloc(1 << 20);
    await fh.read(head, 0, head.length, 0);
    await fh.read(tail, 0, tail.length, size - tail.length);
    return `${head.toString("base64").length}:${Buffer.concat([head, tail]).toString("base64").slice(-64)}:${head.subarray(0, 8).toString("hex")}`;
  } finally {
    await fh.close();
  }
}

/** Every entry below `root` by its byte path, with what a comparison needs. */
async function snapshot(
  root: string,
): Promise<Map<string, { type: string; mode: number; uid: number; gid: number; size: number; mtime: bigint; content?: string; target?: Buffer; ino: bigint }>> {
  const out = new Map<
    string,
    { type: string; mode: number; uid: number; gid: number; size: number; mtime: bigint; content?: string; target?: Buffer; ino: bigint }
  >();
  // (run as root: folders without permissions are read all the same)
  const walk = async (dir: Buffer, rel: Buffer[]): Promise<void> => {
    for (const name of await readdir(dir, { encoding: "buffer" })) {
      if (name.toString() === "lost+found") continue;
      const path = Buffer.concat([dir, B("/"), name]);
      const st = await lstat(path, { bigint: true });
      const key = [...rel, name].map((c) => c.toString("hex")).join("/");
      const type = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : "file";
      out.set(key, {
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: type === "dir" ? 0 : Number(st.size),
        mtime: st.mtimeNs,
        ino: st.ino,
        ...(type === "file" ? { content: st.size > 64n << 20n ? await headAndTail(path) : await sha256File(path) } : {}),
        ...(type === "symlink" ? { target: await readlink(path, { encoding: "buffer" }) } : {}),
      });
      if (type === "dir") await walk(path, [...rel, name]);
    }
  };
  await walk(B(root), []);
  return out;
}

describe("edge cases of names, sizes, owners and times", () => {
  it("a reader that stops early: ls ends quietly as a tool killed by SIGPIPE (141), dump says so in one line", async () => {
    const cli = `${process.execPath} ${join(process.cwd(), "dist/src/cli.js")}`;
    const repo = repoArgs.join(" ");
    const ls = await execa("bash", ["-c", `${cli} ls ${repo} edge / | head -1 >/dev/null; echo "exit \${PIPESTATUS[0]}"`], { reject: false });
    // 141 if ls was still writing when head left (EPIPE), 0 if it had finished: quiet either way
    expect(ls.stdout.trim()).toMatch(/^exit (0|141)$/);
    expect(ls.stderr).not.toMatch(/Error|at |EPIPE/);
    const dump = await execa("bash", ["-c", `${cli} dump ${repo} edge /ten-gib-sparse | head -c 100 >/dev/null; echo "exit \${PIPESTATUS[0]}"`], {
      reject: false,
    });
    expect(dump.stdout.trim()).toBe("exit 1");
    expect(dump.stderr.trim()).toBe("ploopvault: the reader of the dump closed it before the end (broken pipe)");
  });

  it("ls shows odd names escaped, and dump takes them back", async () => {
    const r = await runCli(["ls", ...repoArgs, "edge", "/", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const paths = jsonLines<{ struct_type: string; path: string; size: number; uid: number; gid: number; mtime: string }>(r.stdout).filter(
      (l) => l.struct_type === "node",
    );
    const shown = paths.map((p) => p.path);
    expect(shown).toContain("/caf\\xe9.txt");
    expect(shown).toContain("/two\\x0alines");
    expect(shown).toContain("/back\\\\slash");
    const owner = paths.find((p) => p.path === "/big-owner")!;
    expect([owner.uid, owner.gid, owner.mtime]).toEqual([3_000_000, 4_000_000, "2023-11-14T22:13:20.123456789Z"]);
    expect(paths.find((p) => p.path === "/ten-gib-sparse")!.size).toBe(TEN_GIB);
    expect(paths.find((p) => p.path === "/old")!.mtime).toBe(`${new Date((await lstat(join(source, "old"))).mtimeMs).toISOString().slice(0, 19)}.000000000Z`);
    const text = await runCli(["ls", ...repoArgs, "edge", "/"]);
    expect(text.stdout.split("\n")).toContain("/two\\x0alines"); // one line per entry, whatever the names
    for (const [escaped, expected] of [
      ["/caf\\xe9.txt", "latin-1 name\n"],
      ["/two\\x0alines", "newline in the name\n"],
      ["/back\\\\slash", "backslash in the name\n"],
    ] as const) {
      const out = join(work, `dump-${Buffer.from(escaped).toString("hex")}`);
      const d = await runCli(["dump", ...repoArgs, "edge", escaped, "--target", out, "-q"]);
      expect(d.code, d.stderr).toBe(0);
      expect(await readFile(out, "utf8")).toBe(expected);
    }
  });

  it("GNU tar extracts the dump as the source tree was, and restore --include writes the same", async () => {
    const tar = join(work, "edge.tar");
    const d = await runCli(["dump", ...repoArgs, "edge", "/", "--target", tar, "-q"]);
    expect(d.code, d.stderr).toBe(0);
    const listing = (await execa("tar", ["-tvf", tar, "--numeric-owner"])).stdout;
    expect(listing).toMatch(/ 3000000\/4000000 .* big-owner$/m);
    expect(listing).toMatch(new RegExp(` ${TEN_GIB} .* ten-gib-sparse$`, "m"));
    const extracted = join(work, "extracted");
    await mkdir(extracted);
    await execa("tar", ["--xattrs", "--numeric-owner", "-xpf", tar, "-C", extracted]);
    expect((await lstat(join(extracted, "ten-gib-sparse"))).blocks * 512).toBeLessThan(1 << 20); // still sparse
    const restored = join(work, "restored");
    const r = await runCli(["restore", ...repoArgs, "edge", "--include", "/", "--target", restored, "-q"]);
    expect(r.code, r.stderr).toBe(0);
    const want = await snapshot(source);
    for (const [root, tolerance] of [
      [extracted, 0n],
      [restored, 1000n],
    ] as const) {
      const got = await snapshot(root);
      expect([...got.keys()].sort(), root).toEqual([...want.keys()].sort());
      for (const [key, w] of want) {
        const g = got.get(key)!;
        const where = `${root}: ${key
          .split("/")
          .map((h) => Buffer.from(h, "hex").toString())
          .join("/")}`;
        expect({ type: g.type, mode: g.mode, uid: g.uid, gid: g.gid, size: g.size, content: g.content, target: g.target?.toString("hex") }, where).toEqual({
          type: w.type,
          mode: w.mode,
          uid: w.uid,
          gid: w.gid,
          size: w.size,
          content: w.content,
          target: w.target?.toString("hex"),
        });
        // mkfs -d keeps whole seconds; debugfs gave big-owner its nanoseconds
        const wantNs = key === B("big-owner").toString("hex") ? 1_700_000_000_123_456_789n : (w.mtime / 1_000_000_000n) * 1_000_000_000n;
        if (w.type !== "dir") expect(g.mtime - wantNs >= -tolerance && g.mtime - wantNs <= tolerance, `${where} mtime ${g.mtime} vs ${wantNs}`).toBe(true);
      }
      const hard = [...got.entries()].filter(([k]) => k.endsWith(B("hard-original").toString("hex")) || k === B(`hard-${"h".repeat(150)}`).toString("hex"));
      expect(hard).toHaveLength(2);
      expect(hard[0]![1].ino, `${root}: hard link`).toBe(hard[1]![1].ino);
    }
  });
});
