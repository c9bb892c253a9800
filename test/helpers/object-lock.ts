/**
 * Object-lock buckets for tests, through the independent `minio` client: create one with
 * S3 Object Lock, list every version and delete marker, read retentions, and act as the
 * backup node (the server's second user, test/helpers/rgw-server.ts) restricted by the
 * append-only bucket policy of docs/object-lock.md.
 */
import { randomBytes } from "node:crypto";
import * as Minio from "minio";
import { minioClient, testS3 } from "./s3-server.js";

export interface VersionItem {
  key: string;
  versionId: string;
  latest: boolean;
  deleteMarker: boolean;
  size: number;
  etag: string;
}

/** A fresh bucket with S3 Object Lock enabled (hence versioned). */
export async function makeLockedBucket(label: string): Promise<string> {
  const bucket = `pv-${label}-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`.toLowerCase().replace(/[^a-z0-9-]/g, "-");
  await minioClient().makeBucket(bucket, testS3().region, { ObjectLocking: true });
  return bucket;
}

interface MinioVersionItem {
  name?: string;
  versionId?: string;
  isLatest?: boolean;
  isDeleteMarker?: boolean;
  size?: number;
  etag?: string;
}

/** Every version and delete marker under `prefix`. */
export async function listVersions(bucket: string, prefix = "", client: Minio.Client = minioClient()): Promise<VersionItem[]> {
  const out: VersionItem[] = [];
  for await (const item of client.listObjects(bucket, prefix, true, { IncludeVersion: true }) as AsyncIterable<MinioVersionItem>) {
    if (item.name === undefined || item.versionId === undefined) continue;
    out.push({
      key: item.name,
      versionId: item.versionId,
      latest: item.isLatest === true,
      deleteMarker: item.isDeleteMarker === true,
      size: item.size ?? 0,
      etag: item.etag ?? "",
    });
  }
  return out;
}

/** Retain-until of a version (the current one without an id); null when it has none. */
export async function retentionOf(bucket: string, key: string, versionId?: string): Promise<{ mode: string; until: Date } | null> {
  try {
    const r = await minioClient().getObjectRetention(bucket, key, versionId === undefined ? undefined : { versionId });
    if (!r?.retainUntilDate) return null;
    return { mode: r.mode, until: new Date(r.retainUntilDate) };
  } catch (error) {
    if (/ObjectLockConfigurationNotFound|NoSuchObjectLockConfiguration/i.test(String((error as { code?: string }).code ?? error))) return null;
    throw error;
  }
}

export interface NodeCredentials {
  user: string;
  client: Minio.Client;
  /** Environment for the CLI acting as the backup node. */
  env: Record<string, string>;
}

/** The backup node's credentials, or null when the test server has no second user. */
export function nodeCredentials(): NodeCredentials | null {
  const s3 = testS3();
  if (s3.node === undefined) return null;
  const url = new URL(s3.endpoint);
  const client = new Minio.Client({
    endPoint: url.hostname,
    port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
    useSSL: url.protocol === "https:",
    accessKey: s3.node.accessKeyId,
    secretKey: s3.node.secretAccessKey,
    region: s3.region,
    pathStyle: true,
  });
  return {
    user: s3.node.user,
    client,
    env: { AWS_ACCESS_KEY_ID: s3.node.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.node.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint },
  };
}

/**
 * The append-only policies of docs/object-lock.md as bucket policies (RGW has no IAM
 * users of one account; the bucket owner is the trusted side and is granted everything
 * explicitly, since RGW does not let one user read another user's objects otherwise).
 */
export async function applyAppendOnlyPolicies(bucket: string, lockBucket: string, nodeUser: string): Promise<void> {
  const node = `arn:aws:iam:::user/${nodeUser}`;
  // the test user's uid (scripts/rgw.sh: ploopvault-test)
  const owner = `arn:aws:iam:::user/${process.env.PLOOPVAULT_TEST_S3_USER || "ploopvault-test"}`;
  const data = [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`];
  const repositoryPolicy = {
    Version: "2012-10-17",
    Statement: [
      { Sid: "Trusted", Effect: "Allow", Principal: { AWS: [owner] }, Action: ["s3:*"], Resource: data },
      {
        Sid: "NodeReadAndAppend",
        Effect: "Allow",
        Principal: { AWS: [node] },
        Action: [
          "s3:GetObject",
          "s3:GetObjectVersion",
          "s3:PutObject",
          "s3:GetObjectRetention",
          "s3:PutObjectRetention",
          "s3:ListBucket",
          "s3:ListBucketVersions",
          "s3:GetBucketObjectLockConfiguration",
          "s3:GetBucketVersioning",
        ],
        Resource: data,
      },
      {
        Sid: "NodeNeverDestroys",
        Effect: "Deny",
        Principal: { AWS: [node] },
        Action: [
          "s3:DeleteObject",
          "s3:DeleteObjectVersion",
          "s3:BypassGovernanceRetention",
          "s3:PutBucketObjectLockConfiguration",
          "s3:PutBucketVersioning",
          "s3:PutLifecycleConfiguration",
          "s3:PutBucketPolicy",
          "s3:DeleteBucketPolicy",
          "s3:DeleteBucket",
        ],
        Resource: data,
      },
    ],
  };
  const locks = [`arn:aws:s3:::${lockBucket}`, `arn:aws:s3:::${lockBucket}/*`];
  const lockPolicy = {
    Version: "2012-10-17",
    Statement: [
      { Sid: "Trusted", Effect: "Allow", Principal: { AWS: [owner] }, Action: ["s3:*"], Resource: locks },
      {
        Sid: "NodeLocks",
        Effect: "Allow",
        Principal: { AWS: [node] },
        Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketVersioning"],
        Resource: locks,
      },
    ],
  };
  await minioClient().setBucketPolicy(bucket, JSON.stringify(repositoryPolicy));
  await minioClient().setBucketPolicy(lockBucket, JSON.stringify(lockPolicy));
}
