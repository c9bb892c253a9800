import { defineConfig } from "vitest/config";

/**
 * The unit tier (`npm run test:unit`): pure code and the in-memory store; no S3 server,
 * no ploop, no root, no global set-up. `npm test` runs these and everything else.
 */
export const UNIT_TESTS = [
  "test/unit/**/*.test.ts",
  "test/chunker/chunker.test.ts",
  "test/chunker/stitch.test.ts",
  "test/crypto/formats.test.ts",
  "test/crypto/key-limits.test.ts",
  "test/manifest/manifest.test.ts",
  "test/nbd/protocol.test.ts",
];

export default defineConfig({
  test: {
    include: UNIT_TESTS,
    testTimeout: 30_000,
  },
});
