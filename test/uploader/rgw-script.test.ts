/**
 * scripts/rgw.sh's refusals (the happy path runs for every suite run in test/global-setup.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PROJECT_ROOT } from "../helpers/s3-server.js";

const script = join(PROJECT_ROOT, "scripts/rgw.sh");
const isRoot = process.getuid?.() === 0;

describe("scripts/rgw.sh", () => {
  let dir: string;
  let server: Server;
  let busyPort: number;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "pv-rgw-script-"));
    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    busyPort = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it.runIf(isRoot)("refuses a port that is in use, at once, creating nothing", async () => {
    const target = join(dir, "busy");
    const started = Date.now();
    const r = await execa("bash", [script, "start", target, String(busyPort)], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`port ${busyPort} on 127.0.0.1 is already in use`);
    expect(r.stdout).toBe("");
    expect(existsSync(target)).toBe(false);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it.runIf(isRoot)("refuses a directory that is not empty", async () => {
    const target = join(dir, "full");
    mkdirSync(target);
    writeFileSync(join(target, "something"), "x");
    const r = await execa("bash", [script, "start", target, "1"], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/exists and is not empty/);
  });

  it("purge deletes nothing it did not create", async () => {
    const target = join(dir, "foreign");
    mkdirSync(target);
    writeFileSync(join(target, "precious"), "x");
    const r = await execa("bash", [script, "purge", target], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/does not look like a directory made by/);
    expect(existsSync(join(target, "precious"))).toBe(true);
  });

  it("usage errors exit 2", async () => {
    for (const args of [[], ["bogus"], ["start"], ["stop"]]) {
      const r = await execa("bash", [script, ...args], { reject: false });
      expect(r.exitCode, args.join(" ")).toBe(2);
    }
    const bad = await execa("bash", [script, "start", join(dir, "x"), "not-a-port"], { reject: false });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain("invalid port");
  });
});
