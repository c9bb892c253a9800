/**
 * Regenerates src/ops/config-keys.ts (the config file's keys per command) from the
 * commands' options, after an option was added or renamed:
 *   npm run build && node dist/scripts/config-keys.js && npm run build
 * test/ops/config-keys.test.ts fails while the table is stale.
 */
import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { loadAllCommands } from "../src/commands/all.js";
import { commandConfigKeys } from "../src/ops/config.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const table = join(root, "src/ops/config-keys.ts");
const program = new Command("ploopvault").version("x", "-V, --version");
for (const command of await loadAllCommands()) program.addCommand(command);
const keys = Object.fromEntries([...commandConfigKeys(program)].map(([name, names]) => [name, [...names].sort()]));
const source = await readFile(table, "utf8");
const head = source.slice(0, source.indexOf("export const CONFIG_KEYS"));
const lines = Object.entries(keys).map(
  ([name, names]) => `  ${JSON.stringify(name)}: [${names.length === 0 ? "" : `\n${names.map((n) => `    ${JSON.stringify(n)},`).join("\n")}\n  `}],`,
);
await writeFile(table, `${head}export const CONFIG_KEYS: Readonly<Record<string, readonly string[]>> = {\n${lines.join("\n")}\n};\n`);
// in the repository's own format (the linter checks it)
spawnSync(join(root, "node_modules/.bin/biome"), ["format", "--write", table], { stdio: "inherit" });
console.log(`wrote ${table}`);
