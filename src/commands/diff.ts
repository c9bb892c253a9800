import { Command } from "commander";
import { decodeManifest } from "../manifest/format.js";
import { diffEntries } from "../manifest/diff.js";
import { ManifestCache } from "../repository/known-chunks.js";
import { resolveBackup } from "../restore/resolve.js";
import { formatBytes } from "../util/format.js";
import { addCommonOptions, openRepository, Output, type GlobalOptions } from "./common.js";

interface DiffOptions extends GlobalOptions {
  host?: string;
}

export function diffCommand(): Command {
  return addCommonOptions(new Command("diff"))
    .description("byte ranges of the disk that differ between two backups (from the manifests; nothing is downloaded)")
    .argument("<from>", "the older backup: id (or a unique prefix), CT/ID, CT:latest, HOST/CT:latest")
    .argument("<to>", "the newer backup")
    .option("--host <name>", "only look among backups made on this host")
    .addHelpText(
      "after",
      `
Examples:
  ploopvault diff --repo /srv/backup 101/20250301T023004Z-1c9e0a77 101:latest
  ploopvault diff --repo s3://backups/node1 20250301T0230 20250302T0230 --json | jq .changedBytes

Ranges are at chunk granularity (content-defined chunks: an unchanged stretch keeps its
chunks, a change shows as the chunks around it). OFFSET and LENGTH are bytes of the
logical disk.
`,
    )
    .action(async (fromSpec: string, toSpec: string, options: DiffOptions) => {
      const out = new Output(options);
      const repo = await openRepository(options);
      try {
        const cache = ManifestCache.forRepository(repo, options.stateDir);
        const resolveOptions = {
          metadata: (r: { ct: string; id: string }) => cache.metadata(r),
          ...(options.host === undefined ? {} : { host: options.host }),
        };
        const [from, to] = [await resolveBackup(repo, fromSpec, resolveOptions), await resolveBackup(repo, toSpec, resolveOptions)];
        const load = async (ref: { ct: string; id: string }) => decodeManifest(await cache.manifestObject(ref), `manifest of backup ${ref.ct}/${ref.id}`);
        const [a, b] = [await load(from), await load(to)];
        const diff = diffEntries(a.entries, a.metadata.disk.logicalBytes, b.entries, b.metadata.disk.logicalBytes);
        if (out.json) {
          out.jsonResult({ from: `${from.ct}/${from.id}`, to: `${to.ct}/${to.id}`, ...diff });
          return;
        }
        if (from.ct !== to.ct) out.warn(`comparing backups of different containers (${from.ct} and ${to.ct})`);
        if (diff.ranges.length > 0)
          out.table([["OFFSET", "LENGTH", "SIZE"], ...diff.ranges.map((r) => [String(r.offset), String(r.length), formatBytes(r.length)])]);
        const size = diff.fromBytes === diff.toBytes ? formatBytes(diff.toBytes) : `${formatBytes(diff.fromBytes)} -> ${formatBytes(diff.toBytes)}`;
        out.listing(
          `${from.ct}/${from.id} -> ${to.ct}/${to.id}: ${diff.ranges.length} changed range${diff.ranges.length === 1 ? "" : "s"}, ${formatBytes(diff.changedBytes)} of ${size}; ${diff.newChunks} new chunks (${formatBytes(diff.newChunkBytes)} of data)`,
        );
      } finally {
        await repo.close();
      }
    });
}
