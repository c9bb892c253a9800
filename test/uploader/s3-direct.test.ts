/**
 * Direct S3 requests (src/uploader/s3-direct.ts): S3Store.get() and plain put()s sign
 * their requests themselves and send them without the AWS SDK. The signature is checked
 * against the SDK's own signer (@smithy/signature-v4) as the oracle, and the whole path
 * against the real test RGW (what was stored read back with the independent minio
 * client): exact bytes for every size and for keys that need escaping, no SDK request on
 * the way, and the same errors (kind and message) as the SDK path for a missing object, a
 * missing bucket, a wrong secret and an unreachable endpoint. Faults on the wire:
 * s3-faults.test.ts runs both paths.
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { SignatureV4 } from "@smithy/signature-v4";
import { S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { encodeS3Path, signedHeaders } from "../../src/uploader/s3-direct.js";
import { S3Store, type S3StoreOptions } from "../../src/uploader/s3.js";
import { StoreError } from "../../src/uploader/store.js";
import { getObject, makeTestBucket, putObject, removeTestBucket, testS3, testStoreOptions } from "../helpers/s3-server.js";

/** node:crypto as the Checksum the SDK's signer takes (HMAC when given a secret). */
type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytesOf = (data: SourceData): string | Uint8Array =>
  typeof data === "string" ? data : data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
class NodeSha256 {
  private hash: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  private readonly secret: string | Uint8Array | undefined;
  constructor(secret?: SourceData) {
    this.secret = secret === undefined ? undefined : bytesOf(secret);
    this.hash = this.fresh();
  }
  private fresh(): ReturnType<typeof createHash> | ReturnType<typeof createHmac> {
    return this.secret === undefined ? createHash("sha256") : createHmac("sha256", this.secret);
  }
  update(data: SourceData): void {
    this.hash.update(bytesOf(data));
  }
  async digest(): Promise<Uint8Array> {
    return this.hash.digest();
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

describe("SigV4 signature of a direct request", () => {
  const cases = [
    { method: "GET" as const, key: "data/ab/abcdef0123", host: "127.0.0.1:9000", region: "us-east-1", sessionToken: undefined },
    { method: "GET" as const, key: "dir/a b+c=d~e!'()*%.bin", host: "s3.example.net", region: "eu-central-1", sessionToken: undefined },
    {
      method: "PUT" as const,
      key: "snapshots/ünïcode/x",
      host: "[::1]:8080",
      region: "us-west-2",
      sessionToken: "FwoGZXIvYXdzEJr//////////wEaDEXAMPLE+token/=",
    },
    { method: "PUT" as const, key: "data/00/0011", host: "minio.local:9000", region: "us-east-1", sessionToken: undefined },
  ];
  it.each(cases)("is the SDK signer's for $method $key at $host", async ({ method, key, host, region, sessionToken }) => {
    const credentials = {
      accessKeyId: "AKIAIOSFODNN7EXAMPLE",
      secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      ...(sessionToken ? { sessionToken } : {}),
    };
    const now = new Date("2026-12-05T01:02:03.456Z");
    const path = `/my-bucket/${encodeS3Path(key)}`;
    const body = method === "PUT" ? randomBytes(1234) : undefined;
    const payloadSha256 = createHash("sha256")
      .update(body ?? Buffer.alloc(0))
      .digest("hex");
    const ours = signedHeaders({ method, host, path, payloadSha256, region, credentials, now });
    const signer = new SignatureV4({ service: "s3", region, credentials, sha256: NodeSha256, uriEscapePath: false, applyChecksum: true });
    // the SDK's signer hashes the body itself when no x-amz-content-sha256 is given
    const theirs = await signer.sign(
      { method, protocol: "http:", hostname: host, path, query: {}, headers: { host }, ...(body === undefined ? {} : { body }) },
      { signingDate: now },
    );
    expect(theirs.headers["x-amz-content-sha256"]).toBe(payloadSha256);
    expect(ours.authorization).toBe(theirs.headers.authorization);
    expect(ours["x-amz-date"]).toBe(theirs.headers["x-amz-date"]);
    if (sessionToken) expect(ours["x-amz-security-token"]).toBe(sessionToken);
  });

  it("escapes keys as S3 does: everything but unreserved characters, slashes kept", () => {
    expect(encodeS3Path("a b/c+d/e~f_g-h.i/!'()*")).toBe("a%20b/c%2Bd/e~f_g-h.i/%21%27%28%29%2A");
    expect(encodeS3Path("ü")).toBe("%C3%BC");
  });
});

describe("direct GETs from a server that lies about the size", () => {
  it("a Content-Length of a terabyte with a few bytes behind it: retried, one line; nothing allocated up front", async () => {
    let requests = 0;
    const server = createServer((_req, res) => {
      requests++;
      res.writeHead(200, { "content-length": String(1e12) });
      res.write("0123456789", () => res.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const store = new S3Store({
      bucket: "bkt",
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      credentials: { accessKeyId: "a", secretAccessKey: "b" },
      maxAttempts: 2,
    });
    try {
      const error = await store.get("data/x").then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(StoreError);
      // the body breaks off after 10 bytes: a reset, retried like any other
      expect((error as StoreError).message).toMatch(
        /^cannot read s3:\/\/bkt\/data\/x: S3 endpoint http:\/\/127\.0\.0\.1:\d+ unreachable \(connection reset, 2 attempts\)$/,
      );
      expect(requests).toBe(2);
    } finally {
      await store.close();
      server.close();
    }
  });
});

describe("direct requests against the test RGW", () => {
  let bucket: string;
  const open = (options: Partial<S3StoreOptions> = {}): S3Store => new S3Store(testStoreOptions(bucket, "direct", options));
  const errorOf = async (promise: Promise<unknown>): Promise<StoreError> => {
    const error = await promise.then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StoreError);
    return error as StoreError;
  };

  beforeAll(async () => {
    bucket = await makeTestBucket("direct");
  });
  afterAll(async () => {
    await removeTestBucket(bucket);
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("writes and reads every size and escaped keys byte for byte, without a request through the SDK", async () => {
    const bodies = new Map<string, Buffer>([
      ["put/empty", Buffer.alloc(0)],
      ["put/data/2m", randomBytes(2 << 20)],
      ["put/dir/a b+c=d~e!'()*%.bin", randomBytes(777)],
    ]);
    const send = vi.spyOn(S3Client.prototype, "send");
    const store = open();
    try {
      await Promise.all([...bodies].map(([key, body]) => store.put(key, body)));
      await store.put("put/data/2m", bodies.get("put/data/2m")!); // a chunk stored twice: the same object
      for (const [key, body] of bodies) expect((await getObject(bucket, `direct/${key}`)).equals(body), key).toBe(true);
      for (const [key, body] of bodies) expect((await store.get(key)).equals(body), key).toBe(true);
    } finally {
      await store.close();
    }
    expect(send).not.toHaveBeenCalled();
    // conditional writes still go through the SDK (their failure handling lives there)
    const conditional = open();
    try {
      await conditional.put("put/manifest", Buffer.from("m"), { ifAbsent: true });
      expect(send).toHaveBeenCalledTimes(1);
    } finally {
      await conditional.close();
    }
  });

  it("an aborted put gives up with the abort's reason", async () => {
    const store = open();
    try {
      const reason = new Error("registration lapsed");
      await expect(store.put("put/aborted", randomBytes(10), { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    } finally {
      await store.close();
    }
  });

  it("reads every size and escaped keys byte for byte, without a request through the SDK", async () => {
    const bodies = new Map<string, Buffer>([
      ["empty", Buffer.alloc(0)],
      ["one", Buffer.from("x")],
      ["data/3m", randomBytes(3 << 20)],
      ["dir/a b+c=d~e!'()*%.bin", randomBytes(1000)],
      ["ünïcode/x", randomBytes(70_000)],
    ]);
    for (const [key, body] of bodies) await putObject(bucket, `direct/${key}`, body);
    const send = vi.spyOn(S3Client.prototype, "send");
    const store = open();
    try {
      for (const [key, body] of bodies) expect((await store.get(key)).equals(body), key).toBe(true);
      const all = await Promise.all([...bodies.keys()].map((key) => store.get(key)));
      expect(all.map((b) => b.length)).toEqual([...bodies.values()].map((b) => b.length));
    } finally {
      await store.close();
    }
    expect(send).not.toHaveBeenCalled();
  });

  it("fails as the SDK path does: a missing object, a missing bucket, a wrong secret", async () => {
    const s3 = testS3();
    const wrongSecret = { credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: `${s3.secretAccessKey}-wrong` }, maxAttempts: 2 };
    const noBucket = { bucket: `${bucket}-missing` };
    const scenarios: [string, Partial<S3StoreOptions>, string][] = [
      ["missing object", {}, "not-found"],
      ["missing bucket", noBucket, "no-container"],
      ["wrong secret", wrongSecret, "auth"],
    ];
    for (const [what, options, kind] of scenarios) {
      const direct = open(options);
      const sdk = open({ ...options, direct: false });
      try {
        const viaDirect = await errorOf(direct.get("no/such/object"));
        const viaSdk = await errorOf(sdk.get("no/such/object"));
        expect(viaDirect.kind, what).toBe(kind);
        expect(viaDirect.message, what).toBe(viaSdk.message);
        expect(viaDirect.key, what).toBe("no/such/object");
        if (kind !== "not-found") {
          const putDirect = await errorOf(direct.put("no/such/object", Buffer.from("x")));
          expect(putDirect.kind, what).toBe(kind);
          expect(putDirect.message, what).toBe((await errorOf(sdk.put("no/such/object", Buffer.from("x")))).message);
        }
      } finally {
        await direct.close();
        await sdk.close();
      }
    }
  });

  it("gives up on an unreachable endpoint after maxAttempts, in the SDK path's words", async () => {
    const dead = { endpoint: "http://127.0.0.1:1", maxAttempts: 2 };
    const direct = open(dead);
    const sdk = open({ ...dead, direct: false });
    try {
      const viaDirect = await errorOf(direct.get("x"));
      expect(viaDirect.kind).toBe("unreachable");
      expect(viaDirect.message).toBe((await errorOf(sdk.get("x"))).message);
      expect(viaDirect.message).toMatch(/connection refused, 2 attempts/);
      expect((await errorOf(direct.put("x", Buffer.from("x")))).message).toBe((await errorOf(sdk.put("x", Buffer.from("x")))).message);
    } finally {
      await direct.close();
      await sdk.close();
    }
  });
});
