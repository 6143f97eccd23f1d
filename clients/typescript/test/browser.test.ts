// End to end in headless Chromium (Debian's, driven by playwright-core; never a downloaded
// browser) against a real `syncline serve`: the example web app (examples/web-crm) syncs
// into IndexedDB with the checksum verified, shows a change ingested over gRPC, survives 100
// offline changes across a page reload and a server restart, and ends equal to a fresh device
// after 20 cuts mid-sync.
import { existsSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket as NodeWebSocket } from "ws";
import { serveExample } from "../../../examples/web-crm/serve.mjs";
import { SynclineClient } from "../src/client.js";
import type { WebSocketLike } from "../src/client.js";
import type { OfflinePlan } from "./scenario.js";
import { checkOfflineEffects, makeOfflineChanges, snapshot } from "./scenario.js";
import { CHROMIUM, CHROMIUM_FLAGS, ServerProcess, serverBinary, waitForDemoAccounts } from "./server-process.js";

const binary = serverBinary();
const available = binary !== undefined && existsSync(CHROMIUM);
if (!available && process.env.SYNCLINE_BROWSER_REQUIRED) throw new Error(`SYNCLINE_BROWSER_REQUIRED is set but ${CHROMIUM} or the server binary is missing`);
const TIMEOUT = 120_000;

/** What the page exposes: the example app's client. */
type PageWindow = { syncline?: SynclineClient };

let server: ServerProcess;
let web: Server;
let browser: Browser;

function appUrl(db: string, extra = ""): string {
  const { port } = web.address() as AddressInfo;
  return `http://127.0.0.1:${port}/?url=${encodeURIComponent(server.deviceUrl)}&db=${db}${extra}`;
}

async function waitCaughtUp(page: Page, accounts?: number): Promise<void> {
  await page.waitForFunction(
    (count) => {
      const client = (window as PageWindow).syncline;
      const partitions = client?.partitions() ?? [];
      return partitions.length === 2 && partitions.every((partition) => partition.phase === "caught_up") && (count === null || client?.source("Account").size === count);
    },
    accounts ?? null,
    { timeout: TIMEOUT, polling: 50 },
  );
}

/** The page's records of a source, as comparable text. */
async function pageSnapshot(page: Page, source: string): Promise<string[]> {
  return page.evaluate((name) => {
    const records = (window as PageWindow).syncline?.source(name).records() ?? [];
    return records.map((record) =>
      JSON.stringify([record.id, record.version.toString(), Object.entries(record.fields).sort().map(([field, value]) => [field, String(value)])]),
    );
  }, source);
}

async function freshDevice(): Promise<SynclineClient> {
  const client = await SynclineClient.open({
    url: server.deviceUrl,
    credentials: { username: "demo", password: "demo" },
    sources: ["Account", "Contact"],
    webSocket: (url, protocol) => new NodeWebSocket(url, protocol) as unknown as WebSocketLike,
  });
  await client.waitFor(() => client.partitions().length === 2 && client.partitions().every((partition) => partition.phase === "caught_up"), TIMEOUT);
  return client;
}

describe.skipIf(!available)("end to end in headless Chromium", () => {
  beforeAll(async () => {
    server = await ServerProcess.start(binary ?? "");
    await waitForDemoAccounts(server, 2000);
    web = await serveExample(0);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, headless: true });
  });

  afterAll(async () => {
    await browser?.close();
    await new Promise((closed) => web?.close(closed));
    await server?.dispose();
  });

  it("syncs the 2,000 demo accounts into IndexedDB with the checksum verified and shows an ingested change", async () => {
    const page = await browser.newPage();
    await page.goto(appUrl("initial"));
    await waitCaughtUp(page, 2000);
    const stats = await page.evaluate(() => ({ ...(window as PageWindow).syncline?.stats }));
    expect(stats.verified).toBeGreaterThanOrEqual(2);
    expect(stats.checksumMismatches).toBe(0);
    await expect.poll(() => page.textContent("#account-count"), { timeout: TIMEOUT }).toBe("(2000)");
    server.ingest("Account", "", [{ id: "acc-0-browser", fields: { name: "Ingested for the browser" } }]);
    await page.waitForSelector('tr[data-id="acc-0-browser"]', { timeout: TIMEOUT });
    await page.close();
  });

  it("applies 100 offline changes exactly once after a page reload and a server restart", async () => {
    const page = await browser.newPage();
    await page.goto(appUrl("offline"));
    await waitCaughtUp(page);
    const seeded = (await pageSnapshot(page, "Account")).map((text) => (JSON.parse(text) as string[])[0] ?? "").filter((id) => /^acc-\d+$/.test(id)).slice(0, 30);
    await server.stop();
    await page.waitForFunction(() => (window as PageWindow).syncline?.connection !== "connected", null, { timeout: TIMEOUT });
    // The same scenario as in Node, run in the page on the example app's client.
    const plan = await page.evaluate<OfflinePlan>(`(${makeOfflineChanges.toString()})(window.syncline, ${JSON.stringify(seeded)})`);
    // Stop the client (its queue writes are flushed), then reload the page.
    await page.waitForFunction(() => (window as PageWindow).syncline?.pendingMutations.length === 100, null, { timeout: TIMEOUT });
    await page.evaluate(async () => {
      const client = (window as PageWindow).syncline as SynclineClient;
      await client.stop();
    });
    await page.reload();
    await page.waitForFunction(() => (window as PageWindow).syncline?.pendingMutations.length === 100, null, { timeout: TIMEOUT });
    await server.restart();
    await page.waitForFunction(() => (window as PageWindow).syncline?.pendingMutations.length === 0, null, { timeout: TIMEOUT, polling: 100 });
    await waitCaughtUp(page);
    const check = await freshDevice();
    checkOfflineEffects(plan, check.source("Account"), check.source("Contact"));
    await expect.poll(() => pageSnapshot(page, "Account"), { timeout: TIMEOUT }).toEqual(snapshot(check.source("Account").records()));
    expect(await pageSnapshot(page, "Contact")).toEqual(snapshot(check.source("Contact").records()));
    await check.stop();
    await page.close();
  });

  it("ends equal to a fresh device after its connection is cut 20 times mid-sync", async () => {
    const page = await browser.newPage();
    await page.goto(appUrl("cuts", "&pageSize=50&window=2&backoffMs=50&backoffMaxMs=500"));
    await page.waitForFunction(() => (window as PageWindow).syncline !== undefined, null, { timeout: TIMEOUT });
    await page.evaluate(() => {
      const client = (window as PageWindow).syncline as SynclineClient;
      const state = { cuts: 0, pages: 0 };
      (window as unknown as { cutState: typeof state }).cutState = state;
      client.onNotification((notification) => {
        if (notification.type !== "sync" || notification.status !== "in_progress" || state.cuts >= 20) return;
        state.pages += 1;
        if (state.pages % 3 === 0) {
          state.cuts += 1;
          client.cut();
        }
      });
    });
    await page
      .waitForFunction(() => (window as unknown as { cutState: { cuts: number } }).cutState.cuts >= 20, null, { timeout: TIMEOUT })
      .catch(async (error: unknown) => {
        const state = await page.evaluate(() => JSON.stringify({ cut: (window as unknown as { cutState: unknown }).cutState, connection: (window as PageWindow).syncline?.connection, partitions: (window as PageWindow).syncline?.partitions().map((p) => [p.phase, String(p.cursor), String(p.total)]) }));
        throw new Error(`${String(error)} ${state}`);
      });
    await waitCaughtUp(page);
    const check = await freshDevice();
    expect(await pageSnapshot(page, "Account")).toEqual(snapshot(check.source("Account").records()));
    expect(await page.evaluate(() => (window as PageWindow).syncline?.stats.checksumMismatches)).toBe(0);
    await check.stop();
    await page.close();
  });
});
