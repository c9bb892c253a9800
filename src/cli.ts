#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=8
/**
 * The ploopvault command. This entry point only turns on the compile cache
 * (src/util/compile-cache.ts) before the program's modules load, then runs src/main.ts.
 *
 * The first line is the launcher: two memory settings a process cannot give itself once
 * it runs (docs/performance.md, "Peak RSS"). MALLOC_ARENA_MAX=2: glibc gives each thread
 * (main, chunk workers, libuv pool) its own malloc arena, which keeps the chunk buffers
 * freed in it (~20 MiB). --max-semi-space-size=8 (MiB): V8 lets an isolate's young
 * generation grow to 64 MiB under the AWS SDK's garbage; 8 caps it near 24 MiB at no
 * measured cost in time. `node dist/src/cli.js` skips both (tests do; nothing else changes).
 */
import { enableOwnCompileCache } from "./util/compile-cache.js";

enableOwnCompileCache();
await import("./main.js");
