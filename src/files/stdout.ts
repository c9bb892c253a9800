/**
 * stdout closed by its reader (`ploopvault ls ... | head`): Node reports EPIPE as an
 * 'error' event, which without a listener ends the process with a stack trace. ls stops
 * listing quietly (what `ls | head` means); dump fails with one line (its data is cut).
 */
export interface StdoutWatch {
  readonly closed: boolean;
}

export function watchStdout(): StdoutWatch {
  let failed = false;
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE" || error.code === "ERR_STREAM_DESTROYED") {
      failed = true;
      return;
    }
    throw error;
  });
  // the 'error' event comes on a later tick; the stream is destroyed at once
  return {
    get closed(): boolean {
      return failed || process.stdout.destroyed;
    },
  };
}
