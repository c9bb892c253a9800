/**
 * The gear/FastCDC scan of findCut (fastcdc.ts) as a small WebAssembly function, for
 * whole buffers: the same loop, byte for byte, without JavaScript's per-access checks
 * (~2x the JavaScript loop; bench/stages.ts). findCut stays the reference; the tests
 * hold the two to identical cut points.
 *
 * The module is assembled here from its instructions rather than shipped as a binary, so
 * what runs is what is read: no build step, no toolchain. One instance per thread.
 * Memory: the gear table (256 x i32) at 0, the scan state at STATE, the input window at
 * DATA, then the cut list (u32, window-relative ends). Input is copied in windows of
 * WINDOW bytes, so the memory stays ~WINDOW whatever the caller's buffer size.
 *
 * Why not SIMD: the loop is bound by the table look-up per byte (a gather, which WASM
 * SIMD lacks: four scalar loads and lane inserts per vector) and by the hash's one-cycle
 * dependency; measured, even a two-bytes-per-step unrolling was slower than this loop.
 */
import { GEAR } from "./gear.js";
import type { CutMasks, ScanState } from "./fastcdc.js";
import type { ChunkerParams } from "./params.js";

const STATE = 1024; // [scanned: i32, hash: i32] in and out
const DATA = 1040;
const WINDOW = 1 << 20;
const PAGE = 65536;

// opcodes (WebAssembly core specification 2.0, section 5.4)
const BLOCK = 0x02;
const LOOP = 0x03;
const IF = 0x04;
const END = 0x0b;
const BR = 0x0c;
const BR_IF = 0x0d;
const RETURN = 0x0f;
const SELECT = 0x1b;
const GET = 0x20;
const SET = 0x21;
const I32_LOAD = 0x28;
const I32_LOAD8_U = 0x2d;
const I32_STORE = 0x36;
const I32_CONST = 0x41;
const I32_EQZ = 0x45;
const I32_EQ = 0x46;
const I32_LT_S = 0x48;
const I32_GE_S = 0x4e;
const I32_ADD = 0x6a;
const I32_SUB = 0x6b;
const I32_AND = 0x71;
const I32_SHL = 0x74;
const VOID = 0x40;
const I32 = 0x7f;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const utf8 = (s: string): number[] => vec([...Buffer.from(s, "utf8")].map((b) => [b]));

/*
 * scan(len, min, avg, max, strict, loose) -> number of cuts
 * Scans mem[DATA, DATA+len) continuing the chunk described by the state at STATE (bytes
 * of it already scanned, hash), writes the cut ends to the cut list and the state at the
 * window's end back to STATE. Addresses are signed: a chunk may have started before the
 * window (chunkStart < DATA, even < 0), as in findCut.
 */
const P_LEN = 0;
const P_MIN = 1;
const P_AVG = 2;
const P_MAX = 3;
const P_STRICT = 4;
const P_LOOSE = 5;
const L_END = 6; // DATA + len
const L_START = 7; // address where the current chunk starts
const L_I = 8;
const L_HASH = 9;
const L_STOP = 10;
const L_COUNT = 11;
const L_OUT = 12; // the cut list
const LOCALS = 7;

const get = (l: number): number[] => [GET, l];
const set = (l: number): number[] => [SET, l];
const i32 = (v: number): number[] => [I32_CONST, ...sleb(v)];
const load = (addr: number): number[] => [...i32(addr), I32_LOAD, 2, 0];
const store = (addr: number, value: number[]): number[] => [...i32(addr), ...value, I32_STORE, 2, 0];

/** hash = (hash << 1) + gear[mem[i]]; i++ */
const roll = [
  ...get(L_HASH),
  ...i32(1),
  I32_SHL,
  ...get(L_I),
  I32_LOAD8_U,
  0,
  0,
  ...i32(2),
  I32_SHL,
  I32_LOAD,
  2,
  0,
  I32_ADD,
  ...set(L_HASH),
  ...get(L_I),
  ...i32(1),
  I32_ADD,
  ...set(L_I),
];

/** stop = min(end, start + size) */
const stopAt = (size: number): number[] => [
  ...get(L_START),
  ...get(size),
  I32_ADD,
  ...get(L_END),
  ...get(L_START),
  ...get(size),
  I32_ADD,
  ...get(L_END),
  I32_LT_S,
  SELECT,
  ...set(L_STOP),
];

const whileBelowStop = (body: number[]): number[] => [
  ...get(L_I),
  ...get(L_STOP),
  I32_LT_S,
  IF,
  VOID,
  LOOP,
  VOID,
  ...body,
  ...get(L_I),
  ...get(L_STOP),
  I32_LT_S,
  BR_IF,
  0,
  END,
  END,
];

/** Roll from i to stop; branch to the enclosing `$cut` block (depth 0 outside) where hash & mask is 0. */
const rollChecking = (mask: number): number[] => whileBelowStop([...roll, ...get(L_HASH), ...get(mask), I32_AND, I32_EQZ, BR_IF, 2]);

/** Save the state at the window's end (what findCut leaves in its ScanState when it returns -1) and return. */
const saveAndReturn = (hash: number[]): number[] => [
  ...store(STATE, [...get(L_END), ...get(L_START), I32_SUB]),
  ...store(STATE + 4, hash),
  ...get(L_COUNT),
  RETURN,
];

// prettier-ignore
const body: number[] = [
  ...vec([[LOCALS, I32]]),
  ...i32(DATA),
  ...get(P_LEN),
  I32_ADD,
  ...set(L_END),
  ...get(L_END),
  ...i32(3),
  I32_ADD,
  ...i32(-4),
  I32_AND,
  ...set(L_OUT),
  ...i32(DATA),
  ...load(STATE),
  I32_SUB,
  ...set(L_START),
  ...load(STATE + 4),
  ...set(L_HASH),
  ...i32(DATA),
  ...set(L_I),
  LOOP,
  VOID, // $chunk: find the end of the chunk that starts at `start`, scanning from i
  BLOCK,
  VOID, // $cut
  // bytes below min never cut: start the hash 32 bytes before min (the window is 32 bytes)
  ...get(L_I),
  ...get(L_START),
  ...get(P_MIN),
  I32_ADD,
  ...i32(32),
  I32_SUB,
  I32_LT_S,
  IF,
  VOID,
  ...get(L_START),
  ...get(P_MIN),
  I32_ADD,
  ...i32(32),
  I32_SUB,
  ...set(L_I),
  ...i32(0),
  ...set(L_HASH),
  ...get(L_I),
  ...get(L_END),
  I32_GE_S,
  IF,
  VOID,
  ...saveAndReturn(i32(0)),
  END,
  END,
  ...stopAt(P_MIN),
  ...whileBelowStop(roll),
  ...stopAt(P_AVG),
  ...rollChecking(P_STRICT),
  ...stopAt(P_MAX),
  ...rollChecking(P_LOOSE),
  // no content-defined cut: forced at max, or the window ended inside the chunk
  ...get(L_I),
  ...get(L_START),
  ...get(P_MAX),
  I32_ADD,
  I32_EQ,
  BR_IF,
  0,
  ...saveAndReturn(get(L_HASH)),
  END, // $cut: the chunk ends just before i; the next starts there from a fresh state
  ...get(L_OUT),
  ...get(L_COUNT),
  ...i32(2),
  I32_SHL,
  I32_ADD,
  ...get(L_I),
  ...i32(DATA),
  I32_SUB,
  I32_STORE,
  2,
  0,
  ...get(L_COUNT),
  ...i32(1),
  I32_ADD,
  ...set(L_COUNT),
  ...get(L_I),
  ...set(L_START),
  ...i32(0),
  ...set(L_HASH),
  BR,
  0,
  END, // $chunk
  ...get(L_COUNT),
  END,
];

function moduleBytes(): Uint8Array {
  const type = section(1, vec([[0x60, ...vec(Array.from({ length: 6 }, () => [I32])), ...vec([[I32]])]]));
  const func = section(3, vec([[0]]));
  const memory = section(5, vec([[0x00, 1]])); // min 1 page, no max
  const exports = section(
    7,
    vec([
      [...utf8("scan"), 0x00, 0],
      [...utf8("memory"), 0x02, 0],
    ]),
  );
  const code = section(10, vec([[...uleb(body.length), ...body]]));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...type, ...func, ...memory, ...exports, ...code]);
}

interface GearScanExports {
  scan(len: number, min: number, avg: number, max: number, strict: number, loose: number): number;
  memory: { readonly buffer: ArrayBuffer; grow(pages: number): number };
}

/** The part of the WebAssembly global used here (TypeScript declares it only in the DOM library). */
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { readonly exports: object };
}

let instance: GearScanExports | null | undefined;

/** The module, or null where WebAssembly is unavailable (e.g. node --jitless): callers fall back to findCut. */
function scanner(): GearScanExports | null {
  if (instance === undefined) {
    const api = (globalThis as { WebAssembly?: WebAssemblyApi }).WebAssembly;
    try {
      if (api === undefined) throw new Error("no WebAssembly");
      const exports = new api.Instance(new api.Module(moduleBytes())).exports as GearScanExports;
      const need = DATA + WINDOW + 4 + 4 * (Math.floor(WINDOW / 64) + 1);
      exports.memory.grow(Math.ceil(need / PAGE) - exports.memory.buffer.byteLength / PAGE);
      new Int32Array(exports.memory.buffer, 0, 256).set(new Int32Array(GEAR.buffer, GEAR.byteOffset, 256));
      instance = exports;
    } catch {
      instance = null;
    }
  }
  return instance;
}

export function wasmGearAvailable(): boolean {
  return scanner() !== null;
}

/**
 * Every cut end in data[from..end), as repeated findCut calls would return them (indexes
 * into `data`, ascending), continuing from and updating `state` the same way. Null if
 * WebAssembly is unavailable.
 */
export function wasmFindCuts(data: Uint8Array, from: number, end: number, params: ChunkerParams, masks: CutMasks, state: ScanState): number[] | null {
  const wasm = scanner();
  if (wasm === null) return null;
  const { scan, memory } = wasm;
  const cuts: number[] = [];
  const stateView = new Int32Array(memory.buffer, STATE, 2);
  stateView[0] = state.scanned;
  stateView[1] = state.hash;
  // at least one call, even for an empty range: findCut updates the state then too
  let at = from;
  do {
    const len = Math.max(0, Math.min(WINDOW, end - at));
    new Uint8Array(memory.buffer, DATA, len).set(data.subarray(at, at + len));
    const count = scan(len, params.minSize, params.avgSize, params.maxSize, masks.strict | 0, masks.loose | 0);
    const list = new Uint32Array(memory.buffer, (DATA + len + 3) & ~3, count);
    for (let k = 0; k < count; k++) cuts.push(at + list[k]!);
    at += len;
  } while (at < end);
  state.scanned = stateView[0]!;
  state.hash = stateView[1]!;
  return cuts;
}
