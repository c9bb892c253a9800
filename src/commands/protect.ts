import { Command } from "commander";
import { protectBackup, unprotectBackup } from "../prune/protection.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { resolveBackups } from "../restore/resolve.js";
import { addCommonOptions, openRepository, Output, type GlobalOptions } from "./common.js";

interface ProtectOptions extends GlobalOptions {
  host?: string;
}

/** `protect` and `unprotect`: the same arguments, opposite effects. */
function protectionCommand(name: "protect" | "unprotect"): Command {
  const protect = name === "protect";
  return addCommonOptions(new Command(name))
    .description(protect ? "protect backups: prune and forget never remove them" : "remove the protection of backups (prune may remove them again)")
    .argument("<backup...>", "backup ids (or unique prefixes), CT/ID, CT:latest or HOST/CT:latest")
    .option("--host <name>", "only look among backups made on this host")
    .addHelpText(
      "after",
      protect
        ? `
Examples:
  # keep the backup taken before an upgrade, whatever the prune policy says
  ploopvault protect --repo s3://backups/node1 101:latest
  ploopvault protect --repo /srv/backup 20250302T0230 node2/101:latest
  ploopvault snapshots --repo /srv/backup --ct 101     # P marks protected backups
`
        : `
Examples:
  ploopvault unprotect --repo s3://backups/node1 101/20250302T023004Z-8f2a91c3
`,
    )
    .action(async (specs: string[], options: ProtectOptions) => {
      const out = new Output(options);
      const repo = await openRepository(options);
      try {
        const cache = ManifestCache.forRepository(repo, options.stateDir);
        const refs = await resolveBackups(repo, specs, { metadata: (r) => cache.metadata(r), ...(options.host === undefined ? {} : { host: options.host }) });
        const results = [];
        for (const ref of refs) {
          const changed = protect ? await protectBackup(repo, ref, null) : await unprotectBackup(repo, ref);
          results.push({ ...ref, protected: protect, changed });
          out.result(`${ref.ct}/${ref.id}: ${changed ? (protect ? "protected" : "protection removed") : protect ? "already protected" : "was not protected"}`);
        }
        if (out.json) out.jsonResult(results);
      } finally {
        await repo.close();
      }
    });
}

export function protectCommand(): Command {
  return protectionCommand("protect");
}

export function unprotectCommand(): Command {
  return protectionCommand("unprotect");
}
