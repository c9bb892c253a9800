/**
 * The configuration file: defaults for command-line options, so a cron line can be just
 * `ploopvault backup --all -q`. Precedence: command-line flag > environment variable >
 * config file > built-in default.
 *
 * File: --config FILE, else env PLOOPVAULT_CONFIG, else /etc/ploopvault/ploopvault.conf
 * when it exists (an explicitly named file must exist; an empty name means "none").
 *
 * Format (no dependency; a subset of TOML/INI that both readers agree on):
 *
 *   # comment (also ';'), blank lines ignored
 *   repo = s3://backups/node1          keys are long option names without "--"
 *   endpoint = "http://10.0.0.5:9000"  values bare or "double-quoted" (\" \\ \n \t) or 'single'
 *   limit-upload = 20M                 trailing " # comment" allowed after a bare value
 *   progress = false                   switches: true/false (also yes/no, on/off, 1/0)
 *
 *   [backup]                           a section applies to that command only and
 *   parallel = 2                       overrides the top part for it
 *
 * A top-level key applies to every command that has that option and is ignored by the
 * others; an unknown key, a key in a section whose command lacks it, or a duplicate key
 * is an error (exit 2) naming the file and line, so typos do not silently do nothing.
 *
 * Secrets are never read from this file (it tends to end up world-readable, in backups of
 * /etc, in configuration management): keys such as password, aws-secret-access-key or
 * token are refused with an error saying where secrets go instead (environment,
 * --password-file, the AWS SDK's credential files, or the prompt). A password *file* name
 * (password-file) and a command that prints the password (password-command) are not
 * secrets and are allowed.
 */
import { readFile } from "node:fs/promises";
import type { Command, Option } from "commander";
import { UsageError } from "../errors.js";

export const DEFAULT_CONFIG_FILE = "/etc/ploopvault/ploopvault.conf";
export const CONFIG_ENV = "PLOOPVAULT_CONFIG";

/** Options that make sense only on a command line (one run), never as a standing default. */
const COMMAND_LINE_ONLY = new Set(["config", "help", "version", "json", "time", "disk", "name", "all", "target", "force", "dry-run", "ct", "note"]);

/** Names allowed although they contain a secret-looking word: they name files, not secrets. */
const NOT_SECRET = new Set(["password-file", "new-password-file", "password-command"]);
const SECRET = /(^|-)(password|passwd|passphrase|secret|token|credentials?)(-|$)|access-key|secret-key|api-key|private-key|session-key/;

export interface ConfigEntry {
  key: string;
  value: string;
  /** 1-based line number. */
  line: number;
  /** Command name of the [section], null for the top part. */
  section: string | null;
}

export interface ConfigFile {
  path: string;
  entries: ConfigEntry[];
  /** Every [section] header with its 1-based line (an empty section is still checked). */
  sections?: { name: string; line: number }[];
}

function normalizeKey(key: string): string {
  return key.trim().toLowerCase().replace(/_/g, "-");
}

function unquote(raw: string, where: string): string {
  const text = raw.trim();
  if (text.startsWith('"')) {
    let out = "";
    for (let i = 1; i < text.length; i++) {
      const ch = text[i]!;
      if (ch === "\\") {
        const next = text[++i];
        const map: Record<string, string> = { '"': '"', "\\": "\\", n: "\n", t: "\t", r: "\r" };
        if (next === undefined || map[next] === undefined) throw new UsageError(`${where}: bad escape "\\${next ?? ""}" in a quoted value`);
        out += map[next];
      } else if (ch === '"') {
        const rest = text.slice(i + 1).trim();
        if (rest !== "" && !rest.startsWith("#") && !rest.startsWith(";")) throw new UsageError(`${where}: unexpected text after the quoted value: ${rest}`);
        return out;
      } else {
        out += ch;
      }
    }
    throw new UsageError(`${where}: unterminated quoted value`);
  }
  if (text.startsWith("'")) {
    const end = text.indexOf("'", 1);
    if (end < 0) throw new UsageError(`${where}: unterminated quoted value`);
    const rest = text.slice(end + 1).trim();
    if (rest !== "" && !rest.startsWith("#") && !rest.startsWith(";")) throw new UsageError(`${where}: unexpected text after the quoted value: ${rest}`);
    return text.slice(1, end);
  }
  // A bare value ends at a comment that follows whitespace.
  return text.replace(/\s+[#;].*$/, "").trim();
}

export function parseConfig(text: string, path: string): ConfigFile {
  const entries: ConfigEntry[] = [];
  const sections: { name: string; line: number }[] = [];
  const seen = new Set<string>();
  let section: string | null = null;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const where = `config file ${path}, line ${i + 1}`;
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:[#;].*)?$/.exec(line);
    if (header) {
      section = header[1]!.toLowerCase();
      sections.push({ name: section, line: i + 1 });
      continue;
    }
    const eq = line.indexOf("=");
    if (eq <= 0) throw new UsageError(`${where}: expected "key = value" or "[command]", got: ${line}`);
    const key = normalizeKey(line.slice(0, eq));
    if (!/^[a-z0-9][a-z0-9-]*$/.test(key)) throw new UsageError(`${where}: invalid key "${line.slice(0, eq).trim()}"`);
    if (SECRET.test(key) && !NOT_SECRET.has(key)) {
      throw new UsageError(
        `${where}: "${key}" looks like a secret, and secrets are never read from the config file; ` +
          "use the environment (PLOOPVAULT_PASSWORD, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE), a file (--password-file, ~/.aws/credentials) or the prompt",
      );
    }
    const id = `${section ?? ""}\u0000${key}`;
    if (seen.has(id)) throw new UsageError(`${where}: "${key}" is set twice${section === null ? "" : ` in [${section}]`}`);
    seen.add(id);
    entries.push({ key, value: unquote(line.slice(eq + 1), where), line: i + 1, section });
  }
  return { path, entries, sections };
}

/**
 * Read the config file: `path` as given by --config / PLOOPVAULT_CONFIG (explicit: must
 * exist), else the default file if present. "" = no file.
 */
export async function loadConfig(path: string | undefined): Promise<ConfigFile | null> {
  if (path === "") return null;
  const explicit = path !== undefined;
  const file = path ?? DEFAULT_CONFIG_FILE;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    if (!explicit && code === "ENOENT") return null;
    throw new UsageError(`config file ${file}: cannot read (${code})`);
  }
  return parseConfig(text, file);
}

/** The config-file key of an option: its long name without "--" (and without "no-" for --no-X). */
export function configKey(option: Option): string | null {
  if (option.long === undefined) return null;
  const name = option.long.replace(/^--/, "");
  return option.negate ? name.replace(/^no-/, "") : name;
}

function parseSwitch(value: string, where: string): boolean {
  const v = value.toLowerCase();
  if (["true", "yes", "on", "1"].includes(v)) return true;
  if (["false", "no", "off", "0"].includes(v)) return false;
  throw new UsageError(`${where}: expected true or false, got "${value}"`);
}

export interface AppliedSetting {
  key: string;
  attribute: string;
  line: number;
}

/** Config keys per top-level command (its subcommands' included; "" holds the program's own options). */
export type CommandConfigKeys = ReadonlyMap<string, ReadonlySet<string>>;

/** The config keys `program`'s options allow, per top-level command (src/ops/config-keys.ts holds them for the whole program). */
export function commandConfigKeys(program: Command): Map<string, Set<string>> {
  const optionsOf = (c: Command): Option[] => [...c.options, ...c.commands.flatMap(optionsOf)];
  const keysOf = (options: readonly Option[]): Set<string> =>
    new Set(options.map(configKey).filter((key): key is string => key !== null && !COMMAND_LINE_ONLY.has(key)));
  const out = new Map<string, Set<string>>([["", keysOf(program.options)]]);
  for (const c of program.commands) out.set(c.name(), keysOf(optionsOf(c)));
  return out;
}

/**
 * Fill `command`'s options that neither the command line nor the environment set, from
 * `config`. `allKeys` (default: from `program`'s commands) tells unknown keys and sections
 * from those meant for another command: a run loads only its own command (src/main.ts),
 * so the session passes the whole program's table (src/ops/config-keys.ts). Returns what
 * was applied (for -v).
 */
export function applyConfig(program: Command, command: Command, config: ConfigFile, allKeys: CommandConfigKeys = commandConfigKeys(program)): AppliedSetting[] {
  const commands = new Map([...allKeys].filter(([name]) => name !== ""));
  const known = new Set([...allKeys.values()].flatMap((keys) => [...keys]));
  // A section is named after a top-level command ([key] also covers "key add").
  let top = command;
  while (top.parent !== null && top.parent !== program) top = top.parent;
  const sectionName = top.name();
  const own = new Map<string, Option>();
  for (const o of command.options) {
    const key = configKey(o);
    if (key !== null && !COMMAND_LINE_ONLY.has(key)) own.set(key, o);
  }

  // The top part first, then the command's section overrides it.
  const chosen = new Map<string, ConfigEntry>();
  // a misspelled section ([snapshot]) must not go unnoticed because it is still empty
  for (const section of config.sections ?? []) {
    if (!commands.has(section.name)) {
      throw new UsageError(
        `config file ${config.path}, line ${section.line}: unknown section [${section.name}] (sections are command names: ${[...commands.keys()].join(", ")})`,
      );
    }
  }
  for (const entry of config.entries) {
    const where = `config file ${config.path}, line ${entry.line}`;
    if (entry.section !== null && !commands.has(entry.section)) {
      throw new UsageError(`${where}: unknown section [${entry.section}] (sections are command names: ${[...commands.keys()].join(", ")})`);
    }
    if (COMMAND_LINE_ONLY.has(entry.key)) throw new UsageError(`${where}: "${entry.key}" can only be given on the command line`);
    if (!known.has(entry.key)) throw new UsageError(`${where}: unknown key "${entry.key}"`);
    if (entry.section !== null) {
      if (!commands.get(entry.section)!.has(entry.key)) throw new UsageError(`${where}: command ${entry.section} has no option --${entry.key}`);
    }
  }
  for (const entry of config.entries) if (entry.section === null && own.has(entry.key)) chosen.set(entry.key, entry);
  for (const entry of config.entries) if (entry.section === sectionName && own.has(entry.key)) chosen.set(entry.key, entry);

  const applied: AppliedSetting[] = [];
  for (const [key, entry] of chosen) {
    const option = own.get(key)!;
    const attribute = option.attributeName();
    const source = command.getOptionValueSource(attribute);
    if (source !== undefined && source !== "default") continue; // flag or environment wins
    const where = `config file ${config.path}, line ${entry.line} (${key})`;
    let value: unknown;
    if (option.negate || option.isBoolean()) {
      value = parseSwitch(entry.value, where);
    } else if (option.parseArg) {
      try {
        value = option.parseArg(entry.value, option.defaultValue as unknown);
      } catch (error) {
        throw new UsageError(`${where}: ${error instanceof Error ? error.message.replace(/^error: /, "") : String(error)}`);
      }
    } else {
      value = entry.value;
    }
    command.setOptionValueWithSource(attribute, value, "config");
    applied.push({ key, attribute, line: entry.line });
  }
  return applied;
}
