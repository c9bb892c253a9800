export { CHUNKER_ALGORITHM, DEFAULT_AVG_CHUNK, chunkerParamsForAverage, validateChunkerParams, type ChunkerParams } from "./params.js";
export { StreamChunker, chunkBuffer } from "./stream.js";
