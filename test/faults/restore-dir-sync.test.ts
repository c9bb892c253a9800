/**
 * The last step of a restore fsyncs the target's directory, so the renamed target survives
 * a crash (issue 12, item 12). That error used to be ignored: the restore reported success
 * for a target whose name might vanish at the next power loss. A failing fsync is injected
 * (a wrapper around node:fs/promises' open, for the target's directory only).
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { chunkerParamsForAverage } from "../../src/chunker/params.js";
import type { Manifest } from "../../src/manifest/format.js";
import { newRepositoryConfig } from "../../src/repository/config.js";
import { Repository } from "../../src/repository/repository.js";
import { restorePloop, restoreRaw } from "../../src/restore/restore.js";
import { LocalDirectoryStore } from "../../src/uploader/local.js";

const failSyncOf = vi.hoisted(() => new Set<string>());

vi.mock("node:fs/promises", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs/promises")>();
  const open = async (...args: Parameters<typeof fs.open>): ReturnType<typeof fs.open> => {
    const handle = await fs.open(...args);
    if (!failSyncOf.has(String(args[0]))) return handle;
    return new Proxy(handle, {
      get(target, property) {
        if (property === "sync") return () => Promise.reject(Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" }));
        const value: unknown = Reflect.get(target, property);
        return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  };
  return { ...fs, open, default: { ...fs, open } };
});

describe("restore: the final fsync of the target's directory", () => {
  let dir: string;
  let repo: Repository;
  const logicalBytes = 4 << 20;
  const manifest: Manifest = {
    metadata: {
      formatVersion: 1,
      id: "20261123T000000Z-00000000",
      ct: "101",
      host: "node1",
      time: "2026-11-23T00:00:00.000Z",
      tool: { name: "ploopvault", version: "test" },
      disk: { logicalBytes, clusterBytes: 1 << 20, sourceFormatVersion: 2 },
      chunker: chunkerParamsForAverage(256 << 10),
      source: { descriptorPath: "/vz/private/101/root.hdd/DiskDescriptor.xml", topGuid: "{x}", snapshotGuid: null, imageFiles: [] },
      files: { descriptor: "DiskDescriptor.xml", config: null },
      stats: { readBytes: 0, dataBytes: 0, holeBytes: logicalBytes, chunks: 0, newChunks: 0, newBytesStored: 0, seconds: 0 },
      entryCount: 1,
    },
    entries: [{ kind: "hole", offset: 0, length: logicalBytes }],
  };
  const ref = { ct: "101", id: manifest.metadata.id };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "pv-dirsync-"));
    const store = new LocalDirectoryStore(join(dir, "repo"));
    await store.ensureContainer();
    repo = await Repository.init(store, newRepositoryConfig(chunkerParamsForAverage(256 << 10), 3, new Date()));
  });
  afterAll(async () => {
    failSyncOf.clear();
    await rm(dir, { recursive: true, force: true });
  });

  it("restore --format raw fails when it cannot fsync the target's directory", async () => {
    const outDir = await mkdtemp(join(dir, "raw-"));
    const target = join(outDir, "101.raw");
    await expect(restoreRaw(repo, ref, manifest, target, false, { concurrency: 2 })).resolves.toMatchObject({ logicalBytes });
    failSyncOf.add(outDir);
    const again = join(outDir, "again.raw");
    await expect(restoreRaw(repo, ref, manifest, again, false, { concurrency: 2 })).rejects.toThrow(
      new RegExp(`restore target ${again} was written, but syncing its directory ${outDir} failed: input/output error`),
    );
    // complete (its data was synced) but not reported as durable
    expect((await stat(again)).size).toBe(logicalBytes);
  });

  it("restore --format ploop fails likewise", async () => {
    const outDir = await mkdtemp(join(dir, "ploop-"));
    failSyncOf.add(outDir);
    const target = join(outDir, "root.hdd");
    await expect(restorePloop(repo, ref, manifest, target, false, { concurrency: 2 })).rejects.toThrow(
      /was written, but syncing its directory .* failed: input\/output error/,
    );
  });
});
