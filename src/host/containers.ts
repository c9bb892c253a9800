/**
 * Finding the containers to back up: `vzlist -a -H -o ctid,private,status` where vzlist
 * exists (it knows each container's private area and state), otherwise a scan of
 * <privateRoot>/<CTID>/root.hdd/DiskDescriptor.xml (docs/ploop.md 2.4).
 * Only ploop containers are returned (simfs ones have no DiskDescriptor.xml).
 */
import { runCommand } from "../util/exec.js";
import { readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { PloopvaultError } from "../errors.js";

export type ContainerStatus = "running" | "stopped" | "unknown";

export interface ContainerInfo {
  ct: string;
  /** Absolute private area, e.g. /vz/private/101. */
  privateDir: string;
  /** <privateDir>/root.hdd/DiskDescriptor.xml */
  descriptorPath: string;
  /** ve.conf in privateDir, else /etc/vz/conf/<ct>.conf, else null. */
  configPath: string | null;
  status: ContainerStatus;
}

export interface ContainerDiscoveryOptions {
  /** vzlist binary; default "vzlist". If it cannot be found, the private root is scanned. */
  vzlistBin?: string;
  /** Default /vz/private. */
  privateRoot?: string;
  /** Where vzctl keeps <ct>.conf; default /etc/vz/conf. */
  confDir?: string;
  log?: (line: string) => void;
}

export class ContainerNotFoundError extends PloopvaultError {}

const DEFAULT_PRIVATE_ROOT = "/vz/private";
const DEFAULT_CONF_DIR = "/etc/vz/conf";

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function descriptorOf(privateDir: string): string {
  return join(privateDir, "root.hdd", "DiskDescriptor.xml");
}

/** A CTID as vzctl accepts it (numeric on VZ6, name/UUID on VZ7): no path tricks. */
function isSafeCtid(ct: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(ct) && ct !== "." && ct !== "..";
}

async function configFor(ct: string, privateDir: string, confDir: string): Promise<string | null> {
  const own = join(privateDir, "ve.conf");
  if (await isFile(own)) return own;
  const global = join(confDir, `${ct}.conf`);
  return (await isFile(global)) ? global : null;
}

/** vzlist states: "mounted" has the ploop device open like a running container. */
function mapStatus(text: string): ContainerStatus {
  switch (text) {
    case "running":
    case "mounted":
      return "running";
    case "stopped":
    case "suspended":
      return "stopped";
    default:
      return "unknown";
  }
}

export interface VzlistRow {
  ct: string;
  privateDir: string;
  status: string;
}

/** Parse `vzlist -a -H -o ctid,private,status` output (whitespace separated, padded). */
export function parseVzlist(output: string): VzlistRow[] {
  const rows: VzlistRow[] = [];
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    // The private path is the middle column and may contain spaces: ct first, status last.
    const m = /^(\S+)\s+(.+?)\s+(\S+)$/.exec(line);
    if (m === null) throw new PloopvaultError(`vzlist: unexpected output line "${line.slice(0, 200)}"`);
    rows.push({ ct: m[1]!, privateDir: m[2]!, status: m[3]! });
  }
  return rows;
}

type VzlistResult = { ok: true; rows: VzlistRow[] } | { ok: false; why: string };

async function runVzlist(bin: string): Promise<VzlistResult> {
  const r = await runCommand(bin, ["-a", "-H", "-o", "ctid,private,status"]);
  if (r.failed) {
    if (r.spawnError !== null) return { ok: false, why: `${bin} not found` };
    const line = r.stderr.trim().split("\n").pop() ?? "";
    // vzlist exits 1 with "Container(s) not found" when there are none.
    if (/not found/i.test(line) && r.stdout.trim() === "") return { ok: true, rows: [] };
    throw new PloopvaultError(
      `${bin} -a -H -o ctid,private,status failed (${r.exitCode === null ? `killed by ${r.signal}` : `exit ${r.exitCode}`})${line ? `: ${line}` : ""}`,
    );
  }
  return { ok: true, rows: parseVzlist(r.stdout) };
}

async function fromRow(row: VzlistRow, confDir: string): Promise<ContainerInfo | null> {
  if (!isSafeCtid(row.ct) || row.privateDir === "-" || row.privateDir === "") return null;
  const privateDir = resolve(row.privateDir);
  const descriptorPath = descriptorOf(privateDir);
  if (!(await isFile(descriptorPath))) return null; // not a ploop container (simfs), or not on this node
  return { ct: row.ct, privateDir, descriptorPath, configPath: await configFor(row.ct, privateDir, confDir), status: mapStatus(row.status) };
}

async function scanPrivateRoot(privateRoot: string, confDir: string): Promise<ContainerInfo[]> {
  let names: string[];
  try {
    names = await readdir(privateRoot);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return [];
    throw new PloopvaultError(`cannot list ${privateRoot} (${code ?? String(error)})`, { cause: error });
  }
  const out: ContainerInfo[] = [];
  for (const ct of names) {
    if (!isSafeCtid(ct)) continue;
    const privateDir = join(privateRoot, ct);
    const descriptorPath = descriptorOf(privateDir);
    if (!(await isFile(descriptorPath))) continue;
    out.push({ ct, privateDir, descriptorPath, configPath: await configFor(ct, privateDir, confDir), status: "unknown" });
  }
  return out;
}

function sortCts(list: ContainerInfo[]): ContainerInfo[] {
  return list.sort((a, b) => a.ct.localeCompare(b.ct, "en", { numeric: true }));
}

/** Every ploop container on this host (vzlist, else a scan of the private root), sorted by CTID. */
export async function listContainers(options: ContainerDiscoveryOptions = {}): Promise<ContainerInfo[]> {
  const privateRoot = resolve(options.privateRoot ?? DEFAULT_PRIVATE_ROOT);
  const confDir = options.confDir ?? DEFAULT_CONF_DIR;
  const vz = await runVzlist(options.vzlistBin ?? "vzlist");
  if (!vz.ok) {
    options.log?.(`${vz.why}; scanning ${privateRoot}/*/root.hdd/DiskDescriptor.xml`);
    return sortCts(await scanPrivateRoot(privateRoot, confDir));
  }
  const out: ContainerInfo[] = [];
  for (const row of vz.rows) {
    const info = await fromRow(row, confDir);
    if (info !== null) out.push(info);
  }
  return sortCts(out);
}

/**
 * The named containers, in the order given (duplicates removed). A CTID vzlist does not
 * know falls back to <privateRoot>/<CTID>; one found nowhere is an error naming where we looked.
 */
export async function resolveContainers(
  ctids: readonly string[],
  options: ContainerDiscoveryOptions & {
    /** Report an unknown container here and go on with the others (default: throw). */
    onUnknown?: (ct: string, error: ContainerNotFoundError) => void;
  } = {},
): Promise<ContainerInfo[]> {
  const privateRoot = resolve(options.privateRoot ?? DEFAULT_PRIVATE_ROOT);
  const confDir = options.confDir ?? DEFAULT_CONF_DIR;
  const vzlistBin = options.vzlistBin ?? "vzlist";
  const vz = await runVzlist(vzlistBin);
  const result: ContainerInfo[] = [];
  const seen = new Set<string>();
  for (const ct of ctids) {
    if (seen.has(ct)) continue;
    seen.add(ct);
    try {
      result.push(await resolveOne(ct));
    } catch (error) {
      if (options.onUnknown === undefined || !(error instanceof ContainerNotFoundError)) throw error;
      options.onUnknown(ct, error);
    }
  }
  return result;

  async function resolveOne(ct: string): Promise<ContainerInfo> {
    if (!isSafeCtid(ct)) throw new ContainerNotFoundError(`invalid container id "${ct}"`);
    const row = vz.ok ? vz.rows.find((r) => r.ct === ct) : undefined;
    if (row !== undefined) {
      const info = await fromRow(row, confDir);
      if (info !== null) return info;
      if (row.privateDir !== "-" && row.privateDir !== "") {
        throw new ContainerNotFoundError(`container ${ct} has no ploop disk: ${descriptorOf(resolve(row.privateDir))} does not exist (simfs container?)`);
      }
    }
    const privateDir = join(privateRoot, ct);
    const descriptorPath = descriptorOf(privateDir);
    if (await isFile(descriptorPath)) {
      return {
        ct,
        privateDir,
        descriptorPath,
        configPath: await configFor(ct, privateDir, confDir),
        status: row === undefined ? "unknown" : mapStatus(row.status),
      };
    }
    const where = vz.ok ? `not listed by ${vzlistBin} and no ${descriptorPath}` : `${vz.why} and no ${descriptorPath}`;
    throw new ContainerNotFoundError(`unknown container ${ct}: ${where}`);
  }
}
