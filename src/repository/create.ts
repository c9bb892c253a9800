/**
 * `init`: create a repository without ever replacing one. The config is looked up first;
 * the server is probed for conditional writes (a server that ignores If-None-Match would
 * let a second init overwrite the config: refused, src/repository/conditional-writes.ts);
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
import { Repository, type InitOptions } from "./repository.js";
import { RepositoryTrust } from "./trust.js";

export async function createRepository(store: ObjectStore, config: RepositoryConfig, options: InitOptions & Omit<ConditionalWritesOptions, "purpose">): Promise<Repository> {
  await store.ensureContainer?.();
  if ((await store.stat(CONFIG_KEY)) !== null) throw new PloopvaultError(`a repository already exists at ${store.location}`);
  await probeOrRefuse(store, { ...options, purpose: "init" });
  const repo = await Repository.init(store, config, options);
  await rememberConditionalWrites(repo.config.id, options);
  try {
    await new RepositoryTrust(options.stateDir).recordCreated(options.server, repo);
  } catch (error) {
    options.warn(`${errorLine(error)}: this host will not notice if someone replaces the repository's config`);
  }
  return repo;
}
