/**
 * Where a repository password comes from: `--password-file FILE` (env
 * PLOOPVAULT_PASSWORD_FILE) or `--password-command CMD` (env PLOOPVAULT_PASSWORD_COMMAND:
 * its stdout, e.g. from a secret store; restic's option), else env PLOOPVAULT_PASSWORD,
 * else a prompt without echo when stdin is a terminal. Without any of them a command that needs the password fails
 * with a usage error (exit 2) instead of hanging. New passwords (`init --encrypt`,
 * `key add`, `key passwd`) come from `--new-password-file FILE`, env
 * PLOOPVAULT_NEW_PASSWORD, or a prompt asked twice.
 *
 * Passwords are never written anywhere: not to logs, not to error messages.
 */
import { execFile } from "node:child_process";
import { open } from "node:fs/promises";
import { PloopvaultError, UsageError } from "../errors.js";
import { logger } from "../ops/log.js";

export const PASSWORD_ENV = "PLOOPVAULT_PASSWORD";
export const PASSWORD_FILE_ENV = "PLOOPVAULT_PASSWORD_FILE";
export const PASSWORD_COMMAND_ENV = "PLOOPVAULT_PASSWORD_COMMAND";
export const NEW_PASSWORD_ENV = "PLOOPVAULT_NEW_PASSWORD";

export interface PasswordProvider {
  /** True when a password was given (file or environment), not merely promptable. */
  readonly given: boolean;
  /** Where it comes from, for messages ("--password-file /root/pw", "PLOOPVAULT_PASSWORD"). */
  readonly source: string;
  /** The password; `what` says what it is for ("repository /srv/backup is encrypted"). */
  get(what: string): Promise<string>;
}

const HOW = `set ${PASSWORD_ENV}, use --password-file FILE or --password-command CMD, or run on a terminal`;

/**
 * Read a password file: its content without one trailing newline. A file that group or
 * others can read gets a warning (the password opens every backup): chmod 600 it.
 */
export async function readPasswordFile(path: string, option: string, warn: (line: string) => void = (line) => logger.warn(line)): Promise<string> {
  let text: string;
  let mode: number;
  try {
    const fh = await open(path, "r");
    try {
      mode = (await fh.stat()).mode;
      text = await fh.readFile("utf8");
    } finally {
      await fh.close().catch(() => undefined);
    }
  } catch (error) {
    throw new UsageError(`${option} ${path}: cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  if ((mode & 0o044) !== 0) {
    warn(
      `${option} ${path} is readable by ${(mode & 0o004) !== 0 ? "everyone" : "its group"} (mode ${(mode & 0o777).toString(8).padStart(4, "0")}): anyone who can read it can open the repository; chmod 600 ${path}`,
    );
  }
  const password = text.replace(/\r?\n$/, "");
  // an empty file would otherwise read as a wrong password (exit 5) and send people hunting
  if (password === "") throw new UsageError(`${option} ${path}: the file is empty (it must hold the password)`);
  return password;
}

/** Run a password command (/bin/sh -c CMD): its stdout without one trailing newline. */
export function runPasswordCommand(command: string, option: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("/bin/sh", ["-c", command], { encoding: "utf8", maxBuffer: 1 << 20, timeout: 120_000 }, (error, stdout, stderr) => {
      if (error !== null) {
        const why = error.killed ? "timed out after 120 s" : `exited with ${error.code ?? "an error"}`;
        const said = stderr.trim().split("\n")[0] ?? "";
        reject(new PloopvaultError(`${option} "${command}": ${why}${said === "" ? "" : `: ${said}`}`));
        return;
      }
      const password = stdout.replace(/\r?\n$/, "");
      if (password === "") reject(new UsageError(`${option} "${command}": printed no password`));
      else resolve(password);
    });
  });
}

export function canPrompt(): boolean {
  return process.stdin.isTTY === true;
}

/** Where a password comes from: the option and environment variables (the defaults, or copy's source's). */
export interface PasswordSources {
  option: string;
  env: string;
  fileEnv: string;
}

export const DEFAULT_PASSWORD_SOURCES: PasswordSources = { option: "--password-file", env: PASSWORD_ENV, fileEnv: PASSWORD_FILE_ENV };

/** The password of an existing repository. `origin` says where the password file option came from. */
export function passwordProvider(
  options: { passwordFile?: string | undefined; passwordCommand?: string | undefined; passwordOrigin?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
  sources: PasswordSources = DEFAULT_PASSWORD_SOURCES,
): PasswordProvider {
  const own = sources === DEFAULT_PASSWORD_SOURCES;
  const file = options.passwordFile ?? (env[sources.fileEnv] || undefined);
  const command = options.passwordCommand ?? (own ? env[PASSWORD_COMMAND_ENV] || undefined : undefined);
  const fromEnv = env[sources.env];
  const how = own ? HOW : `set ${sources.env}, use ${sources.option} FILE, or run on a terminal`;
  if (file !== undefined && command !== undefined) throw new UsageError("give either --password-file or --password-command, not both");
  if (file !== undefined)
    return { given: true, source: options.passwordOrigin ?? `${sources.option} ${file}`, get: () => readPasswordFile(file, sources.option) };
  if (command !== undefined)
    return { given: true, source: options.passwordOrigin ?? "--password-command", get: () => runPasswordCommand(command, "--password-command") };
  if (fromEnv !== undefined && fromEnv !== "") return { given: true, source: sources.env, get: async () => fromEnv };
  return {
    given: false,
    source: "prompt",
    async get(what) {
      if (!canPrompt()) throw new UsageError(`${what}: no password given (${how})`);
      return promptHidden(`${what}. Password: `);
    },
  };
}

/** A new password (init --encrypt, key add/passwd): asked twice on a terminal; never empty. */
export async function newPassword(
  options: { file?: string | undefined; option: string; envName: string },
  what: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  let password: string;
  const fromEnv = env[options.envName];
  if (options.file !== undefined) password = await readPasswordFile(options.file, options.option);
  else if (fromEnv !== undefined && fromEnv !== "") password = fromEnv;
  else if (canPrompt()) {
    password = await promptHidden(`${what}. New password: `);
    const again = await promptHidden("Repeat the new password: ");
    if (again !== password) throw new UsageError("the two passwords do not match");
  } else {
    throw new UsageError(`${what}: no new password given (set ${options.envName}, use ${options.option} FILE, or run on a terminal)`);
  }
  if (password === "") throw new UsageError("the new password is empty");
  return password;
}

/** Read one line from the terminal with echo off (raw mode); the prompt goes to stderr. */
export function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  // Echo off before the prompt appears, so nothing typed after it is ever echoed.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  return new Promise<string>((resolve, reject) => {
    let chars: string[] = [];
    const finish = (): void => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
    };
    const onData = (data: Buffer | string): void => {
      for (const ch of typeof data === "string" ? data : data.toString("utf8")) {
        if (ch === "\r" || ch === "\n") {
          finish();
          resolve(chars.join(""));
          return;
        }
        if (ch === "\u0003" || (ch === "\u0004" && chars.length === 0)) {
          finish();
          reject(new PloopvaultError("password prompt interrupted", { exitCode: 130 }));
          return;
        }
        if (ch === "\u007f" || ch === "\b") chars.pop();
        else if (ch === "\u0015") chars = [];
        else if (ch >= " ") chars.push(ch);
      }
    };
    stdin.on("data", onData);
    stdin.resume();
  });
}
