/**
 * zstd through one of two bindings of the same library (zstd 1.5.7 in both today):
 *  - "napi": the zstd-napi package, an optional dependency (it compiles C++ on install,
 *    or fetches a prebuilt binary; where neither works npm skips it);
 *  - "zlib": zstd built into node:zlib (Node >= 22.15, 23.8).
 * By default napi where it is installed (measured faster: ~5-10 % compressing 256 KiB
 * chunks at level 3, ~30 % decompressing; bench/stages.ts), else zlib.
 * PLOOPVAULT_ZSTD=napi|zlib forces one (tests run the suite with each).
 *
 * Both write standard zstd frames with the content size in the header, so objects
 * written through either are read through the other (test/util/zstd.test.ts); the bytes
 * may differ slightly (streaming vs one-shot block splitting), never their meaning.
 *
 * Decompression is bounded: a stored object is untrusted input, and a frame header
 * claiming gigabytes must not make us allocate them. The frames are walked first
 * (zstd-frame.ts) and their declared sizes checked against the limit; a prefix of the
 * content can be had without decompressing the rest (zstdDecompressPrefix).
 */
import { createRequire } from "node:module";
import * as zlib from "node:zlib";
import { PloopvaultError } from "../errors.js";
import { listZstdFrames, ZSTD_MAX_BLOCK_CONTENT, zstdContentBytes, zstdFrameBlocks } from "./zstd-frame.js";

export type ZstdBindingName = "napi" | "zlib";
export const ZSTD_BINDING_NAMES: readonly ZstdBindingName[] = ["napi", "zlib"];

export interface ZstdBinding {
  readonly name: ZstdBindingName;
  /** `checksum` adds zstd's content checksum (xxhash64), verified on decompression. */
  compress(data: Uint8Array, level: number, checksum: boolean): Buffer;
  /** Decompress one whole frame whose header declares `contentBytes`. */
  decompress(frame: Uint8Array, contentBytes: number): Buffer;
  /**
   * The first `maxBytes` (< contentBytes) of one frame's content, decompressing little
   * more than needed and allocating at most maxBytes + one block (128 KiB).
   */
  decompressPrefix(frame: Uint8Array, contentBytes: number, maxBytes: number): Buffer;
  /**
   * compress() written into `dst` from `offset` on, which must have room for
   * compressBound(data.length) bytes; returns the bytes written. The same frame as
   * compress(). Absent where the binding has no such call (node:zlib): callers copy.
   * It spares a worker one fresh output buffer per chunk, garbage V8 collects late.
   */
  compressInto?(data: Uint8Array, level: number, checksum: boolean, dst: Uint8Array, offset: number): number;
  /** zstd's worst-case frame size for `size` input bytes (with compressInto). */
  compressBound?(size: number): number;
}

/** The part of zstd-napi used here (declared locally: the package is optional). */
interface ZstdNapi {
  compress(data: Uint8Array, parameters: { compressionLevel: number; checksumFlag: boolean }): Buffer;
  decompress(data: Uint8Array): Buffer;
}
interface ZstdNapiBinding {
  DCtx: new () => { decompressStream(dst: Uint8Array, src: Uint8Array): [number, number, number] };
  CCtx: new () => { setParameter(param: number, value: number): void; compress2(dst: Uint8Array, src: Uint8Array): number };
  CParameter: { compressionLevel: number; checksumFlag: number };
  compressBound(size: number): number;
}

function loadNapi(): ZstdBinding | null {
  let napi: ZstdNapi;
  let native: ZstdNapiBinding;
  try {
    const require = createRequire(import.meta.url);
    napi = require("zstd-napi") as ZstdNapi;
    native = require("zstd-napi/binding") as ZstdNapiBinding;
  } catch {
    return null;
  }
  // One compression context per thread (a module instance per worker), parameters set on change.
  let cctx: InstanceType<ZstdNapiBinding["CCtx"]> | undefined;
  let cctxParams = "";
  return {
    name: "napi",
    compress: (data, level, checksum) => napi.compress(data, { compressionLevel: level, checksumFlag: checksum }),
    compressInto: (data, level, checksum, dst, offset) => {
      cctx ??= new native.CCtx();
      const params = `${level}/${checksum}`;
      if (params !== cctxParams) {
        cctx.setParameter(native.CParameter.compressionLevel, level);
        cctx.setParameter(native.CParameter.checksumFlag, checksum ? 1 : 0);
        cctxParams = params;
      }
      return cctx.compress2(dst.subarray(offset), data);
    },
    compressBound: (size) => native.compressBound(size),
    decompress: (frame) => napi.decompress(frame),
    // a streaming context: it stops where the output buffer is full
    decompressPrefix: (frame, _contentBytes, maxBytes) => {
      const dctx = new native.DCtx();
      const out = Buffer.allocUnsafe(maxBytes);
      let produced = 0;
      let consumed = 0;
      while (produced < maxBytes && consumed < frame.length) {
        const [, wrote, read] = dctx.decompressStream(out.subarray(produced), frame.subarray(consumed));
        produced += wrote;
        consumed += read;
        if (wrote === 0 && read === 0) break;
      }
      return out.subarray(0, produced);
    },
  };
}

/** node:zlib's zstd functions (typed by @types/node 24; absent at run time before Node 22.15). */
type ZlibZstd = Pick<typeof zlib, "zstdCompressSync" | "zstdDecompressSync">;

function loadZlib(): ZstdBinding | null {
  const z = zlib as Partial<ZlibZstd>;
  if (typeof z.zstdCompressSync !== "function" || typeof z.zstdDecompressSync !== "function") return null;
  const { ZSTD_c_compressionLevel, ZSTD_c_checksumFlag, ZSTD_e_continue } = zlib.constants;
  const compress = z.zstdCompressSync;
  const decompress = z.zstdDecompressSync;
  // One output buffer of the declared size; maxOutputLength bounds it again.
  const decompressFrame = (frame: Uint8Array, contentBytes: number): Buffer =>
    decompress(frame, { chunkSize: Math.max(64, contentBytes), maxOutputLength: Math.max(1, contentBytes) });
  return {
    name: "zlib",
    // One call with all input and ZSTD_e_end: zstd learns the size and writes it in the frame header.
    compress: (data, level, checksum) => compress(data, { params: { [ZSTD_c_compressionLevel]: level, [ZSTD_c_checksumFlag]: checksum ? 1 : 0 } }),
    decompress: decompressFrame,
    // node:zlib has no synchronous streaming: give it the frame cut after some block
    // (ZSTD_e_continue: a cut frame is not an error). The fewest blocks that hold maxBytes
    // hold less than maxBytes + one block, so that bounds every attempt's output; the
    // first guess counts blocks as full, then a binary search over the block count.
    decompressPrefix: (frame, _contentBytes, maxBytes) => {
      const blocks = zstdFrameBlocks(frame);
      const cap = maxBytes + ZSTD_MAX_BLOCK_CONTENT;
      const attempt = (count: number): Buffer | null => {
        try {
          return decompress(frame.subarray(0, blocks[count - 1]!.end), {
            finishFlush: ZSTD_e_continue,
            chunkSize: Math.min(cap, 1 << 20),
            maxOutputLength: cap,
          });
        } catch (error) {
          if ((error as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE") return null; // more than enough
          throw error;
        }
      };
      let enough = blocks.length; // all blocks hold the whole content, more than maxBytes
      let tooFew = 0;
      let count = 0;
      for (let room = 0; count < blocks.length && room < maxBytes; ) room += blocks[count++]!.maxContent;
      for (;;) {
        const out = attempt(count);
        if (out !== null && out.length >= maxBytes) return out.subarray(0, maxBytes);
        if (out === null) enough = count;
        else tooFew = count;
        // a frame whose blocks hold less than its header declares (zstd would fail at its end)
        if (enough - tooFew <= 1 && count === enough) throw new Error(`zstd frame holds less than the ${maxBytes} bytes asked for`);
        count = enough - tooFew <= 1 ? enough : (tooFew + enough) >> 1;
      }
    },
  };
}

const loaded = new Map<ZstdBindingName, ZstdBinding | null>();

/** The binding of that name, or null where it is not available (not installed, or Node too old). */
export function zstdBinding(name: ZstdBindingName): ZstdBinding | null {
  if (!loaded.has(name)) loaded.set(name, name === "napi" ? loadNapi() : loadZlib());
  return loaded.get(name)!;
}

let selected: ZstdBinding | undefined;

/** The binding this process uses: PLOOPVAULT_ZSTD if set, else napi where installed, else zlib. */
export function activeZstdBinding(): ZstdBinding {
  if (selected !== undefined) return selected;
  const forced = process.env.PLOOPVAULT_ZSTD;
  if (forced !== undefined && forced !== "") {
    if (!(ZSTD_BINDING_NAMES as readonly string[]).includes(forced)) {
      throw new PloopvaultError(`PLOOPVAULT_ZSTD=${JSON.stringify(forced).slice(0, 40)}: unknown zstd binding (use napi or zlib)`);
    }
    const binding = zstdBinding(forced as ZstdBindingName);
    if (binding === null) throw new PloopvaultError(`PLOOPVAULT_ZSTD=${forced}: ${unavailable(forced as ZstdBindingName)}`);
    selected = binding;
    return binding;
  }
  const binding = zstdBinding("napi") ?? zstdBinding("zlib");
  if (binding === null) throw new PloopvaultError(`no zstd available: ${unavailable("zlib")}, and ${unavailable("napi")}`);
  selected = binding;
  return binding;
}

function unavailable(name: ZstdBindingName): string {
  return name === "napi"
    ? "the optional package zstd-napi is not installed (npm skips it where it cannot be built)"
    : `Node ${process.version} has no zstd in node:zlib (Node >= 22.15 has; Node 24 LTS is the supported runtime)`;
}

/** `checksum` adds zstd's content checksum (xxhash64), verified on decompression. */
export function zstdCompress(data: Uint8Array, level: number, checksum = false, binding: ZstdBinding = activeZstdBinding()): Buffer {
  return binding.compress(data, level, checksum);
}

/** Throws an Error (caller adds context) if the data is not exactly whole frames within maxBytes. */
export function zstdDecompressBounded(data: Uint8Array, maxBytes: number, binding: ZstdBinding = activeZstdBinding()): Buffer {
  const frames = listZstdFrames(data, maxBytes);
  // Frame by frame: node:zlib on Node 22 stops at the first frame's end (Node 24 does not).
  // A stored object is one frame, so this is one call.
  const parts = frames
    .filter((f) => !f.skippable)
    .map((f) => {
      const plain = binding.decompress(data.subarray(f.offset, f.offset + f.frameBytes), f.contentBytes);
      if (plain.length !== f.contentBytes) throw new Error(`zstd frame at byte ${f.offset} holds ${plain.length} bytes, its header declares ${f.contentBytes}`);
      return plain;
    });
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/**
 * The decompressed size the frame headers declare (every frame must declare one). Throws
 * an Error (caller adds context) for a frame without a size or damaged frame boundaries.
 */
export function zstdContentSize(data: Uint8Array): number {
  return zstdContentBytes(data);
}

/**
 * The first `maxBytes` bytes of the content (all of it if shorter), decompressing only as
 * far as needed: a header can be read before deciding how much of the rest to allow.
 * Nothing is verified beyond what zstd checks on the way (the content checksum is at the
 * end of a frame: callers decompress the whole object before trusting it).
 */
export function zstdDecompressPrefix(data: Uint8Array, maxBytes: number, binding: ZstdBinding = activeZstdBinding()): Buffer {
  const parts: Buffer[] = [];
  let produced = 0;
  for (const f of listZstdFrames(data)) {
    if (produced >= maxBytes) break;
    if (f.skippable || f.contentBytes === 0) continue;
    const frame = data.subarray(f.offset, f.offset + f.frameBytes);
    const want = maxBytes - produced;
    const part = f.contentBytes <= want ? binding.decompress(frame, f.contentBytes) : binding.decompressPrefix(frame, f.contentBytes, want);
    parts.push(part);
    produced += part.length;
    if (part.length < Math.min(want, f.contentBytes)) break; // a short prefix: nothing after it can follow on
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}
