import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: "forks",
    // two cores: more parallel files only thrash the disk and the S3 server
    maxWorkers: 2,
    minWorkers: 1,
  },
});
