import { Command, Option } from "commander";
import { runCopy, type CopiedBackup, type CopyReport } from "../copy/copy.js";
import { passwordProvider, type PasswordSources } from "../crypto/password.js";
import { EXIT_PARTIAL, PloopvaultError, UsageError } from "../errors.js";
import { progressDisplay } from "../ops/progress.js";
import { withRateLimits } from "../uploader/rate-limit.js";
import { validateName } from "../repository/layout.js";
import type { Repository } from "../repository/repository.js";
import { openTrustedRepository } from "../repository/trust.js";
import { openStore } from "../uploader/open.js";
import { formatBytes, formatSeconds } from "../util/format.js";
import { addCommonOptions, defaultHost, openRepository, Output, parsePositiveInt, withInterrupts, type GlobalOptions } from "./common.js";

interface CopyCliOptions extends GlobalOptions {
  from?: string;
  to?: string;
  fromEndpoint?: string;
  fromPasswordFile?: string;
  ct?: string[];
  last?: number;
  concurrency: number;
  host?: string;
  lockHost: string;
}

const FROM_PASSWORD: PasswordSources = { option: "--from-password-file", env: "PLOOPVAULT_FROM_PASSWORD", fileEnv: "PLOOPVAULT_FROM_PASSWORD_FILE" };

/** The source's own S3 credentials, when given (else the same AWS_* chain as the destination). */
function sourceCredentials(): { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined {
  const accessKeyId = process.env.PLOOPVAULT_FROM_AWS_ACCESS_KEY_ID;
  const secretAccessKey = process.env.PLOOPVAULT_FROM_AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId && !secretAccessKey) return undefined;
  if (!accessKeyId || !secretAccessKey)
    throw new UsageError("set both PLOOPVAULT_FROM_AWS_ACCESS_KEY_ID and PLOOPVAULT_FROM_AWS_SECRET_ACCESS_KEY (or neither)");
  const sessionToken = process.env.PLOOPVAULT_FROM_AWS_SESSION_TOKEN;
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}

async function openSource(options: CopyCliOptions, url: string): Promise<Repository> {
  const endpoint = options.fromEndpoint || options.endpoint || process.env.AWS_ENDPOINT_URL || undefined;
  const credentials = sourceCredentials();
  const store = withRateLimits(
    await openStore(url, { ...(endpoint === undefined ? {} : { endpoint }), ...(credentials === undefined ? {} : { credentials }) }),
    {
      upload: options.limitUpload,
      download: options.limitDownload,
    },
  );
  // checked against what this host remembers of it, like the destination (a source whose
  // config was replaced by a plaintext one is refused: docs/encryption.md)
  const location = store.location.startsWith("s3://") && endpoint !== undefined ? `${store.location} at ${endpoint}` : store.location;
  try {
    return await openTrustedRepository(store, {
      stateDir: options.stateDir,
      location,
      password: passwordProvider({ passwordFile: options.fromPasswordFile }, process.env, FROM_PASSWORD),
    });
  } catch (error) {
    await store.close();
    throw error;
  }
}

export function copyCommand(): Command {
  return addCommonOptions(new Command("copy"))
    .description("copy backups, and the chunks the destination lacks, from another repository (incremental, resumable)")
    .addOption(new Option("--from <url>", "source repository: s3://BUCKET[/PREFIX], file://PATH or a directory").env("PLOOPVAULT_FROM_REPO"))
    .option(
      "--to <url>",
      "destination repository (default --repo / PLOOPVAULT_REPO); it takes the usual --endpoint, --password-file, PLOOPVAULT_PASSWORD, AWS_*",
    )
    .option("--from-endpoint <url>", "S3 endpoint of the source (default: the destination's)")
    .addOption(
      new Option("--from-password-file <file>", "password of an encrypted source (else env PLOOPVAULT_FROM_PASSWORD, or a prompt)").env(
        "PLOOPVAULT_FROM_PASSWORD_FILE",
      ),
    )
    .option("--ct <id...>", "only these containers")
    .addOption(new Option("--last <n>", "only the N newest backups of each container").argParser(parsePositiveInt("--last")))
    .addOption(new Option("--concurrency <n>", "chunks transferred at once").default(8).argParser(parsePositiveInt("--concurrency")))
    .option("--host <name>", "only backups made on this host (with --last: the N newest of each container on it)")
    .addOption(new Option("--lock-host <name>", "this host's name in the destination's lock objects").default(defaultHost()))
    .addHelpText(
      "after",
      `
Backups keep their id, time, host and stats; only backups the destination lacks are
copied, and only chunks it lacks are transferred. Every chunk is verified against its
source id on the way. A backup whose source is damaged fails alone and is not published
(exit 3 when others were copied). A killed copy publishes nothing half-copied; run it
again to finish. The source's own S3 credentials, if they differ:
PLOOPVAULT_FROM_AWS_ACCESS_KEY_ID, PLOOPVAULT_FROM_AWS_SECRET_ACCESS_KEY (else AWS_*).

Examples:
  ploopvault copy --from /srv/backup --to s3://offsite/node1 --endpoint https://s3.example.net
  ploopvault copy --from s3://backups/node1 --to /mnt/usb/pv --ct 101 102 --last 3
  ploopvault copy --from s3://backups/all --to s3://offsite/all --host "$(hostname)" --last 7
  PLOOPVAULT_FROM_PASSWORD_FILE=/root/.pv-a PLOOPVAULT_PASSWORD_FILE=/root/.pv-b ploopvault copy --from s3://a/n1 --to s3://b/n1
`,
    )
    .action(async (options: CopyCliOptions) => {
      const out = new Output(options);
      const from = options.from;
      if (from === undefined || from === "") throw new UsageError("no source repository given: use --from URL");
      if (options.to !== undefined && options.repo !== undefined && options.to !== options.repo && process.env.PLOOPVAULT_REPO !== options.repo) {
        throw new UsageError("give the destination once: --to URL or --repo URL");
      }
      for (const ct of options.ct ?? []) validateName("container id", ct);
      const destinationOptions: GlobalOptions = { ...options, ...(options.to === undefined ? {} : { repo: options.to }) };
      let interrupt: AbortSignal | undefined;
      const report: CopyReport = await withInterrupts(out, "stopping, publishing nothing more", async (signal) => {
        interrupt = signal;
        const source = await openSource(options, from);
        try {
          const destination = await openRepository(destinationOptions);
          try {
            const progress = progressDisplay();
            return await runCopy({
              source,
              destination,
              stateDir: options.stateDir,
              host: options.lockHost,
              ...(options.host === undefined ? {} : { onlyHost: options.host }),
              ...(options.ct === undefined ? {} : { cts: options.ct }),
              ...(options.last === undefined ? {} : { last: options.last }),
              concurrency: options.concurrency,
              signal,
              log: (line) => out.info(line),
              warn: (line) => out.warn(line),
              ...(progress === null
                ? {}
                : {
                    onProgress: (ref, p) =>
                      progress.update(`copy:${ref.ct}/${ref.id}`, `copy ${ref.ct}/${ref.id}`, {
                        done: p.doneBytes,
                        total: p.totalBytes,
                        newBytes: p.uploadedBytes,
                      }),
                  }),
              onResult: (r) => {
                progress?.remove(`copy:${r.ct}/${r.backup}`);
                printResult(out, r);
              },
            });
          } finally {
            await destination.close();
          }
        } finally {
          await source.close();
        }
      });
      if (out.json) out.jsonResult({ ...report, status: report.failed === 0 ? "ok" : report.copied > 0 ? "partial" : "error" });
      out.info(
        `copied ${report.copied} of ${report.selected} backups (${report.present} already there${report.failed > 0 ? `, ${report.failed} failed` : ""}): ${report.chunksUploaded} chunks, ${formatBytes(report.bytesUploaded)} uploaded, ${formatBytes(report.bytesDownloaded)} downloaded in ${formatSeconds(report.seconds)}`,
      );
      if (interrupt?.aborted) throw interrupt.reason instanceof Error ? interrupt.reason : new PloopvaultError("interrupted");
      const failed = report.backups.filter((b) => b.status !== "ok");
      if (failed.length === 0) return;
      const summary = failed.map((b) => `${b.ct}/${b.backup}: ${b.error ?? "failed"}`).join("; ");
      if (report.copied === 0) throw new PloopvaultError(failed.length === 1 ? `copy of backup ${summary}` : `all ${failed.length} copies failed: ${summary}`);
      throw new PloopvaultError(`${failed.length} of ${failed.length + report.copied} copies failed: ${summary}`, { exitCode: EXIT_PARTIAL });
    });
}

function printResult(out: Output, r: CopiedBackup): void {
  if (r.status === "ok") {
    out.info(
      `copied ${r.ct}/${r.backup}: ${r.chunks} chunks, ${r.chunksUploaded} uploaded (${formatBytes(r.bytesUploaded)}), ${r.chunksPresent} already there${r.retentionsExtended > 0 ? `, ${r.retentionsExtended} retentions extended` : ""} in ${formatSeconds(r.seconds)}`,
    );
  } else {
    out.warn(`copy of ${r.ct}/${r.backup} FAILED (not published): ${r.error ?? "unknown error"}`);
  }
}
