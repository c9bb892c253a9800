/**
 * Which backups to keep: restic's `forget` policy, applied per group (container + host).
 *
 * In a group, backups are taken newest first. keep-last N keeps the N newest; keep-hourly
 * / daily / weekly / monthly / yearly N keep the newest backup of each of the N most
 * recent hours / days / ISO weeks / months / years that have a backup; when a rule still
 * has counts left at the group's oldest backup, that one is kept too (restic >= 0.14:
 * the longest history the counts allow). keep-within D keeps every backup less than D
 * older than the group's newest backup (not "now": a host that stopped backing up keeps
 * its last backups). A backup kept by any rule is kept. Buckets use UTC, so every node
 * in a shared repository and every time zone agree on them.
 */

export interface KeepPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  withinMs?: number;
}

export interface BackupInfo {
  ct: string;
  id: string;
  host: string;
  time: Date;
}

export interface KeptBackup extends BackupInfo {
  reasons: string[];
}

export interface GroupPlan {
  ct: string;
  host: string;
  keep: KeptBackup[];
  forget: BackupInfo[];
}

export function policyIsEmpty(p: KeepPolicy): boolean {
  return !(p.last || p.hourly || p.daily || p.weekly || p.monthly || p.yearly || p.withinMs);
}

const pad = (n: number, w = 2): string => String(n).padStart(w, "0");

function isoWeek(d: Date): string {
  // ISO 8601 week: the week with the year's first Thursday is week 1 (UTC)
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((t.getTime() - yearStart) / 86_400_000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${pad(week)}`;
}

type Bucker = (d: Date, nr: number) => string;

const BUCKETS: { name: keyof KeepPolicy; reason: string; bucket: Bucker }[] = [
  { name: "last", reason: "last", bucket: (_d, nr) => `#${nr}` },
  { name: "hourly", reason: "hourly", bucket: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}` },
  { name: "daily", reason: "daily", bucket: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}` },
  { name: "weekly", reason: "weekly", bucket: isoWeek },
  { name: "monthly", reason: "monthly", bucket: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}` },
  { name: "yearly", reason: "yearly", bucket: (d) => String(d.getUTCFullYear()) },
];

function newestFirst(a: BackupInfo, b: BackupInfo): number {
  const d = b.time.getTime() - a.time.getTime();
  return d !== 0 ? d : a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** Apply the policy to one group's backups. */
export function applyPolicy(backups: readonly BackupInfo[], policy: KeepPolicy, now: Date = new Date()): { keep: KeptBackup[]; forget: BackupInfo[] } {
  const list = [...backups].sort(newestFirst);
  if (list.length === 0) return { keep: [], forget: [] };
  if (policyIsEmpty(policy)) throw new Error("internal error: empty keep policy");
  const rules = BUCKETS.filter((b) => (policy[b.name] ?? 0) > 0).map((b) => ({ ...b, count: policy[b.name]!, last: undefined as string | undefined }));
  // the newest backup that is not in the future (restic: a wrong clock must not hide history)
  const latest = list.find((b) => b.time.getTime() <= now.getTime())?.time ?? list[list.length - 1]!.time;
  const keep: KeptBackup[] = [];
  const forget: BackupInfo[] = [];
  list.forEach((b, nr) => {
    const reasons: string[] = [];
    if (policy.withinMs !== undefined && policy.withinMs > 0 && b.time.getTime() > latest.getTime() - policy.withinMs) reasons.push("within");
    for (const rule of rules) {
      if (rule.count <= 0) continue;
      const value = rule.bucket(b.time, nr);
      if (value !== rule.last || nr === list.length - 1) {
        rule.last = value;
        rule.count--;
        reasons.push(rule.reason);
      }
    }
    if (reasons.length > 0) keep.push({ ...b, reasons });
    else forget.push(b);
  });
  return { keep, forget };
}

/** Group by container and host, apply the policy to each group. */
export function planForget(backups: readonly BackupInfo[], policy: KeepPolicy, now: Date = new Date()): GroupPlan[] {
  const groups = new Map<string, BackupInfo[]>();
  for (const b of backups) {
    const key = JSON.stringify([b.ct, b.host]);
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = []));
    g.push(b);
  }
  const plans: GroupPlan[] = [];
  for (const [key, list] of groups) {
    const [ct, host] = JSON.parse(key) as [string, string];
    plans.push({ ct, host, ...applyPolicy(list, policy, now) });
  }
  return plans.sort((a, b) => (a.ct === b.ct ? (a.host < b.host ? -1 : a.host > b.host ? 1 : 0) : a.ct < b.ct ? -1 : 1));
}
