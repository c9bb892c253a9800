/**
 * The real e2fsprogs as the oracle of file restore: every entry of a filesystem image as
 * `debugfs` sees it (`ls -p` for the tree, `stat` for links and times, `ea_get` for xattr
 * values), and its files' content and symlink targets as `debugfs rdump` writes them.
 * Nothing here uses the project's reader.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readFile, readlink, rm, truncate } from "node:fs/promises";
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

export function sha256File(path: string): Promise<string> {
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
export async function debugfsTree(image: string, offset: number): Promise<{ entries: Map<string, OracleEntry>; rdumpDir: string; cleanup: () => Promise<void> }> {
  const spec = offset === 0 ? image : `${image}?offset=${offset}`;
  const entries = new Map<string, OracleEntry>();
  let level = ["/"];
  while (level.length > 0) {
    const next: string[] = [];
    const outputs = perCommand(await debugfs(spec, level.map((d) => `ls -p ${quote(d)}`)));
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
  const stats = perCommand(await debugfs(spec, all.map((e) => `stat ${quote(e.path)}`)));
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
