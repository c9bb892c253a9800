/**
 * The real e2fsprogs as the oracle of file restore: every entry of a filesystem image as
 * `debugfs` sees it (`ls -p` for the tree, `stat` for links and times, `ea_get` for xattr
 * values), and its files' content and symlink targets as `debugfs rdump` writes them.
 * Nothing here uses the project's reader.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, truncate } from "node:fs/promises";
import { expect } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";

export type OracleType = "file" | "dir" | "symlink" | "chardev" | "blockdev" | "fifo" | "socket";

export interface OracleEntry {
  path: string;
  ino: number;
  type: OracleType;
  permissions: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  mtimeSec: number;
  mtimeNsec: number;
  atimeSec: number;
  /** name -> value as ea_get writes it (ACLs in getxattr form); system.data left out. */
  xattrs: Map<string, Buffer>;
  target?: string;
  device?: { major: number; minor: number };
  /** SHA-256 of the content rdump wrote (regular files). */
  sha256?: string;
}

const TYPES: Record<string, OracleType> = { "01": "fifo", "02": "chardev", "04": "dir", "06": "blockdev", "10": "file", "12": "symlink", "14": "socket" };

function quote(path: string): string {
  return `"${path}"`;
}

async function debugfs(image: string, commands: string[]): Promise<string> {
  const r = await execa("debugfs", ["-f", "-", image], { input: `${commands.join("\n")}\n`, maxBuffer: 1 << 30 });
  return r.stdout;
}

/** Output of each command, split at debugfs's "debugfs: CMD" echo lines. */
function perCommand(output: string): string[] {
  return output.split(/^debugfs: /m).slice(1);
}

export function sha256File(path: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (c) => h.update(c))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

function decodeTime(line: string | undefined): { sec: number; nsec: number } {
  const m = /0x([0-9a-f]+)(?::([0-9a-f]+))?/.exec(line ?? "");
  if (m === null) throw new Error(`debugfs oracle: no time in "${line}"`);
  const base = Number.parseInt(m[1]!, 16) | 0; // signed 32 bits
  const extra = m[2] === undefined ? 0 : Number.parseInt(m[2], 16);
  return { sec: base + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
}

/**
 * Every entry of the ext filesystem at byte `offset` of `image` (lost+found included),
 * keyed by path ("/etc/hostname"), plus an rdump of the whole tree in `rdumpDir`.
 */
export async function debugfsTree(
  image: string,
  offset: number,
): Promise<{ entries: Map<string, OracleEntry>; rdumpDir: string; cleanup: () => Promise<void> }> {
  const spec = offset === 0 ? image : `${image}?offset=${offset}`;
  const entries = new Map<string, OracleEntry>();
  let level = ["/"];
  while (level.length > 0) {
    const next: string[] = [];
    const outputs = perCommand(
      await debugfs(
        spec,
        level.map((d) => `ls -p ${quote(d)}`),
      ),
    );
    outputs.forEach((out, i) => {
      const dir = level[i]!;
      for (const line of out.split("\n")) {
        const m = /^\/(\d+)\/([0-7]{6})\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
        if (m === null) continue;
        const name = m[5]!;
        if (name === "." || name === ".." || m[1] === "0") continue; // 0: the unused records of a folder
        const path = dir === "/" ? `/${name}` : `${dir}/${name}`;
        const mode = m[2]!;
        const type = TYPES[mode.slice(0, 2)];
        if (type === undefined) throw new Error(`debugfs oracle: unknown mode ${mode} of ${path}`);
        entries.set(path, {
          path,
          ino: Number(m[1]),
          type,
          permissions: Number.parseInt(mode.slice(2), 8),
          uid: Number(m[3]),
          gid: Number(m[4]),
          size: m[6] === "" ? 0 : Number(m[6]),
          links: 0,
          mtimeSec: 0,
          mtimeNsec: 0,
          atimeSec: 0,
          xattrs: new Map(),
        });
        if (type === "dir") next.push(path);
      }
    });
    level = next;
  }
  const all = [...entries.values()];
  const stats = perCommand(
    await debugfs(
      spec,
      all.map((e) => `stat ${quote(e.path)}`),
    ),
  );
  const xattrNames: { entry: OracleEntry; name: string }[] = [];
  const inline = new Set<OracleEntry>();
  all.forEach((e, i) => {
    const out = stats[i]!;
    e.links = Number(/Links: (\d+)/.exec(out)![1]);
    e.size = Number(/Size: (\d+)/.exec(out)![1]); // ls -p leaves it out for folders
    if ((Number.parseInt(/Flags: 0x([0-9a-f]+)/.exec(out)![1]!, 16) & 0x10000000) !== 0) inline.add(e);
    const mtime = decodeTime(/^\s*mtime: (.*)$/m.exec(out)?.[1]);
    e.mtimeSec = mtime.sec;
    e.mtimeNsec = mtime.nsec;
    e.atimeSec = decodeTime(/^\s*atime: (.*)$/m.exec(out)?.[1]).sec;
    const dev = /Device major\/minor number: (\d+):(\d+)/.exec(out);
    if (dev !== null) e.device = { major: Number(dev[1]), minor: Number(dev[2]) };
    const section = /^Extended attributes:\n((?: {2}.*\n)*)/m.exec(out);
    for (const l of section?.[1]?.split("\n") ?? []) {
      const name = /^ {2}(\S+) \(/.exec(l)?.[1];
      if (name !== undefined && name !== "system.data") xattrNames.push({ entry: e, name });
    }
  });
  const work = await mkdtemp(join(tmpdir(), "pv-debugfs-oracle-"));
  const eaDir = join(work, "ea");
  await mkdir(eaDir);
  await debugfs(
    spec,
    xattrNames.map((x, i) => `ea_get -f ${join(eaDir, String(i))} ${quote(x.entry.path)} ${x.name}`),
  );
  for (let i = 0; i < xattrNames.length; i++) xattrNames[i]!.entry.xattrs.set(xattrNames[i]!.name, await readFile(join(eaDir, String(i))));
  const rdumpDir = join(work, "rdump");
  await mkdir(rdumpDir);
  // rdump of "/" writes each top-level entry into the target folder
  await debugfs(
    spec,
    [...entries.values()].filter((e) => e.path.lastIndexOf("/") === 0).map((e) => `rdump ${quote(e.path)} ${rdumpDir}`),
  );
  for (const e of entries.values()) {
    if (e.type === "symlink") e.target = await readlink(join(rdumpDir, e.path));
    if (e.type === "file") {
      // e2fsprogs before 1.47.4 (commit 10d77615, "fix data read corruption in
      // ext2fs_file_read_inline_data") dumps an inline-data file's whole inline area,
      // past its size; the kernel, and the fix, stop at i_size
      if (inline.has(e)) await truncate(join(rdumpDir, e.path), e.size);
      e.sha256 = await sha256File(join(rdumpDir, e.path));
    }
  }
  return { entries, rdumpDir, cleanup: () => rm(work, { recursive: true, force: true }) };
}

/** ACL ids of entries that have none are meaningless (e2fsprogs writes 0, the kernel -1). */
export function normalizeXattr(name: string, value: Buffer): string {
  if (name !== "system.posix_acl_access" && name !== "system.posix_acl_default") return value.toString("hex");
  const v = Buffer.from(value);
  for (let at = 4; at + 8 <= v.length; at += 8) {
    const tag = v.readUInt16LE(at);
    if (tag !== 2 && tag !== 8) v.writeUInt32LE(0, at + 4);
  }
  return v.toString("hex");
}

/** getfattr's view of a restored tree: absolute path -> xattr name -> value. */
export async function getfattrTree(root: string): Promise<Map<string, Map<string, Buffer>>> {
  const r = await execa("getfattr", ["-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", root], { reject: false, maxBuffer: 1 << 30 });
  const out = new Map<string, Map<string, Buffer>>();
  let current: Map<string, Buffer> | null = null;
  for (const line of r.stdout.split("\n")) {
    const file = /^# file: (.*)$/.exec(line);
    if (file !== null) {
      current = new Map();
      out.set(unescapeGetfattr(file[1]!), current);
      continue;
    }
    const attr = /^([^=]+)=0x([0-9a-f]*)$/.exec(line);
    if (attr !== null && current !== null) current.set(attr[1]!, Buffer.from(attr[2]!, "hex"));
  }
  return out;
}

/** getfattr escapes some bytes of names as \ooo. */
function unescapeGetfattr(text: string): string {
  if (!/\\[0-7]{3}/.test(text)) return text;
  const parts: Buffer[] = [];
  let last = 0;
  for (const m of text.matchAll(/\\([0-7]{3})/g)) {
    parts.push(Buffer.from(text.slice(last, m.index), "utf8"), Buffer.from([Number.parseInt(m[1]!, 8)]));
    last = m.index + 4;
  }
  parts.push(Buffer.from(text.slice(last), "utf8"));
  return Buffer.concat(parts).toString("utf8");
}

/** Same set of paths; a mismatch lists only the differences (10,000-entry diffs are unreadable). */
export function expectSamePaths(got: string[], want: string[]): void {
  const g = new Set(got);
  const w = new Set(want);
  expect({ missing: want.filter((p) => !g.has(p)).slice(0, 20), unexpected: got.filter((p) => !w.has(p)).slice(0, 20), count: got.length }).toEqual({
    missing: [],
    unexpected: [],
    count: want.length,
  });
}

export function nsOf(iso: string): bigint {
  const m = /^(.*)\.(\d{9})Z$/.exec(iso)!;
  return BigInt(Date.parse(`${m[1]}Z`)) * 1_000_000n + BigInt(m[2]!);
}

export function expectedNs(e: OracleEntry): bigint {
  return BigInt(e.mtimeSec) * 1_000_000_000n + BigInt(e.mtimeNsec);
}

/** A restored or extracted tree against the oracle: every entry, its metadata, content and xattrs. */
export async function compareTree(root: string, oracle: Map<string, OracleEntry>, options: { mtimeToleranceNs: bigint }): Promise<void> {
  const found = new Map<string, Awaited<ReturnType<typeof lstat>>>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      const st = await lstat(path, { bigint: true });
      found.set(`${rel}/${name}`, st);
      if (st.isDirectory()) await walk(path, `${rel}/${name}`);
    }
  };
  await walk(root, "");
  const expected = [...oracle.values()].filter((e) => e.type !== "socket");
  expectSamePaths(
    [...found.keys()],
    expected.map((e) => e.path),
  );
  const xattrs = await getfattrTree(root);
  const inodeOf = new Map<number, bigint>();
  for (const e of expected) {
    const st = found.get(e.path)! as Awaited<ReturnType<typeof lstat>> & {
      mode: bigint;
      uid: bigint;
      gid: bigint;
      size: bigint;
      mtimeNs: bigint;
      nlink: bigint;
      ino: bigint;
      rdev: bigint;
    };
    const where = `${root}${e.path}`;
    const typeOk = {
      file: st.isFile(),
      dir: st.isDirectory(),
      symlink: st.isSymbolicLink(),
      chardev: st.isCharacterDevice(),
      blockdev: st.isBlockDevice(),
      fifo: st.isFIFO(),
      socket: false,
    }[e.type];
    expect(typeOk, `${where} is a ${e.type}`).toBe(true);
    expect(Number(st.mode & 0o7777n), `${where} mode`).toBe(e.permissions);
    expect([Number(st.uid), Number(st.gid)], `${where} owner`).toEqual([e.uid, e.gid]);
    const diff = st.mtimeNs - expectedNs(e);
    expect(diff >= -options.mtimeToleranceNs && diff <= options.mtimeToleranceNs, `${where} mtime ${st.mtimeNs} vs ${expectedNs(e)}`).toBe(true);
    if (e.type === "file") {
      expect(Number(st.size), `${where} size`).toBe(e.size);
      expect(await sha256File(join(root, e.path)), `${where} content`).toBe(e.sha256);
      expect(Number(st.nlink), `${where} links`).toBe(e.links);
      const first = inodeOf.get(e.ino);
      if (first === undefined) inodeOf.set(e.ino, st.ino);
      else expect(st.ino, `${where} is a hard link`).toBe(first);
    }
    if (e.type === "symlink") expect(await readlink(join(root, e.path)), `${where} target`).toBe(e.target);
    if (e.type === "chardev" || e.type === "blockdev") {
      const rdev = Number(st.rdev);
      expect({ major: (rdev >> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) }, `${where} device`).toEqual(e.device);
    }
    const got = xattrs.get(join(root, e.path)) ?? new Map<string, Buffer>();
    const want = new Map([...e.xattrs].map(([k, v]) => [k, normalizeXattr(k, v)]));
    expect(new Map([...got].map(([k, v]) => [k, normalizeXattr(k, v)])), `${where} xattrs`).toEqual(want);
  }
}
