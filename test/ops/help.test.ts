/** --version, and --help with examples for the program and every command. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { PROJECT_ROOT } from "../helpers/s3-server.js";

describe("help and version", () => {
  it("prints the version", async () => {
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string };
    for (const flag of ["--version", "-V"]) {
      const r = await runCli([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`ploopvault ${pkg.version} (Node.js ${process.version}, ${process.platform}/${process.arch})\n`);
    }
  });

  it("has examples, configuration, environment and exit codes in the program help", async () => {
    const r = await runCli(["--help"]);
    expect(r.code).toBe(0);
    for (const text of ["Examples:", "ploopvault backup", "/etc/ploopvault/ploopvault.conf", "PLOOPVAULT_CONFIG", "Exit codes:", "docs/operations.md"])
      expect(r.stdout).toContain(text);
  });

  it("has examples in every command's help", async () => {
    const help = (await runCli(["--help"])).stdout;
    const section = help.slice(help.indexOf("Commands:"), help.indexOf("\n\n", help.indexOf("Commands:")));
    const commands = [...section.matchAll(/^ {2}([a-z-]+) /gm)].map((m) => m[1]!).filter((c) => c !== "help");
    expect(commands).toEqual(
      expect.arrayContaining(["init", "backup", "snapshots", "restore", "check", "serve-nbd", "forget", "protect", "unprotect", "stats", "diff", "ls", "dump"]),
    );
    const helps = await Promise.all(commands.map((command) => runCli([command, "--help"])));
    commands.forEach((command, i) => {
      expect(helps[i]!.code, command).toBe(0);
      expect(helps[i]!.stdout, command).toContain("Examples:");
      expect(helps[i]!.stdout, command).toContain(`ploopvault ${command}`);
    });
    // subcommands (key list/add/remove/passwd) too
    for (const sub of ["list", "add", "remove", "passwd"]) {
      const r = await runCli(["key", sub, "--help"]);
      expect(r.code, `key ${sub}`).toBe(0);
      expect(r.stdout, `key ${sub}`).toContain("Examples:\n  ");
      expect(r.stdout, `key ${sub}`).toContain(`ploopvault key ${sub}`);
    }
    const backup = helps[commands.indexOf("backup")]!.stdout;
    for (const option of [
      "--limit-read",
      "--limit-upload",
      "--metrics-file",
      "--hook-success",
      "--hook-failure",
      "--log-file",
      "--log-format",
      "--config",
      "--no-progress",
      "--no-ionice",
    ]) {
      expect(backup).toContain(option);
    }
  });
});
