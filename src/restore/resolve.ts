/**
 * BACKUP arguments: a backup id, "CT" or "CT:latest" (newest backup of a container),
 * or "CT/ID".
 */
import { PloopvaultError } from "../errors.js";
import { validateName } from "../repository/layout.js";
import type { BackupRef, Repository } from "../repository/repository.js";

export async function resolveBackup(repo: Repository, spec: string): Promise<BackupRef> {
  const slash = spec.indexOf("/");
  if (slash > 0) {
    const ct = validateName("container id", spec.slice(0, slash));
    const id = validateName("backup id", spec.slice(slash + 1));
    const found = (await repo.listBackups(ct)).find((r) => r.id === id);
    if (!found) throw new PloopvaultError(`backup ${spec} not found in ${repo.location}`);
    return found;
  }
  const latest = /^(.+):latest$/.exec(spec);
  const ctOrId = validateName("backup id", latest ? latest[1]! : spec);
  const ofCt = await repo.listBackups(ctOrId);
  if (ofCt.length > 0 && (latest || !ofCt.some((r) => r.id === ctOrId))) return ofCt[ofCt.length - 1]!;
  if (latest) throw new PloopvaultError(`container ${ctOrId} has no backups in ${repo.location}`);
  const byId = (await repo.listBackups()).filter((r) => r.id === ctOrId);
  if (byId.length === 1) return byId[0]!;
  if (byId.length > 1) throw new PloopvaultError(`backup id ${spec} is ambiguous in ${repo.location}: use CT/ID`);
  throw new PloopvaultError(`no backup or container "${spec}" in ${repo.location}`);
}
