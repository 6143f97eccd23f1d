// Measures the browser build of @syncline/client, minified for browsers as ES modules with
// code splitting (what app bundlers do with dynamic imports), raw and gzip: (1) what a typical
// app bundles (SynclineClient and IndexedDbStorage, binary frames: the bundler drops the rest,
// the JSON mapping and the backend services included), (2) the whole public API, (3) the whole
// public API without the protobuf runtime. The entry chunk is what a page loads at start;
// lazy chunks (sql.js's JavaScript, imported on a first bulk sync only) are reported apart.
//
// Usage: npm run bench:size
import { Buffer } from "node:buffer";
import { build } from "esbuild";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const index = join(dirname(fileURLToPath(import.meta.url)), "../src/index.ts");
const scratch = mkdtempSync(join(tmpdir(), "syncline-bundle-size-"));
const base = { bundle: true, minify: true, format: "esm", platform: "browser", target: "es2022", write: false, splitting: true, outdir: scratch };

const size = (code) => `${code.length} bytes minified, ${gzipSync(code, { level: 9 }).length} bytes gzip`;

async function measure(label, contents, extra = {}) {
  const entry = join(scratch, "entry.ts");
  writeFileSync(entry, contents.replace("./index.ts", index));
  const result = await build({ ...base, entryPoints: [entry], ...extra });
  const files = result.outputFiles;
  const start = files.find((file) => file.path.endsWith("entry.js"));
  const lazy = files.filter((file) => file !== start && !file.path.endsWith(".map"));
  const lazyBytes = Buffer.concat(lazy.map((file) => file.contents));
  console.log(`${label}: ${size(start.contents)}; loaded on demand (bulk sync): ${size(lazyBytes)}`);
}

try {
  await measure("typical app (SynclineClient + IndexedDbStorage)", 'export { SynclineClient, IndexedDbStorage } from "./index.ts";');
  await measure("whole public API", 'export * from "./index.ts";');
  await measure("whole public API without the protobuf runtime", 'export * from "./index.ts";', {
    external: ["@bufbuild/protobuf", "@bufbuild/protobuf/*"],
  });
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
