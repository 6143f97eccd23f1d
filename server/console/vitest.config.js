import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 240_000,
    hookTimeout: 120_000,
    // Each file starts its own server and browser: one at a time on small machines.
    fileParallelism: false,
  },
});
