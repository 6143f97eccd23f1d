import { defineConfig } from "vitest/config";

// Benchmarks: run on demand (`npm run bench:indexeddb`), not by `npm test`.
export default defineConfig({
  test: { include: ["bench/**/*.test.ts"], testTimeout: 600_000, hookTimeout: 120_000, fileParallelism: false },
});
