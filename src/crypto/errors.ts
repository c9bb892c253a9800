/**
 * Errors of encrypted repositories. A wrong password has its own exit code (5) so scripts
 * can tell "the password is wrong" from "the backup failed" (1) and "bad command line" (2).
 * Messages never contain a password or key material.
 */
import { PloopvaultError } from "../errors.js";

/** Exit code of a wrong password (no key object of the repository accepts it). */
export const EXIT_WRONG_PASSWORD = 5;

export class WrongPasswordError extends PloopvaultError {
  constructor(message: string) {
    super(message, { exitCode: EXIT_WRONG_PASSWORD });
  }
}

/** AEAD authentication failed: wrong key, or the object was modified (caller adds which). */
export class AuthenticationFailure extends Error {}
