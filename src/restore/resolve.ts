/**
 * BACKUP arguments (restore, ls, dump, serve-nbd...):
 *
 *   ID | unique ID prefix          one backup
 *   CT | CT:latest                 the newest backup of a container
 *   CT/ID | CT/ID-prefix           one backup of a container
 *   HOST/CT | HOST/CT:latest       the newest backup of a container made on HOST
 *
 * Several nodes share a repository and container ids repeat across them: a "newest
 * backup of CT" that exists on several hosts is refused (naming the hosts) unless the
 * host is given, in the argument or as `--host` (a filter for every form).
 */
import { PloopvaultError, UsageError } from "../errors.js";
import type { ManifestMetadata } from "../manifest/format.js";
import { validateName } from "../repository/layout.js";
import type { BackupRef, Repository } from "../repository/repository.js";

export interface ResolveOptions {
  /** Only backups made on this host. */
  host?: string;
  /** A backup's metadata (through the manifest cache); required for host checks. */
  metadata?: (ref: BackupRef) => Promise<ManifestMetadata>;
  /**
   * false: only forms naming one backup (ID, prefix, CT/ID) are accepted; "the newest
   * backup of CT" is refused (commands that remove things: forget).
   */
  allowLatest?: boolean;
}

/** Backup ids start with their time, e.g. "20261123T201420Z-3fa9c2d1"; prefixes must be this long. */
const MIN_PREFIX = 4;

export async function resolveBackup(repo: Repository, spec: string, options: ResolveOptions = {}): Promise<BackupRef> {
  const where = `in ${repo.location}${options.host === undefined ? "" : ` from host ${options.host}`}`;
  const hostOf = async (ref: BackupRef): Promise<string> => {
    if (options.metadata === undefined) throw new Error("internal error: resolveBackup needs metadata() to check hosts");
    return (await options.metadata(ref)).host;
  };
  const onHost = async (refs: readonly BackupRef[], host: string | undefined): Promise<BackupRef[]> => {
    if (host === undefined) return [...refs];
    const out: BackupRef[] = [];
    for (const ref of refs) if ((await hostOf(ref)) === host) out.push(ref);
    return out;
  };
  /** The newest backup of `ct` (on `host`), refusing a container id several hosts use. */
  const latest = async (ct: string, host: string | undefined): Promise<BackupRef> => {
    if (options.allowLatest === false) {
      throw new UsageError(
        `"${spec}" means the newest backup of container ${ct}: give the backup's id (or a unique prefix, or CT/ID) as "ploopvault snapshots --ct ${ct}" shows it`,
      );
    }
    const all = await repo.listBackups(ct);
    if (all.length === 0) throw new PloopvaultError(`container ${ct} has no backups in ${repo.location}`);
    const refs = await onHost(all, host);
    if (refs.length === 0) throw new PloopvaultError(`container ${ct} has no backups from host ${host} in ${repo.location}`);
    if (host === undefined && options.metadata !== undefined) {
      const hosts = [...new Set(await Promise.all(refs.map(hostOf)))].sort();
      if (hosts.length > 1) {
        throw new PloopvaultError(
          `container ${ct} has backups from several hosts (${hosts.join(", ")}) in ${repo.location}: say which, e.g. ${hosts[0]}/${ct}:latest or --host ${hosts[0]}`,
        );
      }
    }
    return refs[refs.length - 1]!;
  };
  /** A backup id or a unique prefix of one, among `refs`. */
  const byId = (refs: readonly BackupRef[], id: string): BackupRef[] => {
    const exact = refs.filter((r) => r.id === id);
    if (exact.length > 0 || id.length < MIN_PREFIX) return exact;
    return refs.filter((r) => r.id.startsWith(id));
  };
  const one = (found: readonly BackupRef[], what: string): BackupRef => {
    if (found.length === 1) return found[0]!;
    if (found.length === 0) throw new PloopvaultError(`backup ${what} not found ${where}`);
    throw new PloopvaultError(
      `backup id ${what} is ambiguous ${where} (${found
        .slice(0, 4)
        .map((r) => `${r.ct}/${r.id}`)
        .join(", ")}${found.length > 4 ? ", ..." : ""}): use CT/ID or a longer prefix`,
    );
  };

  const slash = spec.indexOf("/");
  if (slash > 0) {
    const left = spec.slice(0, slash);
    const right = spec.slice(slash + 1);
    const latestMatch = /^(.+):latest$/.exec(right);
    if (latestMatch) return latest(validateName("container id", latestMatch[1]!), hostFilter(left, options.host));
    const ct = validateName("container id", left);
    const ofCt = await onHost(await repo.listBackups(ct), options.host);
    const found = byId(ofCt, validateName("backup id", right));
    if (found.length > 0) return one(found, spec);
    // HOST/CT: the newest backup of container `right` made on host `left`
    const asCt = await repo.listBackups(right);
    if (asCt.length > 0 && options.metadata !== undefined) return latest(right, hostFilter(left, options.host));
    return one(found, spec);
  }
  const latestMatch = /^(.+):latest$/.exec(spec);
  const ctOrId = validateName("backup id", latestMatch ? latestMatch[1]! : spec);
  const ofCt = await repo.listBackups(ctOrId);
  if (ofCt.length > 0 && (latestMatch || !ofCt.some((r) => r.id === ctOrId))) return latest(ctOrId, options.host);
  if (latestMatch) throw new PloopvaultError(`container ${ctOrId} has no backups in ${repo.location}`);
  const found = byId(await onHost(await repo.listBackups(), options.host), ctOrId);
  if (found.length === 0) throw new PloopvaultError(`no backup or container "${spec}" ${where}`);
  return one(found, spec);
}

/** HOST given in the argument and by --host must agree. */
function hostFilter(fromSpec: string, fromOption: string | undefined): string {
  if (fromOption !== undefined && fromOption !== fromSpec)
    throw new PloopvaultError(`the backup reference names host ${fromSpec}, but --host says ${fromOption}`);
  return fromSpec;
}

/** Several BACKUP arguments, each resolved as resolveBackup does; a backup named twice counts once. */
export async function resolveBackups(repo: Repository, specs: readonly string[], options: ResolveOptions = {}): Promise<BackupRef[]> {
  const out = new Map<string, BackupRef>();
  for (const spec of specs) {
    const ref = await resolveBackup(repo, spec, options);
    out.set(`${ref.ct}/${ref.id}`, ref);
  }
  return [...out.values()];
}
