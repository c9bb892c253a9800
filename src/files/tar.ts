/**
 * POSIX.1-2001 (pax) tar headers, pure: what `dump` writes for a folder and GNU tar reads
 * back (`tar -tvf`, `tar --xattrs -x`).
 *
 * - A 512-byte ustar header per entry; a pax extended header ('x') before it whenever
 *   ustar cannot say something: a path or link target over 100 bytes or not ASCII
 *   (hdrcharset=BINARY when not UTF-8), sizes from 8 GiB, ids from 2^21, times with
 *   nanoseconds or outside ustar's range, and xattrs (SCHILY.xattr.NAME, the raw value:
 *   pax records are length-prefixed, so binary values are safe). Owner names stay empty,
 *   so tar uses the numeric ids (a container's users are not the host's).
 * - Sparse files in GNU's pax format 1.0: GNU.sparse.{major,minor,name,realsize} and a
 *   data area that starts with the map of data regions (decimal lines, padded to 512)
 *   followed by only the regions' bytes. GNU tar recreates the holes.
 * - Hard links ('1') point at the first name of the inode in the archive.
 */

export const BLOCK = 512;

export type TarType = "file" | "hardlink" | "symlink" | "chardev" | "blockdev" | "dir" | "fifo";

const TYPE_FLAG: Record<TarType, string> = { file: "0", hardlink: "1", symlink: "2", chardev: "3", blockdev: "4", dir: "5", fifo: "6" };

export interface TarEntry {
  /** Path inside the archive, without a leading "/" (a directory without its trailing "/"). */
  path: Buffer;
  type: TarType;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data that follow in the archive (for a sparse file: its map and its regions). */
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Symlink target or the hard link's first path. */
  linkTarget?: Buffer;
  device?: { major: number; minor: number };
  xattrs?: { name: string; value: Buffer }[];
  sparse?: { realSize: number; mapBytes: number };
}

/** One pax record: "LEN KEY=VALUE\n", LEN counting the whole record including itself. */
export function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, "utf8"), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), "ascii"), body]);
}

function isAscii(b: Buffer): boolean {
  return b.every((c) => c >= 0x20 && c < 0x7f);
}

function isUtf8(b: Buffer): boolean {
  return Buffer.from(b.toString("utf8"), "utf8").equals(b);
}

function writeOctal(h: Buffer, at: number, width: number, value: number): void {
  const digits = value.toString(8);
  if (digits.length > width - 1) throw new RangeError(`tar: ${value} does not fit an octal field of ${width}`);
  h.write(`${digits.padStart(width - 1, "0")}\0`, at, width, "ascii");
}

const OCTAL_MAX = { 8: 0o7777777, 12: 0o77777777777 } as const;

/** The ustar header (plus the pax header in front of it when needed) of one entry. */
export function tarHeader(entry: TarEntry): Buffer {
  const records: Buffer[] = [];
  const pathBytes = entry.type === "dir" ? Buffer.concat([entry.path, Buffer.from("/")]) : entry.path;
  const binary = !isUtf8(pathBytes) || (entry.linkTarget !== undefined && !isUtf8(entry.linkTarget));
  if (binary) records.push(paxRecord("hdrcharset", Buffer.from("BINARY")));
  let ustarName = pathBytes;
  if (entry.sparse !== undefined) {
    records.push(paxRecord("GNU.sparse.major", Buffer.from("1")), paxRecord("GNU.sparse.minor", Buffer.from("0")));
    records.push(paxRecord("GNU.sparse.name", pathBytes), paxRecord("GNU.sparse.realsize", Buffer.from(String(entry.sparse.realSize))));
    const slash = pathBytes.lastIndexOf(0x2f);
    const dir = slash < 0 ? Buffer.alloc(0) : pathBytes.subarray(0, slash + 1);
    ustarName = Buffer.concat([dir, Buffer.from("GNUSparseFile.0/"), pathBytes.subarray(slash + 1)]);
  } else if (pathBytes.length > 100 || !isAscii(pathBytes)) {
    records.push(paxRecord("path", pathBytes));
  }
  if (entry.linkTarget !== undefined && (entry.linkTarget.length > 100 || !isAscii(entry.linkTarget))) records.push(paxRecord("linkpath", entry.linkTarget));
  if (entry.size > OCTAL_MAX[12]) records.push(paxRecord("size", Buffer.from(String(entry.size))));
  if (entry.uid > OCTAL_MAX[8]) records.push(paxRecord("uid", Buffer.from(String(entry.uid))));
  if (entry.gid > OCTAL_MAX[8]) records.push(paxRecord("gid", Buffer.from(String(entry.gid))));
  const mtimeFits = entry.mtimeSec >= 0 && entry.mtimeSec <= OCTAL_MAX[12];
  if (entry.mtimeNsec !== 0 || !mtimeFits) {
    const frac = entry.mtimeNsec === 0 ? "" : `.${String(entry.mtimeNsec).padStart(9, "0")}`;
    records.push(paxRecord("mtime", Buffer.from(`${entry.mtimeSec}${frac}`)));
  }
  for (const x of entry.xattrs ?? []) records.push(paxRecord(`SCHILY.xattr.${x.name}`, x.value));

  const ustar = ustarBlock({
    name: ustarName.length > 100 ? ustarName.subarray(ustarName.length - 100) : ustarName,
    mode: entry.mode,
    uid: Math.min(entry.uid, OCTAL_MAX[8]),
    gid: Math.min(entry.gid, OCTAL_MAX[8]),
    size: Math.min(entry.size, OCTAL_MAX[12]),
    mtime: mtimeFits ? entry.mtimeSec : 0,
    typeflag: TYPE_FLAG[entry.type],
    linkname: entry.linkTarget === undefined ? Buffer.alloc(0) : entry.linkTarget.subarray(0, 100),
    device: entry.device,
  });
  if (records.length === 0) return ustar;
  const pax = Buffer.concat(records);
  const slash = pathBytes.lastIndexOf(0x2f, pathBytes.length - 2);
  const paxName = Buffer.concat([Buffer.from("PaxHeaders.0/"), pathBytes.subarray(slash + 1, slash + 1 + 80)]);
  const paxHeader = ustarBlock({
    name: paxName,
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: pax.length,
    mtime: mtimeFits ? entry.mtimeSec : 0,
    typeflag: "x",
    linkname: Buffer.alloc(0),
  });
  return Buffer.concat([paxHeader, pax, Buffer.alloc(padding(pax.length)), ustar]);
}

interface UstarFields {
  name: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: Buffer;
  device?: { major: number; minor: number } | undefined;
}

function ustarBlock(f: UstarFields): Buffer {
  const h = Buffer.alloc(BLOCK);
  f.name.copy(h, 0, 0, Math.min(100, f.name.length));
  writeOctal(h, 100, 8, f.mode & 0o7777);
  writeOctal(h, 108, 8, f.uid);
  writeOctal(h, 116, 8, f.gid);
  writeOctal(h, 124, 12, f.size);
  writeOctal(h, 136, 12, f.mtime);
  h.write(f.typeflag, 156, 1, "ascii");
  f.linkname.copy(h, 157, 0, Math.min(100, f.linkname.length));
  h.write("ustar\0", 257, 6, "ascii");
  h.write("00", 263, 2, "ascii");
  if (f.device !== undefined) {
    writeOctal(h, 329, 8, Math.min(f.device.major, OCTAL_MAX[8]));
    writeOctal(h, 337, 8, Math.min(f.device.minor, OCTAL_MAX[8]));
  }
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
  return h;
}

/** Zero bytes that pad `size` bytes of data to a whole block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The map at the start of a GNU 1.0 sparse file's data: region count, then offset/size lines, padded. */
export function sparseMap(regions: readonly { offset: number; length: number }[]): Buffer {
  const text = `${[String(regions.length), ...regions.flatMap((r) => [String(r.offset), String(r.length)])].join("\n")}\n`;
  const b = Buffer.from(text, "ascii");
  return Buffer.concat([b, Buffer.alloc(padding(b.length))]);
}

/** The end of an archive: two zero blocks. */
export function tarEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}
