/**
 * src/ops/config-keys.ts is what the commands' options allow in the config file: a run
 * loads only its own command (src/main.ts) but checks the config file against all of them.
 */
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { loadAllCommands } from "../../src/commands/all.js";
import { CONFIG_KEYS } from "../../src/ops/config-keys.js";
import { commandConfigKeys } from "../../src/ops/config.js";

describe("config keys table", () => {
  it("equals the config keys of the whole program's commands (after changing an option: npm run build && node dist/scripts/config-keys.js)", async () => {
    const program = new Command("ploopvault").version("x", "-V, --version");
    for (const command of await loadAllCommands()) program.addCommand(command);
    const actual = Object.fromEntries([...commandConfigKeys(program)].map(([name, keys]) => [name, [...keys].sort()]));
    expect(CONFIG_KEYS).toEqual(actual);
  });
});
