/**
 * The NBD protocol's messages (github.com/NetworkBlockDevice/nbd doc/proto.md), as pure
 * functions over buffers: the server (src/nbd/server.ts) does the socket I/O.
 *
 * What ploopvault speaks: fixed newstyle handshake (with NO_ZEROES), options
 * EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT and
 * SET_META_CONTEXT (the one context base:allocation); in transmission READ (simple or
 * structured replies, holes as NBD_REPLY_TYPE_OFFSET_HOLE), BLOCK_STATUS, FLUSH (a no-op:
 * nothing is ever written) and DISC; writes are refused with EPERM. Everything is big
 * endian. Every length a client sends is checked against a bound before anything is
 * allocated for it, so hostile input costs an error reply, never memory.
 */

// Handshake
export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const NBD_OPTS_MAGIC = 0x49484156454f5054n; // "IHAVEOPT"
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Options
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

// Option replies
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 2 ** 31;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

// NBD_REP_INFO types
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Transmission flags
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

// Requests
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;

// Structured replies
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 2 ** 15 + 1;

// base:allocation
export const BASE_ALLOCATION = "base:allocation";
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// Error values (the protocol's own numbering, not the host's errno)
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_EINVAL = 22;
export const NBD_EOVERFLOW = 75;
export const NBD_ESHUTDOWN = 108;

/** Strings (names, queries, messages): the spec's MUST limit. */
export const MAX_STRING_BYTES = 4096;
export const OPTION_HEADER_BYTES = 16;
export const REQUEST_BYTES = 28;

// ---------------------------------------------------------------------------------------
// Handshake

/** Server: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  b.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return b;
}

/** The client's 32-bit flags: null if it sets a bit the server did not offer (then the server must close). */
export function parseClientFlags(buf: Buffer): { fixedNewstyle: boolean; noZeroes: boolean } | null {
  const flags = buf.readUInt32BE(0);
  if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) return null;
  return { fixedNewstyle: (flags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0, noZeroes: (flags & NBD_FLAG_C_NO_ZEROES) !== 0 };
}

export interface OptionHeader {
  option: number;
  /** Length of the option data that follows (client-controlled: up to 4 GiB). */
  length: number;
}

/** Option header (16 bytes): null if the magic is wrong (the stream cannot be resynchronised). */
export function parseOptionHeader(buf: Buffer): OptionHeader | null {
  if (buf.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) return null;
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

/** An error reply with a message for the human on the client side. */
export function encodeOptionError(option: number, type: number, message: string): Buffer {
  return encodeOptionReply(option, type, Buffer.from(message.slice(0, 1024), "utf8"));
}

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, 124 zeros unless NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : 124));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

export function encodeInfoString(type: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const s = Buffer.from(text, "utf8");
  const b = Buffer.alloc(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

/** NBD_REP_SERVER data: u32 name length, name, then a description for humans. */
export function encodeServerEntry(name: string, description: string): Buffer {
  const n = Buffer.from(name, "utf8");
  const d = Buffer.from(description, "utf8");
  const b = Buffer.alloc(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function encodeMetaContext(id: number, name: string): Buffer {
  const s = Buffer.from(name, "utf8");
  const b = Buffer.alloc(4 + s.length);
  b.writeUInt32BE(id, 0);
  s.copy(b, 4);
  return b;
}

/** A parse failure of option data: the reply type to send and why. */
export interface OptionDataError {
  error: number;
  message: string;
}

function isOptionDataError(x: unknown): x is OptionDataError {
  return typeof x === "object" && x !== null && "error" in x;
}

/** A string field: well-formed UTF-8, no NUL, at most MAX_STRING_BYTES. */
function decodeString(bytes: Buffer, what: string): string | OptionDataError {
  if (bytes.length > MAX_STRING_BYTES) return { error: NBD_REP_ERR_TOO_BIG, message: `${what} longer than ${MAX_STRING_BYTES} bytes` };
  const text = bytes.toString("utf8");
  if (text.includes("\0") || text.includes("\ufffd") || !Buffer.from(text, "utf8").equals(bytes))
    return { error: NBD_REP_ERR_INVALID, message: `${what} is not a valid string` };
  return text;
}

/** NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count x u16 info requests. */
export function parseInfoRequest(data: Buffer): { name: string; requests: number[] } | OptionDataError {
  if (data.length < 6) return { error: NBD_REP_ERR_INVALID, message: "option data shorter than 6 bytes" };
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return { error: NBD_REP_ERR_INVALID, message: "export name length beyond the option data" };
  const name = decodeString(data.subarray(4, 4 + nameLength), "export name");
  if (isOptionDataError(name)) return name;
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) return { error: NBD_REP_ERR_INVALID, message: "information request count does not match the option length" };
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, requests };
}

/** Most queries one meta context option may carry (each needs a reply line). */
export const MAX_META_QUERIES = 128;

/** NBD_OPT_LIST/SET_META_CONTEXT data: u32 name length, name, u32 count, count x (u32 length, query). */
export function parseMetaContextRequest(data: Buffer): { name: string; queries: string[] } | OptionDataError {
  if (data.length < 8) return { error: NBD_REP_ERR_INVALID, message: "option data shorter than 8 bytes" };
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) return { error: NBD_REP_ERR_INVALID, message: "export name length beyond the option data" };
  const name = decodeString(data.subarray(4, 4 + nameLength), "export name");
  if (isOptionDataError(name)) return name;
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  if (count > MAX_META_QUERIES) return { error: NBD_REP_ERR_TOO_BIG, message: `more than ${MAX_META_QUERIES} queries` };
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return { error: NBD_REP_ERR_INVALID, message: "query beyond the option data" };
    const length = data.readUInt32BE(at);
    at += 4;
    if (length > data.length - at) return { error: NBD_REP_ERR_INVALID, message: "query length beyond the option data" };
    const query = decodeString(data.subarray(at, at + length), "query");
    if (isOptionDataError(query)) return query;
    queries.push(query);
    at += length;
  }
  if (at !== data.length) return { error: NBD_REP_ERR_INVALID, message: "trailing bytes after the queries" };
  return { name, queries };
}

export { isOptionDataError };

/**
 * The contexts a query list selects (SET) or lists (LIST) among the one we have,
 * base:allocation. An empty list selects nothing but lists everything; "base:" is a
 * wildcard only when listing; unknown namespaces and leaf names are ignored.
 */
export function matchMetaContexts(queries: readonly string[], listing: boolean): string[] {
  if (queries.length === 0) return listing ? [BASE_ALLOCATION] : [];
  return queries.some((q) => q === BASE_ALLOCATION || (listing && q === "base:")) ? [BASE_ALLOCATION] : [];
}

// ---------------------------------------------------------------------------------------
// Transmission

export interface Request {
  flags: number;
  type: number;
  /** Opaque 8 bytes, echoed in the reply. */
  handle: Buffer;
  /** u64 on the wire: may exceed Number.MAX_SAFE_INTEGER, so compared as a bigint. */
  offset: bigint;
  length: number;
}

/** Request header (28 bytes): null if the magic is wrong (then the server must hang up). */
export function parseRequest(buf: Buffer): Request | null {
  if (buf.readUInt32BE(0) !== NBD_REQUEST_MAGIC) return null;
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    handle: Buffer.from(buf.subarray(8, 16)),
    offset: buf.readBigUInt64BE(16),
    length: buf.readUInt32BE(24),
  };
}

/** Whether [offset, offset + length) lies inside an export of `size` bytes. */
export function inBounds(offset: bigint, length: number, size: number): boolean {
  return offset + BigInt(length) <= BigInt(size);
}

export function encodeSimpleReply(error: number, handle: Buffer): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  handle.copy(b, 8);
  return b;
}

/** A structured reply chunk's 20-byte header, followed by `payloadLength` bytes. */
export function encodeChunkHeader(flags: number, type: number, handle: Buffer, payloadLength: number, extra = 0): Buffer {
  const b = Buffer.alloc(20 + extra);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  handle.copy(b, 8);
  b.writeUInt32BE(payloadLength, 16);
  return b;
}

/** NBD_REPLY_TYPE_OFFSET_DATA header + offset (28 bytes); the data follows it. */
export function encodeOffsetDataHeader(flags: number, handle: Buffer, offset: number, dataLength: number): Buffer {
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_OFFSET_DATA, handle, 8 + dataLength, 8);
  b.writeBigUInt64BE(BigInt(offset), 20);
  return b;
}

export function encodeOffsetHole(flags: number, handle: Buffer, offset: number, length: number): Buffer {
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_OFFSET_HOLE, handle, 12, 12);
  b.writeBigUInt64BE(BigInt(offset), 20);
  b.writeUInt32BE(length, 28);
  return b;
}

export function encodeNone(handle: Buffer): Buffer {
  return encodeChunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, 0);
}

/** NBD_REPLY_TYPE_ERROR (final chunk): error value and a message for humans. */
export function encodeStructuredError(handle: Buffer, error: number, message: string): Buffer {
  let text = Buffer.from(message, "utf8");
  if (text.length > 1024) text = text.subarray(0, 1024);
  const b = encodeChunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, handle, 6 + text.length, 6 + text.length);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(text.length, 24);
  text.copy(b, 26);
  return b;
}

export interface StatusDescriptor {
  length: number;
  flags: number;
}

export function encodeBlockStatus(handle: Buffer, contextId: number, descriptors: readonly StatusDescriptor[]): Buffer {
  const payload = 4 + 8 * descriptors.length;
  const b = encodeChunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, handle, payload, payload);
  b.writeUInt32BE(contextId, 20);
  descriptors.forEach((d, i) => {
    b.writeUInt32BE(d.length, 24 + 8 * i);
    b.writeUInt32BE(d.flags, 28 + 8 * i);
  });
  return b;
}

// ---------------------------------------------------------------------------------------
// Planning replies from the export's allocation

/** A run of the export that is either stored data or a hole (reads as zeros). */
export interface Extent {
  offset: number;
  length: number;
  hole: boolean;
}

/**
 * The content chunks of a structured read of [offset, offset + length): holes as hole
 * chunks, neighbouring data extents merged into one data chunk. With `dontFragment`
 * (NBD_CMD_FLAG_DF) one chunk only: all hole, or data with its zeros in it.
 */
export function planRead(extents: readonly Extent[], offset: number, length: number, dontFragment: boolean): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const from = Math.max(offset, e.offset);
    const to = Math.min(offset + length, e.offset + e.length);
    if (to <= from) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last.hole === e.hole && last.offset + last.length === from) last.length += to - from;
    else out.push({ offset: from, length: to - from, hole: e.hole });
  }
  const covered = out.reduce((s, e) => s + e.length, 0);
  if (covered !== length || (out[0]?.offset ?? offset) !== offset) {
    throw new Error(`internal error: extents cover ${covered} of ${length} bytes at ${offset}`);
  }
  if (dontFragment && out.length > 1) return [{ offset, length, hole: false }];
  return out;
}

/**
 * base:allocation descriptors for a block status request: holes are HOLE|ZERO, data 0;
 * neighbours with equal status merged; clipped to the request; with REQ_ONE only the first.
 */
export function planBlockStatus(extents: readonly Extent[], offset: number, length: number, reqOne: boolean): StatusDescriptor[] {
  const out: StatusDescriptor[] = [];
  let at = offset;
  for (const e of extents) {
    const from = Math.max(at, e.offset);
    const to = Math.min(offset + length, e.offset + e.length);
    if (to <= from) continue;
    const flags = e.hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === flags) last.length += to - from;
    else out.push({ length: to - from, flags });
    at = to;
  }
  return reqOne ? out.slice(0, 1) : out;
}
