#!/usr/bin/env node
/**
 * The ploopvault command. This entry point only turns on the compile cache
 * (src/util/compile-cache.ts) before the program's modules load, then runs src/main.ts.
 */
import { enableOwnCompileCache } from "./util/compile-cache.js";

enableOwnCompileCache();
await import("./main.js");
