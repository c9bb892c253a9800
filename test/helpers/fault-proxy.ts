/**
 * A fault-injecting HTTP proxy for S3 traffic: listens on 127.0.0.1, forwards every
 * request (method, path, headers incl. the SigV4 Host header, body) to an upstream S3
 * server (the test RGW) and, with configurable probabilities, misbehaves instead:
 *
 *   error500      answer 500 InternalError (S3 XML error body) without forwarding
 *   slowDown503   answer 503 SlowDown (S3 XML error body) without forwarding
 *   resetRequest  forward part of the request body upstream, then reset both connections
 *                 (the client sees ECONNRESET/EPIPE while sending; upstream an aborted upload)
 *   resetResponse forward the whole request, then reset the client connection: mid-body
 *                 for responses with a body, before the status line otherwise (the request
 *                 took effect upstream but the client cannot know: the ambiguous case)
 *   truncate      forward, send the status line and headers with the full Content-Length
 *                 (a larger one for empty bodies) but only part of the body, then close
 *                 cleanly (FIN): a body cut short
 *   stall         stop answering (before the status line, or mid-body) until the client
 *                 gives up, or `stallMs` passes (then the connection is reset)
 *   delay         forward normally after a random delay in `delayMs`
 *   holdResponse  forward (the request takes effect upstream), then hold the answer for a
 *                 random delay in `delayMs`: a request that landed long before its reply
 *   corrupt       forward, but flip one byte of a successful GET's body (same length):
 *                 only end-to-end verification (chunk ids, manifest checksums) can notice
 *
 * Apart from the random faults, `ignoreConditions` makes the proxy look like an S3 server
 * that ignores If-None-Match / If-Match on PUT: a conditional PUT the upstream refuses
 * (412) is answered 200 instead. (The upstream object is not replaced: the proxy cannot
 * re-sign the request without the condition; the client sees exactly what such a server
 * answers, which is what ploopvault's probe must catch.)
 *
 * At most one fault per request; the rates are the probabilities of each (their sum must
 * be <= 1). Deterministic with a seed: the decision for a request depends only on the seed,
 * the method, the path+query and how many times that method+path was seen before, so
 * concurrent requests in a different order get the same faults. `decide` overrides the
 * random choice (targeted tests: "truncate the first GET of every chunk").
 *
 * Plain node:http/net, no dependencies. Used by test/faults/* and scripts/soak.ts.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";

export const FAULT_KINDS = ["error500", "slowDown503", "resetRequest", "resetResponse", "truncate", "stall", "delay", "corrupt", "holdResponse"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
export type FaultRates = Record<FaultKind, number>;

export interface RequestInfo {
  method: string;
  /** Path and query as sent, e.g. "/bucket/repo/chunks/ab/ab12...?x-id=GetObject". */
  url: string;
  /** Path without the query, URL-decoded. */
  path: string;
  /** How many requests with this method+url came before this one (0 = first). */
  occurrence: number;
}

export interface FaultProxyOptions {
  /** Upstream S3 endpoint, e.g. http://127.0.0.1:7480. */
  target: string;
  /** Seed of the fault decisions (default: random, printed by describe()). */
  seed?: number;
  rates?: Partial<FaultRates>;
  /** Random delay range for "delay" faults, ms. Default [50, 500]. */
  delayMs?: [number, number];
  /** How long a stalled exchange is held before the proxy resets it, ms. Default 60000. */
  stallMs?: number;
  /** Port to listen on (default: any free port). */
  port?: number;
  /** Override the random decision: return a fault, null for none, undefined to use the rates. */
  decide?: (request: RequestInfo) => FaultKind | null | undefined;
  /** Answer 200 to conditional PUTs the upstream refuses with 412 (see the header). */
  ignoreConditions?: boolean;
}

export type FaultCounters = Record<FaultKind, number> & { requests: number; forwarded: number; upstreamErrors: number; conditionsIgnored: number };

export interface FaultProxy {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  readonly seed: number;
  /** Faults injected so far, by kind, plus requests seen/forwarded. */
  readonly counters: FaultCounters;
  /** Total faults injected (delays included). */
  faults(): number;
  /** Change the rates (e.g. none while setting up, moderate for the run under test). */
  setRates(rates: Partial<FaultRates>): void;
  setDecide(decide: FaultProxyOptions["decide"]): void;
  setIgnoreConditions(ignore: boolean): void;
  /** Zero the counters and forget which requests were seen (occurrences start at 0 again). */
  resetCounters(): void;
  /** One line: seed, requests, faults by kind. */
  describe(): string;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "expect",
  "proxy-authorization",
  "proxy-authenticate",
]);

/** mulberry32: a small, fast, seedable PRNG; plenty for fault decisions. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedFor(seed: number, method: string, url: string, occurrence: number): number {
  return createHash("sha256").update(`${seed}\0${method}\0${url}\0${occurrence}`).digest().readUInt32LE(0);
}

function s3ErrorXml(code: string, message: string, resource: string): string {
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message>` +
    `<Resource>${resource.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</Resource><RequestId>fault-${randomBytes(6).toString("hex")}</RequestId></Error>`
  );
}

function forwardHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Reset (RST) a socket if possible, else destroy it. */
function reset(socket: Socket | null | undefined): void {
  if (socket === null || socket === undefined || socket.destroyed) return;
  const s = socket as Socket & { resetAndDestroy?: () => void };
  try {
    if (typeof s.resetAndDestroy === "function") s.resetAndDestroy();
    else s.destroy();
  } catch {
    socket.destroy();
  }
}

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(options.target);
  if (target.protocol !== "http:") throw new Error(`fault proxy: only http:// upstreams are supported, got ${options.target}`);
  const seed = options.seed ?? randomBytes(4).readUInt32LE(0);
  let rates: FaultRates = normaliseRates(options.rates ?? {});
  let decide = options.decide;
  let ignoreConditions = options.ignoreConditions ?? false;
  const delayMs = options.delayMs ?? [50, 500];
  const stallMs = options.stallMs ?? 60_000;
  const seen = new Map<string, number>();
  const counters = emptyCounters();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  let closing = false;

  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const choose = (info: RequestInfo, random: () => number): FaultKind | null => {
    const forced = decide?.(info);
    if (forced !== undefined) return forced;
    let x = random();
    for (const kind of FAULT_KINDS) {
      if (x < rates[kind]) return kind;
      x -= rates[kind];
    }
    return null;
  };

  const server = createServer({ keepAlive: true }, (req, res) => {
    counters.requests++;
    const method = req.method ?? "GET";
    const url = req.url ?? "/";
    const key = `${method} ${url}`;
    const occurrence = seen.get(key) ?? 0;
    seen.set(key, occurrence + 1);
    let path = url.split("?")[0] ?? "/";
    try {
      path = decodeURIComponent(path);
    } catch {
      // keep it encoded
    }
    const random = prng(seedFor(seed, method, url, occurrence));
    let fault = choose({ method, url, path, occurrence }, random);
    // corrupt only makes sense for a GET that returns a body; a no-op otherwise
    if (fault === "corrupt" && method !== "GET") fault = null;
    // a HEAD response has no body to cut short: the closest thing is a reset
    if (fault === "truncate" && method === "HEAD") fault = "resetResponse";
    req.on("error", () => undefined);
    res.on("error", () => undefined);
    const clientSocket = req.socket;

    if (fault === "error500" || fault === "slowDown503") {
      counters[fault]++;
      const [status, code, message] =
        fault === "error500"
          ? [500, "InternalError", "We encountered an internal error. Please try again."]
          : [503, "SlowDown", "Please reduce your request rate."];
      // read (and drop) the request body first, as a server would
      req.resume();
      req.on("end", () => {
        const body = method === "HEAD" ? "" : s3ErrorXml(code, message, path);
        res.writeHead(status, { "Content-Type": "application/xml", "Content-Length": Buffer.byteLength(body), "x-amz-request-id": "fault" });
        res.end(body);
      });
      return;
    }
    if (fault === "stall" && random() < 0.5) {
      // stall before anything reaches upstream: hold the request, answer nothing
      counters.stall++;
      req.resume();
      later(stallMs, () => reset(clientSocket));
      return;
    }
    const forward = (): void => {
      if (closing) {
        reset(clientSocket);
        return;
      }
      counters.forwarded++;
      const upstreamReq = httpRequest({
        host: target.hostname,
        port: target.port === "" ? 80 : Number(target.port),
        method,
        path: url,
        headers: forwardHeaders(req.headers),
        agent,
      });
      let upstreamDone = false;
      upstreamReq.on("error", () => {
        if (upstreamDone) return;
        upstreamDone = true;
        counters.upstreamErrors++;
        reset(clientSocket);
      });

      if (fault === "resetRequest") {
        counters.resetRequest++;
        const length = Number(req.headers["content-length"] ?? 0);
        const cut = length > 0 ? Math.floor(random() * length) : 0;
        let sent = 0;
        const cutNow = (): void => {
          upstreamDone = true;
          upstreamReq.destroy();
          reset(clientSocket);
        };
        if (cut === 0) {
          cutNow();
          return;
        }
        req.on("data", (data: Buffer) => {
          if (upstreamDone) return;
          const take = Math.min(data.length, cut - sent);
          upstreamReq.write(data.subarray(0, take));
          sent += take;
          if (sent >= cut) cutNow();
        });
        req.on("end", cutNow);
        return;
      }

      req.pipe(upstreamReq);
      upstreamReq.on("response", (upstream) => {
        upstream.on("error", () => reset(clientSocket));
        const conditional = req.headers["if-none-match"] !== undefined || req.headers["if-match"] !== undefined;
        if (ignoreConditions && method === "PUT" && conditional && upstream.statusCode === 412) {
          counters.conditionsIgnored++;
          upstream.resume();
          upstream.on("end", () => {
            upstreamDone = true;
            res.writeHead(200, { ETag: `"${randomBytes(16).toString("hex")}"`, "Content-Length": 0, "x-amz-request-id": "fault" });
            res.end();
          });
          return;
        }
        relayResponse(method, upstream, res, clientSocket, fault, random, () => (upstreamDone = true));
      });
    };

    if (fault === "delay") {
      counters.delay++;
      req.pause();
      later(delayMs[0] + Math.floor(random() * Math.max(0, delayMs[1] - delayMs[0])), () => {
        req.resume();
        forward();
      });
      return;
    }
    forward();
  });

  /** Send the upstream response to the client, applying a response-side fault. */
  const relayResponse = (
    method: string,
    upstream: IncomingMessage,
    res: ServerResponse,
    clientSocket: Socket,
    fault: FaultKind | null,
    random: () => number,
    done: () => void,
  ): void => {
    const status = upstream.statusCode ?? 502;
    const headers = forwardHeaders(upstream.headers);
    const chunks: Buffer[] = [];
    upstream.on("data", (d: Buffer) => chunks.push(d));
    upstream.on("end", () => {
      done();
      if (fault === "holdResponse") {
        counters.holdResponse++;
        later(delayMs[0] + Math.floor(random() * Math.max(0, delayMs[1] - delayMs[0])), () => send(Buffer.concat(chunks)));
      } else {
        send(Buffer.concat(chunks));
      }
    });
    const send = (received: Buffer): void => {
      let body = received;
      if (res.destroyed || clientSocket.destroyed) return;
      switch (fault) {
        case "resetResponse": {
          counters.resetResponse++;
          if (body.length === 0) {
            reset(clientSocket); // the request took effect upstream; the client sees a reset
            return;
          }
          res.writeHead(status, { ...headers, "content-length": body.length });
          res.write(body.subarray(0, Math.floor(random() * body.length)), () => reset(clientSocket));
          return;
        }
        case "truncate": {
          counters.truncate++;
          const declared = body.length === 0 ? 1 + Math.floor(random() * 100) : body.length;
          res.writeHead(status, { ...headers, "content-length": declared });
          const part = body.subarray(0, Math.floor(random() * body.length));
          // the headers and part of the body, then a clean close: fewer bytes than announced
          res.write(part, () => clientSocket.end());
          return;
        }
        case "stall": {
          counters.stall++;
          if (body.length > 1 && method !== "HEAD") {
            // status line, headers and part of the body, then nothing
            res.writeHead(status, { ...headers, "content-length": body.length });
            res.write(body.subarray(0, Math.floor(random() * (body.length - 1))));
          }
          later(stallMs, () => reset(clientSocket));
          return;
        }
        case "corrupt": {
          if ((status === 200 || status === 206) && body.length > 0) {
            counters.corrupt++;
            body = Buffer.from(body);
            const at = Math.floor(random() * body.length);
            body[at] = body[at]! ^ (1 + Math.floor(random() * 255));
          }
          break;
        }
        default:
          break;
      }
      if (method === "HEAD") {
        res.writeHead(status, headers);
        res.end();
        return;
      }
      res.writeHead(status, { ...headers, "content-length": body.length });
      res.end(body);
    };
  };

  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("clientError", (_error, socket) => reset(socket as Socket));

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seed,
    counters,
    faults: () => FAULT_KINDS.reduce((sum, k) => sum + counters[k], 0),
    setRates(next) {
      rates = normaliseRates(next);
    },
    setIgnoreConditions(ignore) {
      ignoreConditions = ignore;
    },
    setDecide(next) {
      decide = next;
    },
    resetCounters() {
      Object.assign(counters, emptyCounters());
      seen.clear();
    },
    describe() {
      const kinds = FAULT_KINDS.filter((k) => counters[k] > 0).map((k) => `${k}=${counters[k]}`);
      return `fault proxy seed ${seed}: ${counters.requests} requests, ${FAULT_KINDS.reduce((s, k) => s + counters[k], 0)} faults${kinds.length ? ` (${kinds.join(", ")})` : ""}`;
    },
    async close() {
      closing = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function emptyCounters(): FaultCounters {
  const c = { requests: 0, forwarded: 0, upstreamErrors: 0, conditionsIgnored: 0 } as FaultCounters;
  for (const k of FAULT_KINDS) c[k] = 0;
  return c;
}

function normaliseRates(partial: Partial<FaultRates>): FaultRates {
  const rates = {} as FaultRates;
  let sum = 0;
  for (const k of FAULT_KINDS) {
    const r = partial[k] ?? 0;
    if (!(r >= 0 && r <= 1)) throw new Error(`fault proxy: rate ${k}=${r} is not in [0, 1]`);
    rates[k] = r;
    sum += r;
  }
  if (sum > 1 + 1e-9) throw new Error(`fault proxy: fault rates add up to ${sum} > 1`);
  return rates;
}

/** Moderate rates used by the faults suite and the soak script (about 1 request in 7 misbehaves). */
export const MODERATE_FAULTS: Partial<FaultRates> = {
  error500: 0.03,
  slowDown503: 0.02,
  resetRequest: 0.02,
  resetResponse: 0.02,
  truncate: 0.02,
  stall: 0.01,
  delay: 0.02,
};
