/**
 * Error types shared by every stage. A PloopvaultError's message is the one line an
 * operator sees: it names the file/object/endpoint and what is wrong.
 */

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_PARTIAL = 3;

export class PloopvaultError extends Error {
  readonly exitCode: number;
  constructor(message: string, options?: { cause?: unknown; exitCode?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.exitCode = options?.exitCode ?? EXIT_FAILURE;
  }
}

/** Wrong command line: exit code 2. */
export class UsageError extends PloopvaultError {
  constructor(message: string) {
    super(message, { exitCode: EXIT_USAGE });
  }
}

/** A ploop image or DiskDescriptor.xml that is malformed or inconsistent. */
export class PloopFormatError extends PloopvaultError {}

/** Stored data that is missing or does not match its id (corruption, tampering). */
export class IntegrityError extends PloopvaultError {}

/**
 * Any thrown value as one line: the first line of an Error's message (the stack and
 * `cause` are not included, so the message itself must carry the context), else String().
 */
export function errorLine(error: unknown): string {
  if (error instanceof Error) return error.message.split("\n")[0] ?? String(error);
  return String(error);
}
