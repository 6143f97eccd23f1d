// Measures the browser build of @syncline/client: the whole public API bundled as one ES
// module for browsers, minified, and its gzip size. Only the generated code the library
// uses is included (device.proto and common.proto; not the backend services).
//
// Usage: npm run bench:size
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const options = {
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  write: false,
  metafile: true,
};
const result = await build(options);
const own = await build({ ...options, external: ["@bufbuild/protobuf", "@bufbuild/protobuf/*"] });
const code = result.outputFiles[0].contents;
const gzip = gzipSync(code, { level: 9 }).length;
const inputs = Object.entries(result.metafile.outputs)[0][1].inputs;
const generated = Object.entries(inputs)
  .filter(([path]) => path.includes("/gen/") || path.includes("@bufbuild"))
  .reduce((sum, [, input]) => sum + input.bytesInOutput, 0);
console.log(`bundle: ${code.length} bytes minified, ${gzip} bytes gzip`);
console.log(`of which protobuf runtime and generated types: ${generated} bytes minified`);
const ownCode = own.outputFiles[0].contents;
console.log(`without the protobuf runtime: ${ownCode.length} bytes minified, ${gzipSync(ownCode, { level: 9 }).length} bytes gzip`);
