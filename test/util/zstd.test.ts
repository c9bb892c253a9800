/**
 * zstd through either binding (zstd-napi, node:zlib) reads what the other wrote, agrees
 * with the real zstd tool, and still reads the objects ploopvault wrote before node:zlib
 * could be used (fixtures/, written by commit d1f1fab through zstd-napi): the repository
 * format did not change with the binding.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHUNK_FORMAT_ZSTD, chunkId, decodeChunk, encodeChunk } from "../../src/repository/chunk-codec.js";
import { decodeManifest, encodeManifest, verifyManifestEnvelope } from "../../src/manifest/format.js";
import {
  activeZstdBinding,
  ZSTD_BINDING_NAMES,
  zstdBinding,
  zstdCompress,
  zstdContentSize,
  zstdDecompressBounded,
  zstdDecompressPrefix,
  type ZstdBinding,
} from "../../src/util/zstd.js";
import { readZstdFrame, zstdContentBytes, zstdFrameBlocks } from "../../src/util/zstd-frame.js";
import { seededRandom, seededText } from "../chunker/inputs.js";
import { PROJECT_ROOT } from "../helpers/s3-server.js";
import { fixtureChunkPlain, fixtureManifest } from "./format-fixtures.js";

const fixture = (name: string): Buffer => readFileSync(join(PROJECT_ROOT, "test", "util", "fixtures", name));
const FIXTURE_CHUNK_ID = "945d311347f82287dfec3c7c095d706dcecda639595493c66d1ce299bf8e0914";

const [major, minor] = process.versions.node.split(".").map(Number) as [number, number];
const nodeHasZstd = major > 22 || (major === 22 && minor >= 15);
const bindings = ZSTD_BINDING_NAMES.map((name) => zstdBinding(name)).filter((b): b is ZstdBinding => b !== null);
const both = bindings.length === 2;

const samples: [string, Buffer][] = [
  ["random 300 KB", seededRandom(300_000, "zstd random")],
  ["text-like 1 MiB", seededText(1 << 20, "zstd text")],
  ["zeros 256 KiB", Buffer.alloc(256 << 10)],
  ["one byte", Buffer.from([42])],
  ["empty", Buffer.alloc(0)],
];

describe("zstd bindings", () => {
  it("node:zlib has zstd exactly from Node 22.15 on, and zstd-napi is installed in this test environment", () => {
    expect(zstdBinding("zlib") !== null).toBe(nodeHasZstd);
    // the optional package; CI installs a C++ toolchain so that both bindings are tested
    expect(zstdBinding("napi")).not.toBeNull();
    expect(ZSTD_BINDING_NAMES).toContain(activeZstdBinding().name);
    if (process.env.PLOOPVAULT_ZSTD) expect(activeZstdBinding().name).toBe(process.env.PLOOPVAULT_ZSTD);
  });

  it.runIf(both)("each binding reads what the other wrote: levels -5 to 19, with and without checksum", () => {
    for (const writer of bindings) {
      for (const reader of bindings) {
        for (const [what, data] of samples) {
          for (const level of [-5, 1, 2, 3, 19]) {
            for (const checksum of [false, true]) {
              const frame = zstdCompress(data, level, checksum, writer);
              const info = readZstdFrame(frame);
              expect(info.frameBytes, what).toBe(frame.length); // one frame, nothing after it
              expect(info.contentBytes, what).toBe(data.length); // the size is in the header
              expect(((frame[4]! & 0x04) !== 0) === checksum, `${what}: checksum flag`).toBe(true);
              expect(zstdDecompressBounded(frame, data.length, reader).equals(data), `${writer.name} -> ${reader.name}, ${what}, level ${level}`).toBe(true);
            }
          }
        }
      }
    }
  });

  it("a frame's content checksum is verified by every binding", () => {
    const data = seededText(200_000, "checksum");
    for (const writer of bindings) {
      const frame = Buffer.from(zstdCompress(data, 3, true, writer));
      frame[frame.length - 1] ^= 0x01; // the checksum's last byte
      for (const reader of bindings) expect(() => zstdDecompressBounded(frame, data.length, reader), `${writer.name} -> ${reader.name}`).toThrow();
    }
  });

  it("refuses what is not exactly whole frames within the limit, the same way whatever the binding", () => {
    const data = seededText(300_000, "bounded");
    for (const binding of bindings) {
      const frame = zstdCompress(data, 3, false, binding);
      expect(() => zstdDecompressBounded(frame, data.length - 1, binding)).toThrow(/exceeds the limit/);
      expect(() => zstdDecompressBounded(Buffer.concat([frame, Buffer.from([1, 2])]), 1 << 20, binding)).toThrow(/truncated zstd frame|not a zstd frame/); // node:zlib alone would ignore trailing bytes
      expect(() => zstdDecompressBounded(frame.subarray(0, frame.length - 1), 1 << 20, binding)).toThrow(/truncated/);
      expect(() => zstdDecompressBounded(Buffer.alloc(0), 1 << 20, binding)).toThrow(/empty/);
      // a complete frame (one empty raw block) whose header claims 2^31 - 2 bytes, and a truncated one
      expect(() =>
        zstdDecompressBounded(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x80, 0x00, 0xfe, 0xff, 0xff, 0x7f, 0x01, 0x00, 0x00]), 1 << 20, binding),
      ).toThrow(/exceeds the limit/);
      expect(() => zstdDecompressBounded(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x84, 0xfe, 0xff, 0xff, 0x7f]), 1 << 20, binding)).toThrow(/truncated/);
      // a skippable frame is read as no content by both, like zstd itself (node:zlib on Node 22 alone would return nothing)
      const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]), frame]);
      expect(zstdDecompressBounded(skippable, data.length, binding).equals(data)).toBe(true);
      // two frames: their contents concatenated (node:zlib on Node 22 alone would stop after the first)
      expect(zstdDecompressBounded(Buffer.concat([frame, frame]), 2 * data.length, binding).equals(Buffer.concat([data, data]))).toBe(true);
    }
  });

  it.runIf(both)("the frame walker agrees with zstd's own frame functions (through zstd-napi's binding)", async () => {
    const { createRequire } = await import("node:module");
    const native = createRequire(import.meta.url)("zstd-napi/binding") as {
      getFrameContentSize(f: Uint8Array): number | null;
      findFrameCompressedSize(f: Uint8Array): number;
    };
    for (const writer of bindings) {
      for (const [what, data] of samples) {
        for (const level of [1, 3, 19]) {
          const frame = zstdCompress(data, level, level === 3, writer);
          expect(readZstdFrame(frame), `${writer.name}, ${what}`).toEqual({
            frameBytes: native.findFrameCompressedSize(frame),
            contentBytes: native.getFrameContentSize(frame),
            skippable: false,
          });
        }
      }
    }
  });

  /** A frame of many small compressed blocks (a flush after every 1000 bytes), with its content size. */
  async function flushedFrame(data: Buffer): Promise<Buffer | null> {
    if (typeof zlib.createZstdCompress !== "function") return null;
    const stream = zlib.createZstdCompress({ pledgedSrcSize: data.length, params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } });
    const out: Buffer[] = [];
    stream.on("data", (c: Buffer) => out.push(c));
    const ended = new Promise((resolve) => stream.on("end", resolve));
    for (let i = 0; i < data.length; i += 1000) {
      stream.write(data.subarray(i, i + 1000));
      await new Promise<void>((resolve) => stream.flush(() => resolve()));
    }
    stream.end();
    await ended;
    return Buffer.concat(out);
  }

  it("a prefix of the content, the same through every binding, whatever the frame's blocks", async () => {
    const text = seededText(3 << 20, "prefix");
    const frames: [string, Buffer][] = bindings.map((b) => [`${b.name}, level 3`, zstdCompress(text, 3, true, b)]);
    const flushed = await flushedFrame(text.subarray(0, 300_000));
    if (flushed !== null) frames.push(["300 small blocks", flushed]);
    frames.push([
      "two frames and a skippable one",
      Buffer.concat([
        zstdCompress(text.subarray(0, 70_000), 3),
        Buffer.from([0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]),
        zstdCompress(text.subarray(70_000, 500_000), 1),
      ]),
    ]);
    for (const [what, frame] of frames) {
      if (!what.startsWith("two frames")) expect(zstdFrameBlocks(frame).length, what).toBeGreaterThan(2);
      const content = zstdContentSize(frame);
      for (const binding of bindings) {
        for (const want of [1, 4, 1000, 65_537, 128 << 10, 1 << 20, (1 << 20) + 4, content - 1, content, content + 10]) {
          const prefix = zstdDecompressPrefix(frame, want, binding);
          expect(prefix.equals(text.subarray(0, Math.min(want, content))), `${what}, ${binding.name}, ${want} bytes`).toBe(true);
        }
      }
    }
  });

  it("a prefix never decompresses much more than asked (a frame of 256 MiB of zeros, 1 MiB asked)", () => {
    const zeros = Buffer.alloc(256 << 20);
    for (const binding of bindings) {
      const frame = zstdCompress(zeros, 3, false, binding);
      const before = process.memoryUsage().arrayBuffers;
      const prefix = zstdDecompressPrefix(frame, 1 << 20, binding);
      expect(prefix.length).toBe(1 << 20);
      expect(process.memoryUsage().arrayBuffers - before, binding.name).toBeLessThan(16 << 20);
    }
  });

  describe("against the real zstd tool", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "pv-zstd-"));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("zstd -d reads every binding's frames, and every binding reads zstd's", async () => {
      const data = seededText(700_000, "zstd tool");
      const input = join(dir, "input");
      await writeFile(input, data);
      for (const binding of bindings) {
        const frame = zstdCompress(data, 3, true, binding);
        const out = await execa("zstd", ["-d", "-c", "-q"], { input: frame, encoding: "buffer" });
        expect(Buffer.from(out.stdout).equals(data), binding.name).toBe(true);
      }
      // from a file the tool knows the size and writes it in the header
      const tool = Buffer.from((await execa("zstd", ["-3", "-c", "-q", input], { encoding: "buffer" })).stdout);
      for (const binding of bindings) expect(zstdDecompressBounded(tool, data.length, binding).equals(data), binding.name).toBe(true);
      // from a pipe it does not: ploopvault never writes such frames and refuses them
      const unsized = Buffer.from((await execa("zstd", ["-3", "-c", "-q"], { input: data, encoding: "buffer" })).stdout);
      expect(() => zstdContentBytes(unsized)).toThrow(/without a content size/);
    });
  });

  describe("repository objects written before node:zlib zstd (commit d1f1fab)", () => {
    const chunkObject = fixture("chunk-object-v1.bin");
    const manifestObject = fixture("manifest-object-v1.bin");
    const plain = fixtureChunkPlain();

    it("the fixtures are what they claim", () => {
      expect(chunkId(plain).toString("hex")).toBe(FIXTURE_CHUNK_ID);
      expect(chunkObject[0]).toBe(CHUNK_FORMAT_ZSTD);
    });

    it("read through every binding: chunk content and id, manifest entries and metadata", () => {
      for (const binding of bindings) {
        const content = zstdDecompressBounded(chunkObject.subarray(1), 1 << 20, binding);
        expect(createHash("sha256").update(content).digest("hex"), binding.name).toBe(FIXTURE_CHUNK_ID);
        const payload = zstdDecompressBounded(verifyManifestEnvelope(manifestObject, "fixture"), 1 << 30, binding);
        expect(payload.length, binding.name).toBeGreaterThan(300 * 49);
      }
      // and through the codec and manifest decoder with this process's binding
      expect(decodeChunk(chunkObject, FIXTURE_CHUNK_ID, 1 << 20).equals(plain)).toBe(true);
      const manifest = decodeManifest(manifestObject, "fixture");
      expect(manifest).toEqual(fixtureManifest());
    });

    it("written again, the objects have the same format: zstd-napi byte for byte, node:zlib the same frame header", () => {
      const napi = zstdBinding("napi");
      if (napi !== null) expect(Buffer.concat([Buffer.from([CHUNK_FORMAT_ZSTD]), zstdCompress(plain, 3, false, napi)]).equals(chunkObject)).toBe(true);
      const zlib = zstdBinding("zlib");
      if (zlib !== null) {
        const frame = zstdCompress(plain, 3, false, zlib);
        const old = chunkObject.subarray(1);
        expect(frame.subarray(0, 9)).toEqual(old.subarray(0, 9)); // magic, descriptor (no checksum, single segment, 4-byte size), size
        expect(Math.abs(frame.length - old.length)).toBeLessThan(old.length / 100);
      }
      // this process's binding, through the codec and the manifest encoder: both bindings read the result
      const object = encodeChunk(plain, 3);
      const manifest = encodeManifest(fixtureManifest());
      expect(object[0]).toBe(CHUNK_FORMAT_ZSTD);
      for (const binding of bindings) {
        expect(zstdDecompressBounded(object.subarray(1), 1 << 20, binding).equals(plain), binding.name).toBe(true);
        const frame = verifyManifestEnvelope(manifest, "new");
        expect(frame[4]! & 0x04).toBe(0x04); // manifests keep zstd's content checksum
        expect(
          zstdDecompressBounded(frame, 1 << 30, binding).equals(zstdDecompressBounded(verifyManifestEnvelope(manifestObject, "fixture"), 1 << 30, binding)),
        ).toBe(true);
      }
    });
  });
});
