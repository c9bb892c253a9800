/**
 * The checksums of ext4 metadata and of partition tables, pure and table driven:
 *  - crc32c (Castagnoli, reflected polynomial 0x82F63B78), the metadata_csum algorithm.
 *    ext4 stores the *raw* register (e2fsprogs ext2fs_crc32c_le: seeded, no final
 *    inversion), so crc32cUpdate() is exactly that; crc32c() is the standard
 *    check-value form (init ~0, final ~) for tests against published vectors.
 *  - crc16 (ANSI/IBM, reflected 0xA001), the older gdt_csum group descriptor checksum.
 *  - crc32 (IEEE, reflected 0xEDB88320) for GPT headers and entry arrays.
 * node:zlib has crc32 only from Node 20.15/22.2 and no crc32c at all, so all three live here.
 */

function table(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

const CRC32C_TABLE = table(0x82f63b78);
const CRC32_TABLE = table(0xedb88320);
const CRC16_TABLE = table(0xa001);

/** Continue a crc32c register over `data` (no pre/post inversion: ext2fs_crc32c_le). */
export function crc32cUpdate(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  let c = crc >>> 0;
  for (let i = start; i < end; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** Standard CRC-32C of `data` ("123456789" -> 0xe3069283). */
export function crc32c(data: Uint8Array): number {
  return ~crc32cUpdate(0xffffffff, data) >>> 0;
}

/** Standard CRC-32 (IEEE 802.3, as in zip and GPT) of data[start, end). */
export function crc32(data: Uint8Array, start = 0, end = data.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC32_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** Continue a crc16 register (e2fsprogs ext2fs_crc16). */
export function crc16Update(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  let c = crc & 0xffff;
  for (let i = start; i < end; i++) c = (CRC16_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)) & 0xffff;
  return c;
}

/** Little-endian 32-bit value as 4 bytes (checksum inputs such as inode and group numbers). */
export function le32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return b;
}

export function le64(value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value));
  return b;
}
