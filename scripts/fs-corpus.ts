/**
 * Disks for file restore (ls, dump, restore --include, check --fs), laid out the way hosts
 * have them and filled with what real containers hold:
 *
 *   201  GPT, one partition at 1 MiB, ext4 (4 KiB blocks, extents, flex_bg, 64bit,
 *        huge_file, metadata_csum: mkfs.ext4's defaults, as `ploop init` makes them):
 *        fast/slow/absolute/dangling/escaping symlinks, a hard link with three names,
 *        sparse files (one 1 GiB, larger than the disk), device nodes, a fifo, a socket,
 *        setuid/setgid/sticky modes, owners, xattrs in the inode and in a block, POSIX
 *        ACLs, security.capability, nanosecond and post-2038 times, a folder of 10,000
 *        files (htree), a file written into the holes of deleted files (1,500 extents, a
 *        two-level extent tree), a file deleted and written again, preallocated
 *        (unwritten) extents, a 48 MiB file.
 *   202  MBR, one partition at 1 MiB, ext3 with 1 KiB blocks and 128-byte inodes (an old
 *        CentOS container): block maps with direct, indirect, double and triple
 *        indirect blocks (a sparse file with data past 64 MiB), xattrs in blocks, an htree.
 *   203  no partition table, ext4 with inline_data and 1 KiB blocks: files, directories
 *        and symlinks stored inside their inodes.
 *
 * Built with the real tools only: sgdisk/sfdisk for the tables, `mkfs -E offset=... -d
 * TREE` for the filesystems, `debugfs -w 'DISK?offset=...'` for what mkfs cannot do
 * (xattrs, ACLs, fragmentation, unwritten extents, extra time bits), `e2fsck -fD` to
 * index the big folders, a final `e2fsck -fn` that must pass; then wrapped into ploop
 * images by the project's writer (1 MiB clusters, shuffled). Everything is seeded and
 * timestamps fixed, so two builds hold the same files.
 *
 * CLI: node dist/scripts/fs-corpus.js OUT [--large-mib N]
 */
import { lutimes, mkdir, mkdtemp, open, rm, symlink, link, utimes, writeFile, chown, chmod } from "node:fs/promises";
import { createHash } from "node:crypto";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { execa } from "execa";
import { writeDescriptorFile, writeImageFromRaw } from "../src/ploop/writer.js";
import { seededBytes, uuidFor } from "./corpus.js";

export interface FsCorpusDisk {
  ctid: string;
  descriptorPath: string;
  /** Byte offset of the filesystem on the logical disk (what debugfs gets as ?offset=). */
  fsOffset: number;
  table: "gpt" | "mbr" | "none";
  kind: "ext4" | "ext3";
  sizeBytes: number;
}

export interface FsCorpusOptions {
  /** Size of /data/large.bin on disk 201 (default 48 MiB). */
  largeMiB?: number;
  /** Files in /many on disk 201 (default 10,000). */
  manyFiles?: number;
  log?: (line: string) => void;
}

const MIB = 1 << 20;
const T0 = 1_700_000_000;
const env = { E2FSPROGS_FAKE_TIME: String(T0) };

async function run(cmd: string, args: string[], options: { input?: string; okCodes?: number[] } = {}): Promise<string> {
  const r = await execa(cmd, args, { env, reject: false, ...(options.input === undefined ? {} : { input: options.input }) });
  if (!(options.okCodes ?? [0]).includes(r.exitCode ?? -1)) {
    throw new Error(
      `fs-corpus: ${cmd} ${args.join(" ").slice(0, 200)} exited ${r.exitCode}: ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ")}`,
    );
  }
  return r.stdout;
}

/** debugfs -w on the filesystem at `offset` of `disk`, commands from stdin (one per line). */
async function debugfsWrite(disk: string, offset: number, commands: string[]): Promise<void> {
  const out = await run("debugfs", ["-w", "-f", "-", offset === 0 ? disk : `${disk}?offset=${offset}`], { input: `${commands.join("\n")}\n` });
  // debugfs exits 0 even when a command fails: its complaints name the command
  const bad = out.split("\n").filter((l) => /^\w+: .*(not found|No such|Invalid|error|Could not)/i.test(l));
  if (bad.length > 0) throw new Error(`fs-corpus: debugfs: ${bad.slice(0, 3).join(" | ")}`);
}

async function fileWith(path: string, pieces: { at: number; data: Buffer }[], size: number): Promise<void> {
  const fh = await open(path, "w");
  try {
    for (const p of pieces) await fh.write(p.data, 0, p.data.length, p.at);
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

/**
 * A unix socket file at `path` with nothing listening (what a daemon leaves behind): bound
 * by a Node server under a temporary name, hard-linked to `path`, and closed (Node removes
 * the name it listened on; the link stays).
 */
async function socketFile(path: string): Promise<void> {
  const temp = `${path}.${process.pid}.listen`;
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(temp, () => resolve());
  });
  try {
    await link(temp, path);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** POSIX ACL in getxattr(2) form (version 2 header, 8-byte entries, sorted by tag). */
function acl(entries: [tag: number, perm: number, id: number][]): Buffer {
  const b = Buffer.alloc(4 + 8 * entries.length);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeUInt32LE(id, 8 + 8 * i);
  });
  return b;
}
const USER_OBJ = 1;
const USER = 2;
const GROUP_OBJ = 4;
const GROUP = 8;
const MASK = 0x10;
const OTHER = 0x20;

/** security.capability v2 granting cap_net_raw (ping). */
function capability(): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(0x02000001, 0); // VFS_CAP_REVISION_2 | effective
  b.writeUInt32LE(1 << 13, 4); // permitted: CAP_NET_RAW
  return b;
}

/** Fixed times on every entry of the tree, children first (mkfs -d copies them). */
async function fixTimes(paths: { path: string; time: number; symlink?: boolean }[]): Promise<void> {
  for (const p of [...paths].reverse()) {
    if (p.symlink) await lutimes(p.path, p.time, p.time);
    else await utimes(p.path, p.time, p.time);
  }
}

/** The tree of disk 201, and the debugfs commands applied after mkfs. */
async function tree201(root: string, work: string, options: Required<Pick<FsCorpusOptions, "largeMiB" | "manyFiles">>): Promise<string[]> {
  const times: { path: string; time: number; symlink?: boolean }[] = [];
  let n = 0;
  const dir = async (rel: string, mode: number, uid = 0, gid = 0): Promise<void> => {
    const p = join(root, rel);
    await mkdir(p, { recursive: true });
    await chown(p, uid, gid);
    await chmod(p, mode);
    times.push({ path: p, time: T0 - 1000 * ++n });
  };
  const file = async (rel: string, content: Buffer | string, mode = 0o644, uid = 0, gid = 0): Promise<void> => {
    const p = join(root, rel);
    await writeFile(p, content);
    await chown(p, uid, gid);
    await chmod(p, mode);
    times.push({ path: p, time: T0 - 1000 * ++n });
  };
  const sym = async (rel: string, target: string): Promise<void> => {
    const p = join(root, rel);
    await symlink(target, p);
    times.push({ path: p, time: T0 - 1000 * ++n, symlink: true });
  };

  await chmod(root, 0o755);
  times.push({ path: root, time: T0 });
  await dir("etc", 0o755);
  await file("etc/hostname", "ct201.example.test\n");
  await file("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640, 0, 42);
  await file("etc/motd", "Welcome. This file's mtime lies after 2038.\n");
  await dir("home", 0o755);
  await dir("home/alice", 0o750, 1000, 1000);
  await file("home/alice/.bashrc", "export PS1='\\u@\\h:\\w\\$ '\n", 0o644, 1000, 1000);
  await file("home/alice/notes.txt", "notes with an ACL, a user xattr and a nanosecond mtime\n", 0o640, 1000, 1000);
  await file("home/alice/file with spaces.txt", "spaces\n", 0o600, 1000, 1000);
  await file("home/alice/über-ünïcødé.txt", "unicode name\n", 0o644, 1000, 1000);
  await file(`home/alice/${"L".repeat(251)}.txt`, "a 255-byte name\n", 0o644, 1000, 1000);
  await dir("var", 0o755);
  await dir("var/www", 0o755);
  await dir("var/www/shop", 0o2775, 33, 33);
  await file("var/www/shop/index.php", "<?php echo 'old shop'; // replaced after mkfs\n", 0o644, 33, 33);
  await file("var/www/shop/config.php", "<?php $db = 'shop';\n", 0o640, 33, 33);
  await dir("var/www/shop/img", 0o755, 33, 33);
  await file("var/www/shop/img/logo.png", seededBytes("201 logo", 200 * 1024), 0o644, 33, 33);
  await dir("var/www/shop/cache", 0o770, 33, 33);
  await sym("var/www/current", "shop");
  await dir("usr", 0o755);
  await dir("usr/bin", 0o755);
  await file("usr/bin/ping", seededBytes("201 ping", 70 * 1024), 0o755);
  await file("usr/bin/sudo", seededBytes("201 sudo", 30 * 1024), 0o4755);
  await file("usr/bin/wall", seededBytes("201 wall", 20 * 1024), 0o2755, 0, 5);
  await dir("tmp", 0o1777);
  await dir("links", 0o755);
  await sym("links/fast", "../etc/hostname");
  await sym("links/slow", `../var/www/shop/${"deep/".repeat(14)}missing-target-of-a-slow-symlink`);
  await sym("links/abs", "/etc/motd");
  await sym("links/escape", "../../../../../../../etc/passwd");
  await sym("links/root", "/");
  await sym("links/dir", "../var/www");
  await dir("data", 0o755);
  await file("data/large.bin", seededBytes("201 large", options.largeMiB * MIB));
  await file("data/empty", "");
  await file("data/hl-a", "one inode, three names\n", 0o644, 1000, 100);
  await dir("data/sub", 0o755);
  await link(join(root, "data/hl-a"), join(root, "data/sub/hl-b"));
  await link(join(root, "data/hl-a"), join(root, "home/alice/hl-c"));
  const sparse = join(root, "data/sparse.img");
  await fileWith(
    sparse,
    [
      { at: 0, data: seededBytes("201 sparse 0", 8192) },
      { at: 7 * MIB, data: seededBytes("201 sparse 7", 100_000) },
      { at: 20 * MIB - 4096, data: seededBytes("201 sparse end", 4096) },
    ],
    20 * MIB,
  );
  times.push({ path: sparse, time: T0 - 1000 * ++n });
  const huge = join(root, "data/huge-sparse");
  await fileWith(huge, [{ at: 1024 * MIB - 4096, data: seededBytes("201 huge", 4096) }], 1024 * MIB);
  times.push({ path: huge, time: T0 - 1000 * ++n });
  await dir("dev", 0o755);
  await run("mknod", ["-m", "666", join(root, "dev/null"), "c", "1", "3"]);
  await run("mknod", ["-m", "660", join(root, "dev/sda1"), "b", "8", "1"]);
  await chown(join(root, "dev/sda1"), 0, 6);
  await run("mknod", ["-m", "600", join(root, "dev/tty9"), "c", "4", "73"]);
  times.push(
    { path: join(root, "dev/null"), time: T0 - 1000 * ++n },
    { path: join(root, "dev/sda1"), time: T0 - 1000 * ++n },
    { path: join(root, "dev/tty9"), time: T0 - 1000 * ++n },
  );
  await dir("run", 0o755);
  await run("mkfifo", ["-m", "620", join(root, "run/initctl")]);
  times.push({ path: join(root, "run/initctl"), time: T0 - 1000 * ++n });
  await socketFile(join(root, "run/daemon.sock"));
  times.push({ path: join(root, "run/daemon.sock"), time: T0 - 1000 * ++n });
  await dir("many", 0o755);
  for (let i = 0; i < options.manyFiles; i++) {
    const p = join(root, "many", `f-${String(i).padStart(5, "0")}`);
    await writeFile(p, `file ${i}\n`);
    times.push({ path: p, time: T0 - i });
  }
  await fixTimes(times);

  // after mkfs, with debugfs: what mkfs -d cannot make
  const files = join(work, "201-inputs");
  await mkdir(files);
  const put = async (name: string, data: Buffer): Promise<string> => {
    const p = join(files, name);
    await writeFile(p, data);
    return p;
  };
  const block4k = await put("p4k", seededBytes("201 frag piece", 4096));
  const fragData = await put("frag", seededBytes("201 frag", 6 * MIB));
  const newIndex = await put("index", Buffer.from("<?php echo 'new shop'; // written after the old one was deleted\n"));
  const cmds: string[] = [];
  // fragmentation: fill with 3,000 small files, delete every other one, write into the holes
  cmds.push("mkdir /fragtmp");
  for (let i = 0; i < 3000; i++) cmds.push(`write ${block4k} /fragtmp/p${i}`);
  for (let i = 1; i < 3000; i += 2) cmds.push(`rm /fragtmp/p${i}`);
  cmds.push(`write ${fragData} /data/frag.bin`);
  for (let i = 0; i < 3000; i += 2) cmds.push(`rm /fragtmp/p${i}`);
  cmds.push("rmdir /fragtmp");
  cmds.push("sif /data/frag.bin mtime @1690000000", "sif /data/frag.bin uid 1000", "sif /data/frag.bin gid 1000");
  // a file deleted and written again (new inode, new blocks)
  cmds.push("rm /var/www/shop/index.php", `write ${newIndex} /var/www/shop/index.php`);
  cmds.push(
    "sif /var/www/shop/index.php uid 33",
    "sif /var/www/shop/index.php gid 33",
    "sif /var/www/shop/index.php mode 0100644",
    "sif /var/www/shop/index.php mtime @1699999999",
  );
  // preallocated, never written blocks (fallocate): unwritten extents read as zeros
  cmds.push(
    `write ${await put("prealloc", seededBytes("201 prealloc", 8192))} /data/prealloc`,
    "fallocate /data/prealloc 2 511",
    "sif /data/prealloc size 2097152",
    "sif /data/prealloc mtime @1690000001",
  );
  // xattrs: in the inode, in a block (too big for the inode), ACLs, a capability
  cmds.push(`ea_set /home/alice/notes.txt user.comment "written by alice"`);
  cmds.push(
    `ea_set -f ${await put(
      "acl-notes",
      acl([
        [USER_OBJ, 6, 0xffffffff],
        [USER, 4, 1001],
        [GROUP_OBJ, 4, 0xffffffff],
        [MASK, 4, 0xffffffff],
        [OTHER, 0, 0xffffffff],
      ]),
    )} /home/alice/notes.txt system.posix_acl_access`,
  );
  const dirAcl = acl([
    [USER_OBJ, 7, 0xffffffff],
    [GROUP_OBJ, 7, 0xffffffff],
    [GROUP, 7, 1002],
    [MASK, 7, 0xffffffff],
    [OTHER, 5, 0xffffffff],
  ]);
  cmds.push(`ea_set -f ${await put("acl-shop", dirAcl)} /var/www/shop system.posix_acl_access`);
  cmds.push(`ea_set -f ${await put("acl-shop-default", dirAcl)} /var/www/shop system.posix_acl_default`);
  cmds.push(`ea_set -f ${await put("cap", capability())} /usr/bin/ping security.capability`);
  cmds.push(`ea_set -f ${await put("big", seededBytes("201 big xattr", 3000))} /data/sparse.img user.big`);
  cmds.push(`ea_set /data/sparse.img user.small tiny`);
  cmds.push(`ea_set /var/www/current trusted.on-a-symlink yes`); // the kernel allows no user.* xattrs on symlinks
  // times: nanoseconds, and a date after 2038 (epoch bits of the extra field)
  cmds.push("sif /home/alice/notes.txt mtime_extra 0x1d6b2dcc", "sif /etc/motd mtime 0x7fffff00", "sif /etc/motd mtime_extra 0x5");
  return cmds;
}

async function tree202(root: string): Promise<void> {
  const times: { path: string; time: number; symlink?: boolean }[] = [];
  let n = 0;
  const add = (p: string, symlinkEntry = false): void => {
    times.push({ path: p, time: T0 - 7 * ++n, symlink: symlinkEntry });
  };
  await chmod(root, 0o755);
  add(root);
  for (const d of ["etc", "srv", "srv/app", "srv/many"]) {
    await mkdir(join(root, d));
    add(join(root, d));
  }
  await writeFile(join(root, "etc/issue"), "CentOS release 5.11 (Final)\n");
  add(join(root, "etc/issue"));
  await writeFile(join(root, "srv/app/small.txt"), "direct blocks only\n");
  add(join(root, "srv/app/small.txt"));
  // 12 direct KiB + 256 KiB behind the indirect block + the rest behind the double indirect one
  await writeFile(join(root, "srv/app/indirect.bin"), seededBytes("202 indirect", 300 * 1024 + 123));
  add(join(root, "srv/app/indirect.bin"));
  await writeFile(join(root, "srv/app/double.bin"), seededBytes("202 double", 3 * MIB + 7));
  add(join(root, "srv/app/double.bin"));
  // data past 12 + 256 + 65536 KiB: behind the triple indirect block
  await fileWith(
    join(root, "srv/app/triple-sparse"),
    [
      { at: 0, data: Buffer.from("start\n") },
      { at: 70 * MIB, data: seededBytes("202 triple", 5000) },
    ],
    70 * MIB + 5000,
  );
  add(join(root, "srv/app/triple-sparse"));
  await chown(join(root, "srv/app/indirect.bin"), 48, 48);
  await symlink("app/small.txt", join(root, "srv/short-link"));
  add(join(root, "srv/short-link"), true);
  await symlink(`/srv/app/${"x".repeat(80)}`, join(root, "srv/long-link"));
  add(join(root, "srv/long-link"), true);
  await link(join(root, "srv/app/small.txt"), join(root, "srv/small-hardlink"));
  for (let i = 0; i < 2000; i++) {
    await writeFile(join(root, "srv/many", `m${i}`), `m ${i}\n`);
    add(join(root, "srv/many", `m${i}`));
  }
  await fixTimes(times);
}

async function tree203(root: string): Promise<void> {
  const times: { path: string; time: number; symlink?: boolean }[] = [];
  let n = 0;
  const add = (p: string, symlinkEntry = false): void => {
    times.push({ path: p, time: T0 - 11 * ++n, symlink: symlinkEntry });
  };
  await chmod(root, 0o755);
  add(root);
  await mkdir(join(root, "small"));
  add(join(root, "small"));
  await writeFile(join(root, "small/tiny"), "in i_block\n");
  add(join(root, "small/tiny"));
  await writeFile(join(root, "small/medium"), `${"in i_block and system.data ".repeat(4)}\n`);
  add(join(root, "small/medium"));
  await writeFile(join(root, "small/bigger"), seededBytes("203 bigger", 5000));
  add(join(root, "small/bigger"));
  await mkdir(join(root, "small/inline-dir"));
  add(join(root, "small/inline-dir"));
  await writeFile(join(root, "small/inline-dir/a"), "a\n");
  add(join(root, "small/inline-dir/a"));
  await symlink("inline-dir/a", join(root, "small/link"));
  add(join(root, "small/link"), true);
  await symlink(`inline-dir/${"y".repeat(70)}`, join(root, "small/long-link"));
  add(join(root, "small/long-link"), true);
  await mkdir(join(root, "wide"));
  add(join(root, "wide"));
  for (let i = 0; i < 40; i++) {
    await writeFile(join(root, "wide", `w${i}`), `w${i}\n`);
    add(join(root, "wide", `w${i}`));
  }
  await fixTimes(times);
}

async function wrap(outDir: string, ctid: string, raw: string, meta: Omit<FsCorpusDisk, "ctid" | "descriptorPath" | "sizeBytes">): Promise<FsCorpusDisk> {
  const dir = join(outDir, ctid, "root.hdd");
  await rm(join(outDir, ctid), { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const result = await writeImageFromRaw(raw, join(dir, "root.hds"), {
    version: 2,
    clusterBytes: MIB,
    shuffle: true,
    seed: Number.parseInt(ctid, 10) || 1,
    skipZeroClusters: true,
  });
  const descriptorPath = await writeDescriptorFile(dir, { imageFile: "root.hds", sizeBytes: result.sizeBytes, clusterBytes: MIB });
  await rm(raw);
  return { ctid, descriptorPath, sizeBytes: result.sizeBytes, ...meta };
}

async function disk201(work: string, out: string, options: Required<Pick<FsCorpusOptions, "largeMiB" | "manyFiles">>): Promise<FsCorpusDisk> {
  const tree = join(work, "tree201");
  await mkdir(tree);
  const commands = await tree201(tree, work, options);
  const raw = join(work, "201.raw");
  await fileWith(raw, [], 256 * MIB);
  await run("sgdisk", ["-U", uuidFor("201 disk"), "-n", "1:2048:0", "-t", "1:8300", "-u", `1:${uuidFor("201 partition")}`, raw]);
  const offset = 2048 * 512;
  // the filesystem fills the partition (it ends 34 sectors before the disk, where the backup GPT is)
  const lastSector = Number(/Last sector: (\d+)/.exec(await run("sgdisk", ["-i", "1", raw]))![1]);
  const blocks = Math.floor(((lastSector - 2047) * 512) / 4096);
  const uuid = uuidFor("201 fs");
  await run("mkfs.ext4", [
    "-q",
    "-F",
    "-b",
    "4096",
    "-N",
    "16384",
    "-U",
    uuid,
    "-E",
    `offset=${offset},lazy_itable_init=0,hash_seed=${uuid}`,
    "-d",
    tree,
    raw,
    String(blocks),
  ]);
  await debugfsWrite(raw, offset, commands);
  await run("e2fsck", ["-fyD", `${raw}?offset=${offset}`], { okCodes: [0, 1] });
  await run("e2fsck", ["-fn", `${raw}?offset=${offset}`]);
  await rm(tree, { recursive: true, force: true });
  return wrap(out, "201", raw, { fsOffset: offset, table: "gpt", kind: "ext4" });
}

async function disk202(work: string, out: string): Promise<FsCorpusDisk> {
  const tree = join(work, "tree202");
  await mkdir(tree);
  await tree202(tree);
  const raw = join(work, "202.raw");
  await fileWith(raw, [], 96 * MIB);
  await run("sfdisk", ["-q", raw], { input: "label: dos\nlabel-id: 0x20220202\nstart=2048, type=83\n" });
  const offset = 2048 * 512;
  const uuid = uuidFor("202 fs");
  await run("mkfs.ext3", [
    "-q",
    "-F",
    "-b",
    "1024",
    "-I",
    "128",
    "-U",
    uuid,
    "-E",
    `offset=${offset},hash_seed=${uuid}`,
    "-d",
    tree,
    raw,
    String(96 * 1024 - 1024),
  ]);
  await debugfsWrite(raw, offset, [`ea_set /srv/app/small.txt user.origin "centos 5"`, `ea_set /srv/app user.dir-attr 1`]);
  await run("e2fsck", ["-fyD", `${raw}?offset=${offset}`], { okCodes: [0, 1] });
  await run("e2fsck", ["-fn", `${raw}?offset=${offset}`]);
  await rm(tree, { recursive: true, force: true });
  return wrap(out, "202", raw, { fsOffset: offset, table: "mbr", kind: "ext3" });
}

async function disk203(work: string, out: string): Promise<FsCorpusDisk> {
  const tree = join(work, "tree203");
  await mkdir(tree);
  await tree203(tree);
  const raw = join(work, "203.raw");
  const uuid = uuidFor("203 fs");
  await run("mkfs.ext4", ["-q", "-F", "-b", "1024", "-O", "inline_data", "-U", uuid, "-E", `hash_seed=${uuid}`, "-d", tree, raw, "32M"]);
  await debugfsWrite(raw, 0, [`ea_set /small/tiny user.note "inline file with an xattr"`]);
  await run("e2fsck", ["-fn", raw]);
  await rm(tree, { recursive: true, force: true });
  return wrap(out, "203", raw, { fsOffset: 0, table: "none", kind: "ext4" });
}

export interface DataDiskOptions {
  /** Data besides the file to restore (default 1024 MiB, in files of 64 MiB). */
  dataMiB?: number;
  /** The file a test or bench restores (default 10 MiB). */
  fileMiB?: number;
}

export interface DataDisk extends FsCorpusDisk {
  /** Path of the file to restore inside the filesystem. */
  file: string;
  fileBytes: number;
  fileSha256: string;
}

/**
 * A container disk holding `dataMiB` of incompressible data (the fetch-bound test and
 * bench/file-restore.ts: how much of a big backup a single-file restore reads): GPT, ext4
 * at 1 MiB, /srv/bulk/part-NN.bin of 64 MiB each, and /srv/www/restore-me.bin to restore.
 */
export async function buildDataDisk(outDir: string, ctid: string, options: DataDiskOptions = {}): Promise<DataDisk> {
  const dataMiB = options.dataMiB ?? 1024;
  const fileMiB = options.fileMiB ?? 10;
  const work = await mkdtemp(join(tmpdir(), "ploopvault-data-disk-"));
  try {
    const tree = join(work, "tree");
    await mkdir(join(tree, "srv", "bulk"), { recursive: true });
    await mkdir(join(tree, "srv", "www"));
    await mkdir(join(tree, "etc"));
    await writeFile(join(tree, "etc", "hostname"), `ct${ctid}.example.test\n`);
    for (let i = 0, left = dataMiB; left > 0; i++, left -= 64) {
      await writeFile(join(tree, "srv", "bulk", `part-${String(i).padStart(2, "0")}.bin`), seededBytes(`${ctid} bulk ${i}`, Math.min(64, left) * MIB));
    }
    const file = seededBytes(`${ctid} restore-me`, fileMiB * MIB);
    await writeFile(join(tree, "srv", "www", "restore-me.bin"), file);
    const raw = join(work, `${ctid}.raw`);
    const diskMiB = Math.ceil((dataMiB + fileMiB) * 1.2) + 128;
    await fileWith(raw, [], diskMiB * MIB);
    await run("sgdisk", ["-n", "1:2048:0", "-t", "1:8300", raw]);
    const lastSector = Number(/Last sector: (\d+)/.exec(await run("sgdisk", ["-i", "1", raw]))![1]);
    const blocks = Math.floor(((lastSector - 2047) * 512) / 4096);
    await run("mkfs.ext4", ["-q", "-F", "-b", "4096", "-U", uuidFor(`${ctid} data`), "-E", `offset=${2048 * 512}`, "-d", tree, raw, String(blocks)]);
    await rm(tree, { recursive: true, force: true });
    const disk = await wrap(resolve(outDir), ctid, raw, { fsOffset: 2048 * 512, table: "gpt", kind: "ext4" });
    return { ...disk, file: "/srv/www/restore-me.bin", fileBytes: file.length, fileSha256: createHash("sha256").update(file).digest("hex") };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Build disks 201-203 as OUT/<ctid>/root.hdd/{root.hds,DiskDescriptor.xml}. */
export async function buildFsCorpus(outDir: string, options: FsCorpusOptions = {}): Promise<FsCorpusDisk[]> {
  const out = resolve(outDir);
  const log = options.log ?? ((): void => {});
  await mkdir(out, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), "ploopvault-fs-corpus-"));
  try {
    const opts = { largeMiB: options.largeMiB ?? 48, manyFiles: options.manyFiles ?? 10_000 };
    const disks = [await disk201(work, out, opts), await disk202(work, out), await disk203(work, out)];
    for (const d of disks) log(`${d.ctid}: ${d.table} ${d.kind}, ${(d.sizeBytes / MIB).toFixed(0)} MiB disk`);
    return disks;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<number> {
  const usage = "usage: node dist/scripts/fs-corpus.js OUT [--large-mib N] [--many N]";
  const options: FsCorpusOptions = { log: (line) => process.stderr.write(`fs-corpus: ${line}\n`) };
  let outDir: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--large-mib" || a === "--many") {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) {
        process.stderr.write(`${usage}\n`);
        return 2;
      }
      if (a === "--many") options.manyFiles = v;
      else options.largeMiB = v;
    } else if (outDir === undefined && !a.startsWith("-")) {
      outDir = a;
    } else {
      process.stderr.write(`${usage}\n`);
      return 2;
    }
  }
  if (outDir === undefined) {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  const started = Date.now();
  for (const d of await buildFsCorpus(outDir, options)) process.stdout.write(`${d.ctid} ${d.descriptorPath} offset=${d.fsOffset}\n`);
  process.stderr.write(`fs-corpus: done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`fs-corpus: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
