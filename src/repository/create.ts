/**
 * `init`: create a repository without ever replacing one. The config is looked up first;
 * the server is probed for conditional writes (a server that ignores If-None-Match would
 * let a second init overwrite the config: refused, src/repository/conditional-writes.ts;
 * an object-lock repository's buckets are created first and its lock bucket is probed);
 * then the config is created with a conditional create. Afterwards this host records
 * the good probe and what it created (src/repository/trust.ts), so a later downgrade of
 * this repository is refused. A record that cannot be written is a warning here: the
 * repository exists by then.
 */
import { errorLine, PloopvaultError } from "../errors.js";
import type { ObjectStore } from "../uploader/store.js";
import type { RepositoryConfig } from "./config.js";
import { probeOrRefuse, rememberConditionalWrites, type ConditionalWritesOptions } from "./conditional-writes.js";
import { CONFIG_KEY } from "./layout.js";
import { lockBucketStore, prepareObjectLockBuckets } from "./object-lock.js";
import { Repository, type InitOptions } from "./repository.js";
import { RepositoryTrust } from "./trust.js";

export async function createRepository(
  store: ObjectStore,
  config: RepositoryConfig,
  options: InitOptions & Omit<ConditionalWritesOptions, "purpose">,
): Promise<Repository> {
  const lock = config.objectLock;
  if (lock === undefined) await store.ensureContainer?.();
  else await prepareObjectLockBuckets(store, lock.lockBucket);
  if ((await store.stat(CONFIG_KEY)) !== null) throw new PloopvaultError(`a repository already exists at ${store.location}`);
  // object lock: the lock objects live in the unversioned lock bucket, so that is where
  // conditional writes must work (a versioned bucket may ignore them: Repository.init)
  const probed = lock === undefined ? store : lockBucketStore(store, lock.lockBucket);
  try {
    await probeOrRefuse(probed, { ...options, purpose: "init" });
  } finally {
    if (probed !== store) await probed.close();
  }
  const repo = await Repository.init(store, config, options);
  await rememberConditionalWrites(repo.config.id, options);
  try {
    await new RepositoryTrust(options.stateDir).recordCreated(options.server, repo);
  } catch (error) {
    options.warn(`${errorLine(error)}: this host will not notice if someone replaces the repository's config`);
  }
  return repo;
}
