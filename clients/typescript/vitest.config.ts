import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 240_000,
    hookTimeout: 120_000,
    // End-to-end suites start their own servers; run files one at a time on small machines.
    fileParallelism: false,
  },
});
