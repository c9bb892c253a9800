/**
 * A read-only NBD server on a Unix socket (the socket I/O around src/nbd/protocol.ts).
 *
 * Several clients at once, each with up to `requestsPerConnection` requests in flight
 * (replies may come out of order, as the protocol allows); all share one export, so its
 * chunk cache serves every connection and NBD_FLAG_CAN_MULTI_CONN is set.
 *
 * Memory stays bounded whatever a client sends:
 * - option data above 64 KiB and write payloads are skipped as they stream in, never
 *   buffered; reads above MAX_READ_BYTES are refused (EOVERFLOW/EINVAL), block status
 *   replies carry at most MAX_STATUS_EXTENTS descriptors;
 * - the data of reads in flight, from the fetch until the kernel took the reply, counts
 *   against one server-wide budget (`bufferBytes`): a client that stops reading its
 *   replies stalls itself, not the server;
 * - a connection stops reading requests while its in-flight limit is reached (the
 *   socket's own buffer then fills and TCP-style backpressure reaches the client);
 * - a client that does not finish the handshake within `handshakeTimeoutMs` is dropped.
 * A malformed message that cannot be skipped (wrong magic, an export name we cannot
 * answer) ends that connection only; errors reading the export become EIO replies.
 */
import { chmod, lstat, unlink } from "node:fs/promises";
import net from "node:net";
import { errorLine, PloopvaultError } from "../errors.js";
import {
  BASE_ALLOCATION,
  encodeBlockStatus,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeNone,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeOptionError,
  encodeOptionReply,
  encodeServerEntry,
  encodeSimpleReply,
  encodeStructuredError,
  inBounds,
  isOptionDataError,
  matchMetaContexts,
  MAX_STRING_BYTES,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  OPTION_HEADER_BYTES,
  parseClientFlags,
  parseInfoRequest,
  parseMetaContextRequest,
  parseOptionHeader,
  parseRequest,
  planBlockStatus,
  planRead,
  REQUEST_BYTES,
  type Extent,
  type Request,
} from "./protocol.js";

/** What the server exports: a read-only byte range that knows where its holes are. */
export interface NbdExport {
  /** The export's name (NBD_OPT_LIST); the empty default name selects it too. */
  readonly name: string;
  readonly description: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset` (within size), zeros in holes. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Data and holes over [offset, offset + length), in order, at most `limit` extents. */
  extents(offset: number, length: number, limit?: number): Extent[];
}

/** Largest read a client may ask for (advertised as the maximum payload: the spec's 32 MiB default). */
export const MAX_READ_BYTES = 32 * 1024 * 1024;
/** Option data above this is skipped unread and answered NBD_REP_ERR_TOO_BIG. */
const MAX_OPTION_BYTES = 64 * 1024;
/** Descriptors in one block status reply (the spec allows returning less than asked). */
export const MAX_STATUS_EXTENTS = 65536;
/** The one metadata context's id. */
const ALLOCATION_CONTEXT_ID = 1;
/** Bytes a connection buffers before it pauses its socket. */
const READ_HIGH_WATER = 256 * 1024;

export interface NbdServerOptions {
  /** Clients served at once; more are refused by closing them (default 32). */
  maxConnections?: number;
  /** Requests of one client processed at once (default 16). */
  requestsPerConnection?: number;
  /** Server-wide bytes of read data in flight (default 64 MiB). */
  bufferBytes?: number;
  /** Time a client has to finish option haggling (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Warnings: failed reads, clients dropped for protocol violations. */
  log?: (line: string) => void;
}

export interface NbdServerStats {
  connections: number;
  reads: number;
  /** Bytes sent in read replies (data chunks; holes cost nothing). */
  bytesSent: number;
  /** Requests answered with an error. */
  errors: number;
}

class ConnectionClosed extends Error {}

/** Exact-length reads from a socket, pausing it while enough is buffered. */
class SocketReader {
  private readonly chunks: Buffer[] = [];
  private head = 0;
  private buffered = 0;
  private ended = false;
  private wake: (() => void) | null = null;

  constructor(private readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered >= READ_HIGH_WATER) socket.pause();
      this.notify();
    });
    const end = (): void => {
      this.ended = true;
      this.notify();
    };
    socket.on("end", end);
    socket.on("close", end);
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async more(): Promise<void> {
    if (this.ended) throw new ConnectionClosed("client closed the connection");
    this.socket.resume();
    await new Promise<void>((resolve) => {
      this.wake = resolve;
    });
  }

  /** Exactly n bytes (n is bounded by the caller). */
  async read(n: number): Promise<Buffer> {
    while (this.buffered < n) await this.more();
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) done += this.take(n - done, out, done);
    return out;
  }

  /** Discard n bytes as they arrive (a write payload, oversized option data). */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0) {
        await this.more();
        continue;
      }
      left -= this.take(left, null, 0);
    }
  }

  private take(max: number, into: Buffer | null, at: number): number {
    const chunk = this.chunks[0]!;
    const n = Math.min(max, chunk.length - this.head);
    if (into !== null) chunk.copy(into, at, this.head, this.head + n);
    this.head += n;
    this.buffered -= n;
    if (this.head === chunk.length) {
      this.chunks.shift();
      this.head = 0;
    }
    return n;
  }
}

/** A counting semaphore over bytes, first come first served. */
class ByteBudget {
  private used = 0;
  private readonly waiters: { bytes: number; resolve: () => void }[] = [];

  constructor(private readonly limit: number) {}

  /** Take `bytes` (at most the whole budget) when they are free; returns what was taken. */
  async acquire(bytes: number): Promise<number> {
    const n = Math.min(bytes, this.limit);
    if (this.waiters.length === 0 && this.used + n <= this.limit) {
      this.used += n;
      return n;
    }
    await new Promise<void>((resolve) => this.waiters.push({ bytes: n, resolve }));
    return n;
  }

  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiters.length > 0 && this.used + this.waiters[0]!.bytes <= this.limit) {
      const next = this.waiters.shift()!;
      this.used += next.bytes;
      next.resolve();
    }
  }
}

interface ServerContext {
  readonly exported: NbdExport;
  readonly budget: ByteBudget;
  readonly stats: NbdServerStats;
  readonly requestsPerConnection: number;
  readonly handshakeTimeoutMs: number;
  readonly log: (line: string) => void;
}

/** One client: handshake, then requests until it disconnects. */
class Connection {
  private readonly reader: SocketReader;
  private structured = false;
  private allocationSelected = false;
  private inFlight = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private closed = false;
  /** Budget releases of replies the kernel has not taken yet (run on close). */
  private readonly pendingReleases = new Set<() => void>();

  constructor(
    private readonly socket: net.Socket,
    private readonly ctx: ServerContext,
    readonly id: number,
  ) {
    this.reader = new SocketReader(socket);
    socket.on("error", () => undefined); // a reset client: "close" follows
    socket.on("close", () => {
      this.closed = true;
      for (const release of [...this.pendingReleases]) release();
    });
  }

  async run(): Promise<void> {
    const timer = setTimeout(() => this.hangUp("did not finish the handshake in time"), this.ctx.handshakeTimeoutMs);
    try {
      this.socket.write(encodeGreeting());
      const client = parseClientFlags(await this.reader.read(4));
      if (client === null) return this.hangUp("sent unknown client flags");
      const transmit = await this.negotiate(client.noZeroes);
      clearTimeout(timer);
      if (transmit) await this.transmit();
      else this.socket.end();
    } catch (error) {
      if (!(error instanceof ConnectionClosed)) this.hangUp(`failed: ${errorLine(error)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Drop the connection (protocol violation, shutdown). */
  hangUp(why?: string): void {
    if (why !== undefined && !this.closed) this.ctx.log(`NBD client ${this.id} ${why}: disconnected`);
    this.closed = true;
    this.socket.destroy();
  }

  private transmissionFlags(): number {
    return NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN | (this.structured ? NBD_FLAG_SEND_DF : 0);
  }

  private knownName(name: string): boolean {
    return name === "" || name === this.ctx.exported.name;
  }

  private reply(option: number, type: number, data?: Buffer): void {
    this.socket.write(encodeOptionReply(option, type, data));
  }

  /** Option haggling; true when the client entered transmission, false after NBD_OPT_ABORT. */
  private async negotiate(noZeroes: boolean): Promise<boolean> {
    const exported = this.ctx.exported;
    for (;;) {
      const header = parseOptionHeader(await this.reader.read(OPTION_HEADER_BYTES));
      if (header === null) {
        this.hangUp("sent an option without the IHAVEOPT magic");
        throw new ConnectionClosed();
      }
      const { option, length } = header;
      if (option === NBD_OPT_EXPORT_NAME) {
        // This option cannot be answered with an error: a bad name ends the session.
        const name = length <= MAX_STRING_BYTES ? (await this.reader.read(length)).toString("utf8") : null;
        if (name === null || !this.knownName(name)) {
          this.hangUp(`asked for an unknown export (NBD_OPT_EXPORT_NAME)`);
          throw new ConnectionClosed();
        }
        this.socket.write(encodeExportNameReply(exported.size, this.transmissionFlags(), noZeroes));
        return true;
      }
      if (length > MAX_OPTION_BYTES) {
        await this.reader.skip(length);
        this.socket.write(encodeOptionError(option, NBD_REP_ERR_TOO_BIG, `option data of ${length} bytes is too large`));
        continue;
      }
      const data = await this.reader.read(length);
      switch (option) {
        case NBD_OPT_ABORT:
          this.reply(option, NBD_REP_ACK);
          return false;
        case NBD_OPT_LIST:
          if (length !== 0) {
            this.socket.write(encodeOptionError(option, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data"));
            break;
          }
          this.reply(option, NBD_REP_SERVER, encodeServerEntry(exported.name, exported.description));
          this.reply(option, NBD_REP_ACK);
          break;
        case NBD_OPT_STARTTLS:
          this.socket.write(encodeOptionError(option, NBD_REP_ERR_UNSUP, "TLS is not supported (the server listens on a local Unix socket)"));
          break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
          const request = parseInfoRequest(data);
          if (isOptionDataError(request)) {
            this.socket.write(encodeOptionError(option, request.error, request.message));
            break;
          }
          if (!this.knownName(request.name)) {
            this.socket.write(
              encodeOptionError(option, NBD_REP_ERR_UNKNOWN, `no export named "${request.name}" (this server exports "${exported.name}", also as "")`),
            );
            break;
          }
          this.reply(option, NBD_REP_INFO, encodeInfoExport(exported.size, this.transmissionFlags()));
          if (request.requests.includes(NBD_INFO_NAME)) this.reply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_NAME, exported.name));
          if (request.requests.includes(NBD_INFO_DESCRIPTION)) this.reply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_DESCRIPTION, exported.description));
          if (request.requests.includes(NBD_INFO_BLOCK_SIZE)) this.reply(option, NBD_REP_INFO, encodeInfoBlockSize(1, 4096, MAX_READ_BYTES));
          this.reply(option, NBD_REP_ACK);
          if (option === NBD_OPT_GO) return true;
          break;
        }
        case NBD_OPT_STRUCTURED_REPLY:
          if (length !== 0) {
            this.socket.write(encodeOptionError(option, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data"));
            break;
          }
          this.structured = true;
          this.reply(option, NBD_REP_ACK);
          break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT: {
          const listing = option === NBD_OPT_LIST_META_CONTEXT;
          if (!listing) this.allocationSelected = false; // a SET replaces the selection, even when it fails
          if (!this.structured) {
            this.socket.write(encodeOptionError(option, NBD_REP_ERR_INVALID, "negotiate structured replies first"));
            break;
          }
          const request = parseMetaContextRequest(data);
          if (isOptionDataError(request)) {
            this.socket.write(encodeOptionError(option, request.error, request.message));
            break;
          }
          if (!this.knownName(request.name)) {
            this.socket.write(encodeOptionError(option, NBD_REP_ERR_UNKNOWN, `no export named "${request.name}"`));
            break;
          }
          for (const context of matchMetaContexts(request.queries, listing)) {
            this.reply(option, NBD_REP_META_CONTEXT, encodeMetaContext(listing ? 0 : ALLOCATION_CONTEXT_ID, context));
            if (!listing && context === BASE_ALLOCATION) this.allocationSelected = true;
          }
          this.reply(option, NBD_REP_ACK);
          break;
        }
        default:
          this.socket.write(encodeOptionError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`));
      }
    }
  }

  private async slot(): Promise<void> {
    while (this.inFlight >= this.ctx.requestsPerConnection) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
  }

  private spawn(work: Promise<void>): void {
    this.inFlight++;
    void work
      .catch((error: unknown) => this.ctx.log(`NBD client ${this.id}: internal error: ${errorLine(error)}`))
      .finally(() => {
        this.inFlight--;
        this.slotWaiters.shift()?.();
      });
  }

  private async idle(): Promise<void> {
    while (this.inFlight > 0) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
  }

  /** Write one reply's parts back to back; `done` runs once the kernel has them (or the connection died). */
  private send(parts: readonly Buffer[], done?: () => void): void {
    if (this.closed) {
      done?.();
      return;
    }
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      this.pendingReleases.delete(finish);
      done?.();
    };
    if (done !== undefined) this.pendingReleases.add(finish);
    this.socket.cork();
    parts.forEach((part, i) => this.socket.write(part, i === parts.length - 1 ? () => finish() : undefined));
    this.socket.uncork();
  }

  private fail(request: Request, error: number, message: string): void {
    this.ctx.stats.errors++;
    this.send([this.structured ? encodeStructuredError(request.handle, error, message) : encodeSimpleReply(error, request.handle)]);
  }

  private async transmit(): Promise<void> {
    const size = this.ctx.exported.size;
    for (;;) {
      await this.slot();
      const request = parseRequest(await this.reader.read(REQUEST_BYTES));
      if (request === null) return this.hangUp("sent a request without the request magic");
      const { type, flags, length, offset } = request;
      switch (type) {
        case NBD_CMD_DISC:
          await this.idle();
          this.socket.end();
          return;
        case NBD_CMD_WRITE:
          await this.reader.skip(length);
          this.fail(request, NBD_EPERM, "the export is read-only");
          break;
        case NBD_CMD_TRIM:
        case NBD_CMD_WRITE_ZEROES:
          this.fail(request, NBD_EPERM, "the export is read-only");
          break;
        case NBD_CMD_FLUSH:
          // Nothing is ever written, so there is nothing to flush.
          if ((flags & ~NBD_CMD_FLAG_FUA) !== 0) this.fail(request, NBD_EINVAL, "unknown command flags");
          else this.send([encodeSimpleReply(0, request.handle)]);
          break;
        case NBD_CMD_READ: {
          const allowed = NBD_CMD_FLAG_FUA | (this.structured ? NBD_CMD_FLAG_DF : 0);
          if ((flags & ~allowed) !== 0) this.fail(request, NBD_EINVAL, "unknown command flags");
          else if (!inBounds(offset, length, size))
            this.fail(request, NBD_EINVAL, `read of ${length} bytes at ${offset} is beyond the end of the export (${size} bytes)`);
          else if (length > MAX_READ_BYTES)
            this.fail(request, this.structured ? NBD_EOVERFLOW : NBD_EINVAL, `read of ${length} bytes is larger than the maximum of ${MAX_READ_BYTES}`);
          else this.spawn(this.read(request, Number(offset), (flags & NBD_CMD_FLAG_DF) !== 0));
          break;
        }
        case NBD_CMD_BLOCK_STATUS:
          if (!this.allocationSelected) this.fail(request, NBD_EINVAL, "no metadata context was selected");
          else if ((flags & ~(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE)) !== 0) this.fail(request, NBD_EINVAL, "unknown command flags");
          else if (length === 0 || !inBounds(offset, length, size))
            this.fail(request, NBD_EINVAL, `block status of ${length} bytes at ${offset} is outside the export (${size} bytes)`);
          else {
            const at = Number(offset);
            const descriptors = planBlockStatus(this.ctx.exported.extents(at, length, MAX_STATUS_EXTENTS), at, length, (flags & NBD_CMD_FLAG_REQ_ONE) !== 0);
            this.send([encodeBlockStatus(request.handle, ALLOCATION_CONTEXT_ID, descriptors)]);
          }
          break;
        default:
          this.fail(request, NBD_EINVAL, `command ${type} is not supported`);
      }
    }
  }

  private async read(request: Request, offset: number, dontFragment: boolean): Promise<void> {
    const { handle, length } = request;
    const exported = this.ctx.exported;
    const plan = this.structured ? planRead(exported.extents(offset, length), offset, length, dontFragment) : [{ offset, length, hole: false }];
    const dataBytes = plan.reduce((s, p) => s + (p.hole ? 0 : p.length), 0);
    const held = await this.ctx.budget.acquire(dataBytes);
    let released = false;
    const release = (): void => {
      if (!released) this.ctx.budget.release(held);
      released = true;
    };
    let data: (Buffer | null)[];
    try {
      if (this.closed) return release();
      data = await Promise.all(plan.map((p) => (p.hole || p.length === 0 ? Promise.resolve(null) : exported.read(p.offset, p.length))));
    } catch (error) {
      release();
      this.ctx.log(`NBD read of ${length} bytes at ${offset} failed: ${errorLine(error)}`);
      this.fail(request, NBD_EIO, errorLine(error));
      return;
    }
    this.ctx.stats.reads++;
    this.ctx.stats.bytesSent += dataBytes;
    if (!this.structured) {
      this.send(length === 0 ? [encodeSimpleReply(0, handle)] : [encodeSimpleReply(0, handle), data[0]!], release);
      return;
    }
    if (plan.length === 0) {
      this.send([encodeNone(handle)], release);
      return;
    }
    const parts: Buffer[] = [];
    plan.forEach((p, i) => {
      const flags = i === plan.length - 1 ? NBD_REPLY_FLAG_DONE : 0;
      if (p.hole) parts.push(encodeOffsetHole(flags, handle, p.offset, p.length));
      else parts.push(encodeOffsetDataHeader(flags, handle, p.offset, p.length), data[i]!);
    });
    this.send(parts, release);
  }
}

/** `nbd+unix:///?socket=PATH`: the URI libnbd tools (nbdinfo, nbdcopy, nbdfuse) and qemu take. */
export function nbdUnixUri(socketPath: string): string {
  return `nbd+unix:///?socket=${socketPath.replace(/[^A-Za-z0-9/._~-]/g, (c) => encodeURIComponent(c))}`;
}

/** Whether something accepts connections on the socket at `path` (false: a stale socket file). */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", (error: NodeJS.ErrnoException) => resolve(error.code !== "ECONNREFUSED"));
  });
}

export class NbdServer {
  readonly stats: NbdServerStats = { connections: 0, reads: 0, bytesSent: 0, errors: 0 };
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private readonly ctx: ServerContext;
  private socketPath: string | null = null;
  private socketIno: number | null = null;

  constructor(exported: NbdExport, options: NbdServerOptions = {}) {
    this.ctx = {
      exported,
      budget: new ByteBudget(Math.max(MAX_READ_BYTES, options.bufferBytes ?? 64 * 1024 * 1024)),
      stats: this.stats,
      requestsPerConnection: Math.max(1, options.requestsPerConnection ?? 16),
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 30_000,
      log: options.log ?? (() => undefined),
    };
    this.server = net.createServer((socket) => this.accept(socket));
    this.server.maxConnections = Math.max(1, options.maxConnections ?? 32);
    this.server.on("error", (error) => this.ctx.log(`NBD server: ${errorLine(error)}`));
  }

  private accept(socket: net.Socket): void {
    const connection = new Connection(socket, this.ctx, ++this.stats.connections);
    this.connections.add(connection);
    socket.on("close", () => this.connections.delete(connection));
    void connection.run();
  }

  /**
   * Listen on a Unix socket at `path`, created owner-only (0600). An existing path is
   * refused unless it is a stale socket (nothing answers on it): that is removed.
   */
  async listen(path: string): Promise<void> {
    let existing;
    try {
      existing = await lstat(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT")
        throw new PloopvaultError(`cannot use socket path ${path}: ${errorLine(error)}`, { cause: error });
    }
    if (existing !== undefined) {
      if (!existing.isSocket()) throw new PloopvaultError(`socket path ${path} already exists and is not a socket: choose another --socket path`);
      if (await socketAnswers(path)) throw new PloopvaultError(`socket path ${path} is in use: another server listens on it`);
      await unlink(path).catch((error: unknown) => {
        throw new PloopvaultError(`cannot remove the stale socket ${path}: ${errorLine(error)}`, { cause: error });
      });
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(new PloopvaultError(`cannot listen on ${path}: ${errorLine(error)}`, { cause: error }));
      this.server.once("error", onError);
      // bind() runs synchronously inside listen(): the socket file is created 0600 under this umask.
      const umask = process.umask(0o177);
      try {
        this.server.listen(path, () => {
          this.server.off("error", onError);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    this.socketPath = path;
    await chmod(path, 0o600);
    this.socketIno = (await lstat(path)).ino;
  }

  /** Stop accepting, drop every client, remove the socket file (if it is still ours). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const connection of this.connections) connection.hangUp();
    await closed;
    if (this.socketPath !== null) {
      const st = await lstat(this.socketPath).catch(() => null);
      if (st?.isSocket() && st.ino === this.socketIno) await unlink(this.socketPath).catch(() => undefined);
      this.socketPath = null;
    }
  }
}
