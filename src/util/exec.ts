/**
 * execa, loaded on first use: it and its dependencies are ~170 modules, the largest part
 * of a cold start, and most runs (--help, snapshots, restore, check) never spawn anything.
 */
type Execa = (typeof import("execa"))["execa"];

let loaded: Promise<Execa> | undefined;

export function loadExeca(): Promise<Execa> {
  loaded ??= import("execa").then((m) => m.execa);
  return loaded;
}
