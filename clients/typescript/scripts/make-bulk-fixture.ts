// Writes test/fixtures/account-bulk-v2.sqlite: a bulk file written by the real server (its
// Rust writer, format version 2), and test/fixtures/account-bulk-v2.json: what its BulkReady
// announced and the records a paged sync of the same partition holds (the unit tests read the
// file with the library and compare). Run again after a change of the file format:
//
//   cargo build -p syncline-server --bin syncline
//   cd clients/typescript && npx esbuild scripts/make-bulk-fixture.ts --bundle --platform=node \
//     --format=esm --packages=external --outfile=scripts/.make-bulk-fixture.mjs \
//     && node scripts/.make-bulk-fixture.mjs; rm scripts/.make-bulk-fixture.mjs
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { downloadBulkFile } from "../src/bulk.js";
import { SynclineClient } from "../src/client.js";
import type { WebSocketLike } from "../src/client.js";
import { resolveUrl } from "../src/http.js";
import { requestBulk } from "../test/bulk-server.js";
import { ServerProcess, serverBinary, waitForDemoAccounts } from "../test/server-process.js";
import { fixtureRecord } from "../test/fixture-records.js";

const here = dirname(fileURLToPath(import.meta.url));
const binary = serverBinary();
if (!binary) throw new Error("build target/debug/syncline first");
const server = await ServerProcess.start(binary, { SYNCLINE_DEMO_RECORDS: "20" });
try {
  await waitForDemoAccounts(server, 20);
  // Values the demo's accounts lack: integers beyond 2^53, negative ones, text of every plane.
  // (Written as text: JavaScript numbers would round them.)
  const lines = ['{"id":"zz-big","fields":{"n":9007199254740993,"m":-9223372036854775808,"name":"größer 🚀"}}', '{"id":"zz-empty","fields":{}}'];
  const ingested = spawnSync(binary, ["ingest", "--source", "Account", "--grpc-url", server.grpcUrl], { input: lines.join("\n"), encoding: "utf8" });
  if (ingested.status !== 0) throw new Error(`ingest failed: ${ingested.stderr}`);
  const client = await SynclineClient.open({
    url: server.deviceUrl,
    credentials: { username: "demo", password: "demo" },
    sources: ["Account"],
    webSocket: (url, protocol) => new WebSocket(url, protocol) as unknown as WebSocketLike,
  });
  await client.waitFor(() => client.source("Account").size === 22 && client.partitions().every((p) => p.phase === "caught_up"), 60_000);
  const ready = await requestBulk(server.deviceUrl, "Account");
  const file = ready.files[0];
  if (!file) throw new Error(`no file: ${JSON.stringify(ready.error)}`);
  const { bytes } = await downloadBulkFile(resolveUrl(server.deviceUrl, file.url), file.token);
  const dir = join(here, "../test/fixtures");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "account-bulk-v2.sqlite"), bytes);
  const expected = {
    source: file.source,
    key: file.key,
    sequence: file.sequence.toString(),
    recordCount: file.recordCount.toString(),
    checksum: file.checksum.toString(),
    bytes: file.bytes.toString(),
    records: client.source("Account").records().map(fixtureRecord).sort((a, b) => (a.id < b.id ? -1 : 1)),
  };
  writeFileSync(join(dir, "account-bulk-v2.json"), `${JSON.stringify(expected, null, 1)}\n`);
  await client.stop();
  console.log(`wrote ${bytes.length} bytes, ${file.recordCount} records at sequence ${file.sequence}`);
} finally {
  await server.dispose();
}
