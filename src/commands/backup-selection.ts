/**
 * How ls, dump, restore and serve-nbd name the one backup they read: the <backup> argument
 * (resolved by src/restore/resolve.ts), --host to choose among hosts that back up a container
 * of the same id and, for the commands that read the backed-up filesystem, --partition.
 * Factories rather than one call that adds them all: each command keeps its options in the
 * order its --help has always listed them.
 */
import { Argument, Option } from "commander";
import { parsePositiveInt } from "./common.js";

/** What the command line says about which backup (and which partition of its disk) to read. */
export interface BackupSelectionOptions {
  host?: string;
  partition?: number;
}

export function backupArgument(): Argument {
  return new Argument("<backup>", "backup id (or a unique prefix), CT or CT:latest (newest backup of a container), CT/ID, or HOST/CT:latest");
}

export function hostOption(): Option {
  return new Option("--host <name>", "only backups made on this host (needed for CT:latest when several hosts back up a container of that id)");
}

export function partitionOption(description = "partition of the disk to read (default: the one holding an ext filesystem)"): Option {
  return new Option("--partition <n>", description).argParser(parsePositiveInt("--partition"));
}

/** --host as resolveBackup() takes it (absent when not given). */
export function hostFilter(options: BackupSelectionOptions): { host?: string } {
  return options.host === undefined ? {} : { host: options.host };
}

/** --host and --partition for the library calls that open a backup's filesystem (absent when not given). */
export function backupSelection(options: BackupSelectionOptions): BackupSelectionOptions {
  return { ...hostFilter(options), ...(options.partition === undefined ? {} : { partition: options.partition }) };
}
