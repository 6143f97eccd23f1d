// Benchmark: initial sync of 10,000 records into IndexedDB in headless Chromium (the example
// web app against `syncline serve` with 10,000 demo accounts), in records per second from the
// page's load (login included), and from its first page, to every partition caught up with
// the checksum verified.
//
// Usage: npm run bench:indexeddb   (needs target/debug/syncline, or SYNCLINE_BIN, and /usr/bin/chromium)
import type { AddressInfo } from "node:net";
import { chromium } from "playwright-core";
import { expect, it } from "vitest";
import { serveExample } from "../../../examples/web-crm/serve.mjs";
import type { SynclineClient } from "../src/client.js";
import { CHROMIUM, CHROMIUM_FLAGS, ServerProcess, serverBinary, waitForDemoAccounts } from "../test/server-process.js";

const RECORDS = 10_000;

it(`syncs ${RECORDS} records into IndexedDB`, async () => {
  const binary = serverBinary();
  if (!binary) throw new Error("build target/debug/syncline first (or set SYNCLINE_BIN)");
  const server = await ServerProcess.start(binary, { SYNCLINE_DEMO_RECORDS: String(RECORDS) });
  // The server imports the demo accounts from its demo channel after start: wait for them.
  await waitForDemoAccounts(server, RECORDS);
  const web = await serveExample(0);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, headless: true });
  try {
    const results: number[] = [];
    const syncRates: number[] = [];
    for (let run = 0; run < 3; run += 1) {
      const page = await browser.newPage();
      const { port } = web.address() as AddressInfo;
      await page.goto(`http://127.0.0.1:${port}/?url=${encodeURIComponent(server.deviceUrl)}&db=bench-${run}&pageSize=1000`);
      const elapsedMs = await page.evaluate(async (records) => {
        const started = performance.timeOrigin;
        const client = await new Promise<SynclineClient>((found) => {
          const poll = (): void => {
            const candidate = (window as { syncline?: SynclineClient }).syncline;
            if (candidate) found(candidate);
            else setTimeout(poll, 5);
          };
          poll();
        });
        await client.waitFor(
          () => client.partitions().length === 2 && client.partitions().every((partition) => partition.phase === "caught_up") && client.source("Account").size === records,
          120_000,
        );
        const done = performance.timeOrigin + performance.now();
        const firstPage = performance.getEntriesByName("syncline:first-page")[0]?.startTime ?? 0;
        return { total: done - started, sync: done - (performance.timeOrigin + firstPage) };
      }, RECORDS);
      const verified = await page.evaluate(() => (window as { syncline?: SynclineClient }).syncline?.stats.verified ?? 0);
      expect(verified).toBeGreaterThanOrEqual(2);
      results.push((RECORDS / elapsedMs.total) * 1000);
      syncRates.push((RECORDS / elapsedMs.sync) * 1000);
      await page.close();
    }
    const report = (label: string, rates: number[]): void => {
      rates.sort((a, b) => a - b);
      console.log(`${label}: ${RECORDS} records, runs ${rates.map((rate) => Math.round(rate)).join(", ")} records/s, median ${Math.round(rates[1] ?? 0)}`);
    };
    report("initial sync into IndexedDB, from page load (login included)", results);
    report("initial sync into IndexedDB, from the first page", syncRates);
  } finally {
    await browser.close();
    await new Promise((closed) => web.close(closed));
    await server.dispose();
  }
}, 600_000);
