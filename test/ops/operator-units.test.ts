/**
 * Issue 17, the pure parts: repository URLs (restic's s3:http:// form, URL-like local paths
 * refused), what an S3 failure says (a forgotten endpoint, a wrong secret), empty config
 * sections, durations in seconds options, tags and notes in manifests (and manifests
 * without them), check's data subsets, and diff's ranges against a byte-level oracle.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { inDataSubset, parseDataSubset } from "../../src/check/check.js";
import { UsageError } from "../../src/errors.js";
import { diffEntries } from "../../src/manifest/diff.js";
import { annotationProblem, decodeManifest, encodeManifest, type Manifest, type ManifestEntry } from "../../src/manifest/format.js";
import { parseConfig, applyConfig } from "../../src/ops/config.js";
import { durationSecondsOption } from "../../src/prune/duration.js";
import { parseRepoUrl } from "../../src/uploader/open.js";
import { s3StoreError } from "../../src/uploader/s3.js";
import { Command, Option } from "commander";

describe("repository URLs", () => {
  it("accepts restic's s3:http://HOST:PORT/BUCKET/PREFIX form with the endpoint in it", () => {
    expect(parseRepoUrl("s3:http://127.0.0.1:9000/backups/node1")).toEqual({
      kind: "s3",
      bucket: "backups",
      prefix: "node1",
      endpoint: "http://127.0.0.1:9000",
    });
    expect(parseRepoUrl("s3:https://s3.example.net/bkp")).toEqual({ kind: "s3", bucket: "bkp", prefix: "", endpoint: "https://s3.example.net" });
    expect(parseRepoUrl("s3://backups/node1")).toEqual({ kind: "s3", bucket: "backups", prefix: "node1" });
  });

  it("refuses local paths that look like URLs instead of creating directories named after them", () => {
    for (const url of ["s3:http:/127.0.0.1:9000/bucket/prefix", "sftp:host:/srv/repo", "rest:http://x/", "s3:http://host-without-bucket"]) {
      expect(() => parseRepoUrl(url), url).toThrow(UsageError);
      expect(() => parseRepoUrl(url), url).toThrow(/looks like a URL|unsupported repository URL/);
    }
    expect(parseRepoUrl("./s3:odd-name")).toEqual({ kind: "local", path: "./s3:odd-name" });
    expect(parseRepoUrl("/srv/repo")).toEqual({ kind: "local", path: "/srv/repo" });
  });
});

describe("S3 failures say what is wrong", () => {
  const context = { action: "read", what: "s3://b/p/config", bucket: "b" };
  it("asks whether the endpoint was forgotten when the AWS default is unreachable", () => {
    const dns = Object.assign(new Error("getaddrinfo ENOTFOUND b.s3.amazonaws.com"), { code: "ENOTFOUND" });
    expect(s3StoreError(dns, { ...context, endpoint: "AWS S3" }).message).toMatch(
      /AWS S3 unreachable \(host not found\); did you forget --endpoint URL \/ AWS_ENDPOINT_URL/,
    );
    expect(s3StoreError(dns, { ...context, endpoint: "http://10.1.1.1:9000" }).message).not.toMatch(/forget/);
  });

  it("turns a body-less 403 (HEAD) into words instead of Unknown: UnknownError", () => {
    const head403 = Object.assign(new Error("UnknownError"), { name: "Unknown", $metadata: { httpStatusCode: 403 } });
    const message = s3StoreError(head403, { ...context, endpoint: "http://127.0.0.1:9000" }).message;
    expect(message).not.toMatch(/UnknownError/);
    expect(message).toMatch(/HTTP 403.*wrong credentials \(AWS_ACCESS_KEY_ID \/ AWS_SECRET_ACCESS_KEY\)/);
    const signature = Object.assign(new Error("UnknownError"), { name: "SignatureDoesNotMatch", $metadata: { httpStatusCode: 403 } });
    expect(s3StoreError(signature, { ...context, endpoint: "x" }).message).toMatch(/secret key does not match.*check AWS_SECRET_ACCESS_KEY/);
  });
});

describe("config file", () => {
  it("refuses a misspelled section even when it is empty", () => {
    const program = new Command("ploopvault");
    const snapshots = new Command("snapshots").addOption(new Option("--repo <url>"));
    program.addCommand(snapshots);
    const config = parseConfig("repo = /srv/backup\n\n[snapshot]\n", "/etc/ploopvault/ploopvault.conf");
    expect(() => applyConfig(program, snapshots, config)).toThrow("config file /etc/ploopvault/ploopvault.conf, line 3: unknown section [snapshot]");
  });
});

describe("durations counted in seconds (--lock-wait, --hook-timeout)", () => {
  it("take the one duration syntax, and plain seconds as before", () => {
    const lockWait = durationSecondsOption("--lock-wait", { allowZero: true });
    expect(lockWait("10m")).toBe(600);
    expect(lockWait("1h30m")).toBe(5400);
    expect(lockWait("45")).toBe(45);
    expect(lockWait("0")).toBe(0);
    expect(() => durationSecondsOption("--hook-timeout", { allowZero: false })("0")).toThrow(/--hook-timeout must be longer than 0/);
    expect(() => lockWait("ten minutes")).toThrow(/--lock-wait: "ten minutes" is not a duration/);
  });
});

function manifestWith(extra: Partial<Manifest["metadata"]>): Manifest {
  const entries: ManifestEntry[] = [{ kind: "chunk", offset: 0, length: 4096, id: randomBytes(32) }];
  return {
    metadata: {
      formatVersion: 1,
      id: "20250101T000000Z-00000000",
      ct: "101",
      host: "node1",
      time: "2025-01-01T00:00:00.000Z",
      tool: { name: "ploopvault", version: "test" },
      disk: { logicalBytes: 4096, clusterBytes: 4096, sourceFormatVersion: 2 },
      chunker: { algorithm: "fastcdc-gear32-v1", minSize: 1024, avgSize: 4096, maxSize: 16384 },
      source: { descriptorPath: "/vz/private/101/root.hdd/DiskDescriptor.xml", topGuid: "{g}", snapshotGuid: null, imageFiles: [] },
      files: { descriptor: "DiskDescriptor.xml", config: null },
      stats: { readBytes: 0, dataBytes: 4096, holeBytes: 0, chunks: 1, newChunks: 1, newBytesStored: 10, seconds: 0 },
      entryCount: 1,
      ...extra,
    },
    entries,
  };
}

describe("tags and notes in the manifest", () => {
  it("round-trip, and manifests without them (older writers) still decode", () => {
    const tagged = decodeManifest(encodeManifest(manifestWith({ tags: ["pre-upgrade", "nightly"], note: "before PHP 8.3" })), "m");
    expect(tagged.metadata.tags).toEqual(["pre-upgrade", "nightly"]);
    expect(tagged.metadata.note).toBe("before PHP 8.3");
    const plain = decodeManifest(encodeManifest(manifestWith({})), "m");
    expect(plain.metadata.tags).toBeUndefined();
  });

  it("refuses tags and notes that would break listings", () => {
    expect(annotationProblem({ tags: ["a b"] })).toMatch(/is not a tag/);
    expect(annotationProblem({ tags: ["-x"] })).toMatch(/is not a tag/);
    expect(annotationProblem({ note: "two\nlines" })).toMatch(/control character/);
    expect(annotationProblem({ note: "x".repeat(1001) })).toMatch(/longer than 1000/);
    expect(annotationProblem({ tags: ["ok.tag:1"], note: "fine" })).toBeNull();
    expect(() => decodeManifest(encodeManifest(manifestWith({ tags: ["bad tag"] })), "manifest X")).toThrow(/manifest X: invalid metadata: tag "bad tag"/);
  });
});

describe("check --read-data-subset", () => {
  it("parses N/M and P% and refuses the rest", () => {
    expect(parseDataSubset("3/7")).toEqual({ kind: "slice", n: 3, m: 7 });
    expect(parseDataSubset("12.5%")).toEqual({ kind: "fraction", fraction: 0.125 });
    for (const bad of ["0/7", "8/7", "1/0", "0%", "101%", "half"]) expect(() => parseDataSubset(bad), bad).toThrow(UsageError);
  });

  it("slices 1..M partition the chunks (each in exactly one), evenly", () => {
    const ids = Array.from({ length: 3000 }, () => randomBytes(32));
    const m = 5;
    const counts = Array.from({ length: m }, (_, n) => ids.filter((id) => inDataSubset(id, { kind: "slice", n: n + 1, m })).length);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(ids.length);
    for (const id of ids) expect(Array.from({ length: m }, (_, n) => inDataSubset(id, { kind: "slice", n: n + 1, m })).filter(Boolean)).toHaveLength(1);
    for (const c of counts) expect(Math.abs(c - ids.length / m)).toBeLessThan(ids.length / m / 4);
  });
});

/** Entries of a disk given as bytes: runs of zero are holes, the rest chunks named by their content. */
function entriesOf(disk: Buffer, cuts: number[]): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  const points = [...new Set([0, ...cuts.filter((c) => c > 0 && c < disk.length), disk.length])].sort((a, b) => a - b);
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i]!, points[i + 1]!];
    const part = disk.subarray(a, b);
    if (part.every((x) => x === 0)) out.push({ kind: "hole", offset: a, length: b - a });
    else out.push({ kind: "chunk", offset: a, length: b - a, id: Buffer.concat([part, Buffer.alloc(32)]).subarray(0, 32) });
  }
  return out;
}

describe("diff of two backups", () => {
  it("reports every byte that differs (oracle: the disks themselves), and nothing outside changed entries", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        fc.array(fc.nat(64), { maxLength: 8 }),
        fc.array(fc.nat(64), { maxLength: 8 }),
        (a, b, cutsA, cutsB) => {
          // a chunk's id is its content (zero-padded): equal ids, equal bytes
          const A = Buffer.from(a.map((x) => x % 3));
          const B = Buffer.from(b.map((x) => x % 3));
          // a cut at 32: no chunk is longer than its 32-byte name
          const ea = entriesOf(A, [...cutsA, 32]);
          const eb = entriesOf(B, [...cutsB, 32]);
          const d = diffEntries(ea, A.length, eb, B.length);
          const inRange = (pos: number): boolean => d.ranges.some((r) => pos >= r.offset && pos < r.offset + r.length);
          for (let pos = 0; pos < Math.max(A.length, B.length); pos++) if (A[pos] !== B[pos]) expect(inRange(pos)).toBe(true);
          expect(d.changedBytes).toBe(d.ranges.reduce((s, r) => s + r.length, 0));
          for (let i = 1; i < d.ranges.length; i++) expect(d.ranges[i]!.offset).toBeGreaterThan(d.ranges[i - 1]!.offset + d.ranges[i - 1]!.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("finds nothing between identical backups, and the tail of a grown disk", () => {
    const disk = randomBytes(100);
    const e = entriesOf(disk, [10, 40, 70]);
    expect(diffEntries(e, 100, e, 100)).toMatchObject({ ranges: [], changedBytes: 0, newChunks: 0 });
    const grown = Buffer.concat([disk, randomBytes(20)]);
    const g = entriesOf(grown, [10, 40, 70, 100]);
    expect(diffEntries(e, 100, g, 120).ranges).toEqual([{ offset: 100, length: 20 }]);
  });
});
