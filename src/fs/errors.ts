/**
 * Errors of the filesystem reader. Each message is the one line an operator sees: it names
 * the filesystem (e.g. "ext4 in partition 1 of backup 101/2024..."), the object (inode,
 * block, path) and what is wrong with it.
 */
import { PloopvaultError } from "../errors.js";

/** Damaged or hostile metadata: a checksum that does not match, a field out of range. */
export class FilesystemError extends PloopvaultError {}

/** A well-formed filesystem using something this reader does not implement. */
export class UnsupportedFilesystemError extends FilesystemError {}

/** A path that does not exist, or is not what the caller asked for (a file, a folder). */
export class PathError extends PloopvaultError {}
