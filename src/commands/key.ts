/**
 * `ploopvault key list|add|remove|passwd`: the passwords of an encrypted repository. Each
 * password is one key object keys/<id> wrapping the same master key, so adding, removing
 * or changing a password rewrites one small object and never re-encrypts data. Every
 * subcommand first unlocks the repository with a current password (--password-file,
 * PLOOPVAULT_PASSWORD or a prompt); new passwords come from --new-password-file,
 * PLOOPVAULT_NEW_PASSWORD or a prompt asked twice.
 */
import { Command, Option } from "commander";
import { NEW_PASSWORD_ENV, newPassword } from "../crypto/password.js";
import type { Repository } from "../repository/repository.js";
import { addCommonOptions, openRepository, Output, type GlobalOptions } from "./common.js";

interface KeyOptions extends GlobalOptions {
  newPasswordFile?: string;
}

function withNewPassword(cmd: Command): Command {
  return cmd.addOption(new Option("--new-password-file <file>", `the new password (else env ${NEW_PASSWORD_ENV}, or a prompt on a terminal)`));
}

async function withRepository(options: KeyOptions, body: (repo: Repository, out: Output) => Promise<void>): Promise<void> {
  const out = new Output(options);
  const repo = await openRepository(options);
  try {
    await body(repo, out);
  } finally {
    await repo.close();
  }
}

function readNewPassword(options: KeyOptions, repo: Repository): Promise<string> {
  return newPassword({ file: options.newPasswordFile, option: "--new-password-file", envName: NEW_PASSWORD_ENV }, `new key for repository ${repo.location}`);
}

export function keyCommand(): Command {
  const list = addCommonOptions(new Command("list"))
    .description("list the key objects (one per password) of an encrypted repository")
    .addHelpText(
      "after",
      `
Examples:
  ploopvault key list --repo /srv/backup
  ploopvault key list --repo s3://backups/node1 --json | jq -r '.[].id'
`,
    )
    .action((options: KeyOptions) =>
      withRepository(options, async (repo, out) => {
        const rows = (await repo.listKeys()).map((k) => ({
          id: k.id,
          current: k.id === repo.keyId,
          created: k.created,
          host: k.host,
          user: k.user,
          kdf: { algorithm: k.kdf.algorithm, N: k.kdf.N, r: k.kdf.r, p: k.kdf.p },
        }));
        if (out.json) {
          out.jsonResult(rows);
          return;
        }
        const table = [[" ", "ID", "CREATED", "HOST", "USER", "KDF"]];
        for (const r of rows)
          table.push([
            r.current ? "*" : " ",
            r.id,
            r.created.replace(/\.\d+Z$/, "Z"),
            r.host,
            r.user,
            `scrypt N=2^${Math.log2(r.kdf.N)} r=${r.kdf.r} p=${r.kdf.p}`,
          ]);
        out.table(table);
        out.info(`${rows.length} key${rows.length === 1 ? "" : "s"} (* = the one this password opens)`);
      }),
    );

  const add = withNewPassword(addCommonOptions(new Command("add")))
    .description("add a password: a new key object for the same master key")
    .addHelpText(
      "after",
      `
Examples:
  # another operator's password (the file holds it; chmod 600)
  ploopvault key add --repo s3://backups/node1 --new-password-file /root/ops2.pass
`,
    )
    .action((options: KeyOptions) =>
      withRepository(options, async (repo, out) => {
        const key = await repo.addKey(await readNewPassword(options, repo));
        if (out.json) out.jsonResult({ key: key.id, status: "ok" });
        out.info(`added key ${key.id} to ${repo.location}`);
      }),
    );

  const remove = addCommonOptions(new Command("remove"))
    .description("remove a password (key object); not the one used to unlock")
    .addHelpText(
      "after",
      `
Examples:
  # by id or a unique prefix (>= 4 hex digits), as key list shows it
  ploopvault key remove --repo /srv/backup 3fa9c2d1
`,
    )
    .argument("<id>", "key id (or a unique prefix) as `key list` shows it")
    .action((spec: string, options: KeyOptions) =>
      withRepository(options, async (repo, out) => {
        const id = await repo.resolveKeyId(spec);
        await repo.removeKey(id);
        if (out.json) out.jsonResult({ key: id, status: "removed" });
        out.info(`removed key ${id} from ${repo.location}`);
      }),
    );

  const passwd = withNewPassword(addCommonOptions(new Command("passwd")))
    .description("change the password of the key it unlocks with (data is not re-encrypted)")
    .addHelpText(
      "after",
      `
Examples:
  ploopvault key passwd --repo /srv/backup            # asks twice on a terminal
  PLOOPVAULT_NEW_PASSWORD=... ploopvault key passwd --repo s3://backups/node1
`,
    )
    .action((options: KeyOptions) =>
      withRepository(options, async (repo, out) => {
        const { oldKey, newKey } = await repo.changePassword(await readNewPassword(options, repo));
        if (out.json) out.jsonResult({ oldKey, key: newKey.id, status: "ok" });
        out.info(`changed the password: key ${oldKey} replaced by ${newKey.id} in ${repo.location}`);
      }),
    );

  const key = new Command("key")
    .description("manage the passwords of an encrypted repository (list, add, remove, passwd)")
    .addHelpText(
      "after",
      "\nExamples:\n  ploopvault key list --repo /srv/backup\n  ploopvault key add --repo s3://backups --new-password-file /root/ops2.pass\n  ploopvault key passwd --repo /srv/backup\n  ploopvault key remove --repo /srv/backup 3fa9c2d1\n",
    );
  for (const sub of [list, add, remove, passwd]) key.addCommand(sub.exitOverride());
  return key;
}
