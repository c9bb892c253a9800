/** The aged disk of backup --skip-free (scripts/aged-disk.ts, shared with bench/skip-free.ts). */
export * from "../../scripts/aged-disk.js";
