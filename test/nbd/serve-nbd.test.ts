/**
 * `ploopvault serve-nbd` against the real userspace NBD clients of libnbd-bin (nbdinfo,
 * nbdcopy) and qemu-img: the export has the backup's size, a full copy over NBD equals
 * the raw restore (and the real ploop's flattening), `nbdinfo --map` reports exactly the
 * manifest's holes; on a local repository, on RGW, and encrypted. Then hostile clients,
 * spoken to byte by byte: garbage options, huge lengths, reads beyond the end, writes,
 * unknown commands, a client that never reads its replies: each gets a protocol error
 * or is disconnected, the server keeps serving, and its memory stays bounded.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeManifest } from "../../src/manifest/format.js";
import { CLI, jsonLines, localRepo, PLOOP_WRAPPER, runCli, s3Repo, type RepoTarget } from "../helpers/cli.js";
import { corpus, descriptorOf } from "../helpers/corpus.js";
import { sha256File } from "../ploop/fixtures.js";

const CT = "101";
const PASSWORD = "nbd test password";

interface Served {
  process: ResultPromise;
  socket: string;
  uri: string;
  logicalBytes: number;
  stderr: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<{ code: number; stdout: string; stderr: string }>;
}

/** Start serve-nbd and wait for its "serving" JSON line. */
async function serve(args: string[], env: Record<string, string>, socket: string): Promise<Served> {
  const child = execa(process.execPath, [CLI, "serve-nbd", ...args, "--socket", socket, "--json"], {
    env: { PLOOPVAULT_PLOOP: PLOOP_WRAPPER, ...env },
    reject: false,
    buffer: true,
  });
  let stdout = "";
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const ready = await new Promise<{ uri: string; logicalBytes: number }>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
      const line = stdout.split("\n").find((l) => l.includes('"status":"serving"'));
      if (line !== undefined) resolve(JSON.parse(line) as { uri: string; logicalBytes: number });
    });
    void child.then((r) => reject(new Error(`serve-nbd exited ${r.exitCode}: ${stderr}`)));
  });
  return {
    process: child,
    socket,
    uri: ready.uri,
    logicalBytes: ready.logicalBytes,
    stderr: () => stderr,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      child.kill(signal);
      const r = await child;
      return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
    },
  };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Merged (offset, length, hole) runs of a manifest: what base:allocation must report. */
function manifestRuns(manifestObject: Buffer): { offset: number; length: number; hole: boolean }[] {
  const m = decodeManifest(manifestObject, "manifest");
  const runs: { offset: number; length: number; hole: boolean }[] = [];
  for (const e of m.entries) {
    const hole = e.kind === "hole";
    const last = runs[runs.length - 1];
    if (last !== undefined && last.hole === hole) last.length += e.length;
    else runs.push({ offset: e.offset, length: e.length, hole });
  }
  return runs;
}

describe.each(["local", "s3", "encrypted"] as const)("serve-nbd with real NBD clients, %s repository", (kind) => {
  let repo: RepoTarget;
  let work: string;
  let env: Record<string, string>;
  let backupId: string;
  let rawSha: string;

  beforeAll(async () => {
    repo = kind === "s3" ? await s3Repo("nbd") : await localRepo();
    env = kind === "encrypted" ? { ...repo.env, PLOOPVAULT_PASSWORD: PASSWORD } : repo.env;
    work = await mkdtemp(join(tmpdir(), "pv-nbd-"));
    const init = await runCli(["init", ...repo.args, ...(kind === "encrypted" ? ["--encrypt"] : []), "--chunk-avg", "256K"], { env });
    expect(init.code, init.stderr).toBe(0);
    const b = await runCli(["backup", ...repo.args, "--disk", descriptorOf(CT), "--json", "-q"], { env });
    expect(b.code, b.stderr).toBe(0);
    backupId = jsonLines<{ backup: string }>(b.stdout)[0]!.backup;
    const raw = join(work, "restored.raw");
    const r = await runCli(["restore", ...repo.args, CT, "--format", "raw", "--target", raw, "-q"], { env });
    expect(r.code, r.stderr).toBe(0);
    rawSha = await sha256File(raw);
    expect(rawSha).toBe(corpus().flatSha256[CT]);
    await rm(raw);
  });
  afterAll(async () => {
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("nbdinfo shows the size; nbdcopy and qemu-img copy the export bit-identical to the raw restore", async () => {
    const socket = join(work, "export.sock");
    const server = await serve([...repo.args, `${CT}:latest`], env, socket);
    try {
      expect((await stat(socket)).mode & 0o777).toBe(0o600);
      const info = JSON.parse((await execa("nbdinfo", ["--json", server.uri])).stdout) as {
        structured: boolean;
        exports: { "export-name": string; "export-size": number; is_read_only: boolean; contexts: string[] }[];
      };
      expect(info.structured).toBe(true);
      expect(info.exports).toHaveLength(1);
      expect(info.exports[0]).toMatchObject({
        "export-name": `${CT}/${backupId}`,
        "export-size": server.logicalBytes,
        is_read_only: true,
        contexts: ["base:allocation"],
      });

      // two copies at once (nbdcopy itself opens several connections: CAN_MULTI_CONN)
      const copies = [join(work, "copy1.raw"), join(work, "copy2.raw")];
      await Promise.all(copies.map((c) => execa("nbdcopy", [server.uri, c])));
      for (const c of copies) expect(await sha256File(c)).toBe(rawSha);
      // without block status (every byte read) and one request at a time
      await execa("nbdcopy", ["--no-extents", "--synchronous", "--request-size=1048576", server.uri, copies[0]!]);
      expect(await sha256File(copies[0]!)).toBe(rawSha);
      await execa("qemu-img", ["convert", "-O", "raw", server.uri, copies[1]!]);
      expect(await sha256File(copies[1]!)).toBe(rawSha);
      for (const c of copies) await rm(c);
    } finally {
      const r = await server.stop();
      expect(r.code, r.stderr).toBe(0);
      const [, stopped] = jsonLines<{ status: string; chunksFetched: number }>(r.stdout);
      expect(stopped).toMatchObject({ status: "stopped" });
      expect(stopped!.chunksFetched).toBeGreaterThan(0);
    }
    expect(await exists(socket)).toBe(false); // removed on SIGTERM
  });

  it.runIf(kind !== "encrypted")("nbdinfo --map reports exactly the manifest's holes", async () => {
    const socket = join(work, "map.sock");
    const server = await serve([...repo.args, `${CT}/${backupId}`], env, socket);
    try {
      const map = JSON.parse((await execa("nbdinfo", ["--map", "--json", server.uri])).stdout) as { offset: number; length: number; type: number }[];
      const expected = manifestRuns(await repo.read(`backups/${CT}/${backupId}/manifest`));
      expect(expected.some((r) => r.hole)).toBe(true);
      expect(map.map((m) => ({ offset: m.offset, length: m.length, hole: m.type === 3 }))).toEqual(expected);
      for (const m of map) expect([0, 3]).toContain(m.type);
    } finally {
      expect((await server.stop("SIGINT")).code).toBe(0);
    }
  });
});

// ---------------------------------------------------------------------------------------
// A byte-level client for hostile input

class RawClient {
  private buffered = Buffer.alloc(0);
  private waiting: (() => void) | null = null;
  ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      this.waiting?.();
    });
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.ended = true;
        this.waiting?.();
        resolve();
      }),
    );
    socket.on("error", () => undefined);
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path, () => resolve(new RawClient(s)));
      s.once("error", reject);
    });
  }

  async read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered.length} of ${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${n} bytes`);
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 100);
      });
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** Greeting + client flags (fixed newstyle, no zeroes). */
  async hello(): Promise<void> {
    const g = await this.read(18);
    expect(g.subarray(0, 16).toString("latin1")).toBe("NBDMAGICIHAVEOPT");
    expect(g.readUInt16BE(16) & 3).toBe(3);
    this.write(Buffer.from([0, 0, 0, 3]));
  }

  option(option: number, data: Buffer = Buffer.alloc(0), claimedLength = data.length): void {
    const h = Buffer.alloc(16);
    h.write("IHAVEOPT", 0, "latin1");
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(claimedLength, 12);
    this.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    expect(h.readBigUInt64BE(0)).toBe(0x3e889045565a9n);
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(length) };
  }

  /** Negotiate (structured replies and base:allocation if asked) and GO. */
  async go(structured: boolean): Promise<{ size: bigint; flags: number }> {
    await this.hello();
    if (structured) {
      this.option(8);
      expect((await this.optionReply()).type).toBe(1);
      const q = Buffer.from("base:allocation");
      const data = Buffer.alloc(12 + q.length);
      data.writeUInt32BE(0, 0);
      data.writeUInt32BE(1, 4);
      data.writeUInt32BE(q.length, 8);
      q.copy(data, 12);
      this.option(10, data);
      const ctx = await this.optionReply();
      expect(ctx.type).toBe(4);
      expect(ctx.data.subarray(4).toString()).toBe("base:allocation");
      expect((await this.optionReply()).type).toBe(1);
    }
    this.option(7, Buffer.from([0, 0, 0, 0, 0, 0]));
    let size = -1n;
    let flags = 0;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === 3 && r.data.readUInt16BE(0) === 0) {
        size = r.data.readBigUInt64BE(2);
        flags = r.data.readUInt16BE(10);
      } else {
        expect(r.type).toBe(1);
        return { size, flags };
      }
    }
  }

  request(type: number, offset: bigint, length: number, handle: number, flags = 0): void {
    const b = Buffer.alloc(28);
    b.writeUInt32BE(0x25609513, 0);
    b.writeUInt16BE(flags, 4);
    b.writeUInt16BE(type, 6);
    b.writeBigUInt64BE(BigInt(handle), 8);
    b.writeBigUInt64BE(offset, 16);
    b.writeUInt32BE(length, 24);
    this.write(b);
  }

  async simpleReply(dataLength = 0): Promise<{ error: number; handle: number; data: Buffer }> {
    const h = await this.read(16);
    expect(h.readUInt32BE(0)).toBe(0x67446698);
    const error = h.readUInt32BE(4);
    return { error, handle: Number(h.readBigUInt64BE(8)), data: error === 0 ? await this.read(dataLength) : Buffer.alloc(0) };
  }

  /** One structured reply (all chunks up to DONE): data assembled, error if any. */
  async structuredReply(): Promise<{ handle: number; chunks: { type: number; payload: Buffer }[]; error: number }> {
    const chunks: { type: number; payload: Buffer }[] = [];
    let handle = -1;
    let error = 0;
    for (;;) {
      const h = await this.read(20);
      expect(h.readUInt32BE(0)).toBe(0x668e33ef);
      const flags = h.readUInt16BE(4);
      const type = h.readUInt16BE(6);
      handle = Number(h.readBigUInt64BE(8));
      const payload = await this.read(h.readUInt32BE(16));
      if (type & 0x8000) error = payload.readUInt32BE(0);
      chunks.push({ type, payload });
      if (flags & 1) return { handle, chunks, error };
    }
  }
}

describe("serve-nbd against hostile clients and on socket paths", () => {
  let repo: RepoTarget;
  let work: string;
  let server: Served;
  let raw: Buffer;
  let rawSha: string;

  beforeAll(async () => {
    repo = await localRepo();
    work = await mkdtemp(join(tmpdir(), "pv-nbdh-"));
    expect((await runCli(["init", ...repo.args, "--chunk-avg", "256K"])).code).toBe(0);
    expect((await runCli(["backup", ...repo.args, "--disk", descriptorOf(CT), "-q"])).code).toBe(0);
    const rawPath = join(work, "restored.raw");
    expect((await runCli(["restore", ...repo.args, CT, "--format", "raw", "--target", rawPath, "-q"])).code).toBe(0);
    raw = await readFile(rawPath);
    rawSha = await sha256File(rawPath);
    await rm(rawPath);
    server = await serve([...repo.args, CT], {}, join(work, "hostile.sock"));
  });
  afterAll(async () => {
    await server?.stop();
    await repo.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("answers malformed and unsupported options with errors and keeps negotiating", async () => {
    const c = await RawClient.connect(server.socket);
    await c.hello();
    c.option(4242, Buffer.from("whatever"));
    expect(await c.optionReply()).toMatchObject({ option: 4242, type: 2 ** 31 + 1 }); // ERR_UNSUP
    c.option(7, Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0])); // name length beyond the data
    expect((await c.optionReply()).type).toBe(2 ** 31 + 3); // ERR_INVALID
    c.option(7, Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from("zzz"), Buffer.from([0, 0])]));
    expect((await c.optionReply()).type).toBe(2 ** 31 + 6); // ERR_UNKNOWN export
    c.option(10, Buffer.alloc(8)); // SET_META_CONTEXT before structured replies
    expect((await c.optionReply()).type).toBe(2 ** 31 + 3);
    c.option(3, Buffer.from("x")); // LIST with data
    expect((await c.optionReply()).type).toBe(2 ** 31 + 3);
    c.option(5); // STARTTLS
    expect((await c.optionReply()).type).toBe(2 ** 31 + 1);
    // 1 MiB of option data: skipped as it streams in, never buffered
    c.option(6, Buffer.alloc(1 << 20, 0x41));
    expect((await c.optionReply()).type).toBe(2 ** 31 + 9); // ERR_TOO_BIG
    c.option(3);
    const list = await c.optionReply();
    expect(list.type).toBe(2); // NBD_REP_SERVER
    expect(list.data.subarray(4, 4 + list.data.readUInt32BE(0)).toString()).toMatch(new RegExp(`^${CT}/`));
    expect((await c.optionReply()).type).toBe(1);
    c.option(2); // ABORT
    expect((await c.optionReply()).type).toBe(1);
    await c.closed;
  });

  it("drops clients that send garbage instead of the protocol, and keeps serving others", async () => {
    const a = await RawClient.connect(server.socket);
    await a.read(18);
    a.write(Buffer.from([0xde, 0xad, 0xbe, 0xef])); // unknown client flags
    await a.closed;
    const b = await RawClient.connect(server.socket);
    await b.hello();
    b.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); // no IHAVEOPT magic
    await b.closed;
    const c = await RawClient.connect(server.socket);
    await c.hello();
    c.option(1, Buffer.from("no such export")); // EXPORT_NAME cannot be refused: hang up
    await c.closed;
    const d = await RawClient.connect(server.socket);
    await d.hello();
    d.option(9, Buffer.alloc(0), 0xffffffff); // claims 4 GiB of option data, sends none
    d.socket.destroy();
    const info = await execa("nbdinfo", ["--size", server.uri]);
    expect(Number(info.stdout.trim())).toBe(raw.length);
  });

  for (const structured of [false, true]) {
    it(`transmission with ${structured ? "structured" : "simple"} replies: reads agree with the raw restore, bad requests get errors`, async () => {
      const c = await RawClient.connect(server.socket);
      const { size, flags } = await c.go(structured);
      expect(size).toBe(BigInt(raw.length));
      expect(flags & 0x3).toBe(0x3); // HAS_FLAGS | READ_ONLY
      const readOk = async (offset: number, length: number, handle: number): Promise<Buffer> => {
        c.request(0, BigInt(offset), length, handle);
        if (!structured) {
          const r = await c.simpleReply(length);
          expect(r).toMatchObject({ error: 0, handle });
          return r.data;
        }
        const r = await c.structuredReply();
        expect(r).toMatchObject({ error: 0, handle });
        const out = Buffer.alloc(length);
        let covered = 0;
        for (const ch of r.chunks) {
          if (ch.type === 1) {
            const at = Number(ch.payload.readBigUInt64BE(0)) - offset;
            ch.payload.copy(out, at, 8);
            covered += ch.payload.length - 8;
          } else if (ch.type === 2) covered += ch.payload.readUInt32BE(8);
        }
        expect(covered).toBe(length);
        return out;
      };
      const expectError = async (errno: number, handle: number): Promise<void> => {
        if (structured) expect(await c.structuredReply()).toMatchObject({ handle, error: errno });
        else expect(await c.simpleReply()).toMatchObject({ handle, error: errno });
      };
      for (const [offset, length] of [
        [0, 4096],
        [raw.length - 1, 1],
        [12345, 3 << 20],
        [1 << 20, 7 << 20],
      ] as const) {
        expect((await readOk(offset, length, 7)).equals(raw.subarray(offset, offset + length))).toBe(true);
      }
      c.request(0, BigInt(raw.length - 10), 11, 1); // one byte beyond the end
      await expectError(22, 1);
      c.request(0, 0xfffffffffffffe00n, 512, 2); // offset near 2^64
      await expectError(22, 2);
      c.request(0, 0n, 0xffffffff, 3); // 4 GiB read
      await expectError(22, 3);
      c.request(0, 0n, 64 << 20, 4); // above the maximum payload, inside the disk
      await expectError(structured ? 75 : 22, 4);
      c.request(1, 0n, 3 << 20, 5); // a write: its 3 MiB payload is skipped, EPERM
      c.write(Buffer.alloc(3 << 20, 0x55));
      await expectError(1, 5);
      c.request(4, 0n, 4096, 6); // trim
      await expectError(1, 6);
      c.request(99, 0n, 0, 8); // unknown command
      await expectError(22, 8);
      c.request(0, 0n, 512, 9, 0x80); // unknown flag
      await expectError(22, 9);
      if (!structured) {
        c.request(7, 0n, 4096, 10); // block status without a metadata context
        await expectError(22, 10);
      } else {
        c.request(7, 0n, BigInt(raw.length) > 0xffffffffn ? 0xffffffff : raw.length, 10);
        const st = await c.structuredReply();
        expect(st.chunks[0]!.type).toBe(5);
        c.request(7, BigInt(raw.length), 1, 11); // beyond the end
        await expectError(22, 11);
      }
      c.request(3, 0n, 0, 12); // flush: nothing to do
      expect(await c.simpleReply()).toMatchObject({ error: 0, handle: 12 });
      // the stream is still in sync after all that: 100 pipelined reads, replies in any order
      const want = new Map<number, [number, number]>();
      for (let h = 100; h < 200; h++) {
        const offset = (h * 2_654_435_761) % (raw.length - 65536);
        want.set(h, [offset, 65536]);
        c.request(0, BigInt(offset), 65536, h);
      }
      for (let i = 0; i < 100; i++) {
        if (!structured) {
          // simple replies carry no length: read the header, then the request's length
          const h = await c.read(16);
          expect(h.readUInt32BE(4)).toBe(0);
          const handle = Number(h.readBigUInt64BE(8));
          const [offset, length] = want.get(handle)!;
          expect((await c.read(length)).equals(raw.subarray(offset, offset + length))).toBe(true);
          want.delete(handle);
        } else {
          const r = await c.structuredReply();
          expect(r.error).toBe(0);
          expect(want.delete(r.handle)).toBe(true);
        }
      }
      expect(want.size).toBe(0);
      c.request(2, 0n, 0, 13); // DISC
      await c.closed;
    });
  }

  it("a client that never reads its replies cannot make the server buffer them", async () => {
    const pid = server.process.pid!;
    const hwm = async (): Promise<number> => {
      const status = await readFile(`/proc/${pid}/status`, "utf8");
      return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * 1024;
    };
    const c = await RawClient.connect(server.socket);
    c.socket.pause();
    // go() needs to read: negotiate first, then stop reading
    c.socket.resume();
    await c.go(false);
    c.socket.pause();
    const before = await hwm();
    // 48 reads of 32 MiB each (1.5 GiB of replies), never read
    for (let h = 0; h < 48; h++) c.request(0, BigInt((h % 6) * (1 << 20)), 32 << 20, h);
    await new Promise((r) => setTimeout(r, 4000));
    const grown = (await hwm()) - before;
    expect(grown).toBeLessThan(256 * 1024 * 1024); // ~90 MB here; ~600 MB if replies are buffered
    c.socket.destroy();
    // and the server still serves
    const copy = join(work, "after-attack.raw");
    await execa("nbdcopy", [server.uri, copy]);
    expect(await sha256File(copy)).toBe(rawSha);
    await rm(copy);
  });

  it("refuses a path that is a file or a live socket, replaces a stale socket", async () => {
    const file = join(work, "not-a-socket");
    await writeFile(file, "keep me");
    const r1 = await runCli(["serve-nbd", ...repo.args, CT, "--socket", file]);
    expect(r1.code).toBe(1);
    expect(r1.stderr.trim().split("\n")).toHaveLength(1);
    expect(r1.stderr).toMatch(/not-a-socket already exists and is not a socket/);
    expect(await readFile(file, "utf8")).toBe("keep me");

    const r2 = await runCli(["serve-nbd", ...repo.args, CT, "--socket", server.socket]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/hostile\.sock is in use/);

    // a socket file left by a killed server: nothing listens on it
    const stale = join(work, "stale.sock");
    spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, "SIGKILL"))`], {
      stdio: "ignore",
    });
    expect((await stat(stale)).isSocket()).toBe(true);
    const s = await serve([...repo.args, CT], {}, stale);
    try {
      expect(Number((await execa("nbdinfo", ["--size", s.uri])).stdout.trim())).toBe(raw.length);
    } finally {
      expect((await s.stop()).code).toBe(0);
    }
    expect(await exists(stale)).toBe(false);
  });
});
