/**
 * Child process for host-lock.test.ts (bundled with esbuild, run with node):
 *   node hold-host-lock.mjs LOCKPATH hold|exit
 * Takes the host lock, prints "held <pid>", then either waits forever ("hold": the test
 * SIGKILLs it) or returns without releasing ("exit": Node must still exit on its own).
 */
import { acquireHostLock } from "../../src/host/host-lock.js";

const [lockPath, mode] = process.argv.slice(2);
if (lockPath === undefined) throw new Error("usage: hold-host-lock LOCKPATH hold|exit");
await acquireHostLock(lockPath, { waitSeconds: 5 });
process.stdout.write(`held ${process.pid}\n`);
if (mode === "hold") setInterval(() => undefined, 1 << 30);
