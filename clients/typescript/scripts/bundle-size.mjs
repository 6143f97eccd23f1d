// Measures the browser build of @syncline/client, minified for browsers as one ES module,
// raw and gzip: (1) what a typical app bundles (SynclineClient and IndexedDbStorage, binary
// frames: the bundler drops the rest, the JSON mapping and the backend services included),
// (2) the whole public API, (3) the whole public API without the protobuf runtime.
//
// Usage: npm run bench:size
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const base = { bundle: true, minify: true, format: "esm", platform: "browser", target: "es2022", write: false };

async function measure(label, contents, extra = {}) {
  const result = await build({ ...base, stdin: { contents, resolveDir: "src", loader: "ts" }, ...extra });
  const code = result.outputFiles[0].contents;
  console.log(`${label}: ${code.length} bytes minified, ${gzipSync(code, { level: 9 }).length} bytes gzip`);
}

await measure("typical app (SynclineClient + IndexedDbStorage)", 'export { SynclineClient, IndexedDbStorage } from "./index.ts";');
await measure("whole public API", 'export * from "./index.ts";');
await measure("whole public API without the protobuf runtime", 'export * from "./index.ts";', {
  external: ["@bufbuild/protobuf", "@bufbuild/protobuf/*"],
});
