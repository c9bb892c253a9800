/**
 * All cut points of a buffer: the WebAssembly loop (gear-wasm.ts) where WebAssembly is
 * available, else findCut repeated. Both give exactly findCut's cut points (tested).
 */
import { findCut, type CutMasks, type ScanState } from "./fastcdc.js";
import { wasmFindCuts } from "./gear-wasm.js";
import type { ChunkerParams } from "./params.js";

/**
 * Every cut end in data[from..end) (indexes into `data`, ascending), continuing the chunk
 * described by `state` and leaving `state` as repeated findCut calls would.
 */
export function findCuts(data: Uint8Array, from: number, end: number, params: ChunkerParams, masks: CutMasks, state: ScanState): number[] {
  return wasmFindCuts(data, from, end, params, masks, state) ?? findCutsJs(data, from, end, params, masks, state);
}

/** The reference: findCut in a loop. */
export function findCutsJs(data: Uint8Array, from: number, end: number, params: ChunkerParams, masks: CutMasks, state: ScanState): number[] {
  const cuts: number[] = [];
  for (let start = from; ; ) {
    const at = findCut(data, start, end, params, masks, state);
    if (at < 0) return cuts;
    cuts.push(at);
    start = at;
  }
}
