// Serves test/pages/bulk-page.ts (bundled with esbuild for the browser, sql.js included) and
// sql.js's WebAssembly module from node_modules on a loopback port of its own: another
// origin than the device listener's.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

export async function serveBulkPage(): Promise<Server> {
  const bundle = await build({
    entryPoints: [join(here, "bulk-page.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    absWorkingDir: join(here, "../.."),
  });
  const script = bundle.outputFiles[0]?.contents ?? new Uint8Array();
  const wasm = readFileSync(createRequire(import.meta.url).resolve("sql.js/dist/sql-wasm-browser.wasm"));
  const html = '<!doctype html><meta charset="utf-8"><title>bulk</title><script type="module" src="/bulk.js"></script>';
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path === "/bulk.js") response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    else if (path === "/sql-wasm.wasm") response.writeHead(200, { "content-type": "application/wasm" }).end(wasm);
    else if (path === "/") response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    else response.writeHead(404).end();
  });
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", () => listening()));
  return server;
}
