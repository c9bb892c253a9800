/** Where ploopvault keeps its journal, host lock, caches and trust records (--state-dir, env PLOOPVAULT_STATE). */
export const DEFAULT_STATE_DIR = "/var/lib/ploopvault";
