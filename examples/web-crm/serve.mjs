// Serves the example web app on http://127.0.0.1:8080 (PORT to change): bundles app.ts with
// the library's sources (esbuild from clients/typescript) and serves it with index.html.
//
//   npm --prefix clients/typescript ci && node examples/web-crm/serve.mjs
//
// Then open http://127.0.0.1:8080/ while `syncline serve` runs (add ?url=ws://host:port/v1/sync
// for another server).
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const library = join(here, "../../clients/typescript");
const esbuild = await import(pathToFileURL(createRequire(join(library, "package.json")).resolve("esbuild")).href);

/** Bundles the app and starts the HTTP server on `port` (0: any); resolves to its address. */
export async function serveExample(port = 8080) {
  const bundle = await esbuild.build({
    entryPoints: [join(here, "app.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    absWorkingDir: library,
  });
  const app = bundle.outputFiles[0].contents;
  const html = readFileSync(join(here, "index.html"));
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path === "/app.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(app);
    } else if (path === "/" || path === "/index.html") {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((listening) => server.listen(port, "127.0.0.1", () => listening()));
  return server;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = await serveExample(Number(process.env.PORT ?? 8080));
  const { port } = server.address();
  console.log(`Syncline web CRM on http://127.0.0.1:${port}/`);
}
