// Bulk first sync in headless Chromium (Debian's, via playwright-core) against a real
// `syncline serve` with 20,000 demo accounts, from a page on another origin than the device
// listener (every download is a CORS request with a preflight): the partition arrives by one
// checked file into IndexedDB and a change made while the download is held arrives through
// the log after it, equal to a paged device's records; a reload restores the records from
// IndexedDB without another file; a download cut half-way resumes with Range (206); a forged
// token is refused with the typed error (readable only because the 401 carries CORS headers)
// and the partition pages instead.
import { existsSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket as NodeWebSocket } from "ws";
import { SynclineClient } from "../src/client.js";
import type { IndexedDbStorage } from "../src/indexeddb.js";
import type { BlobRef } from "../src/values.js";
import type { WebSocketLike } from "../src/client.js";
import { serveBulkPage } from "./pages/serve-bulk-page.js";
import { CHROMIUM, CHROMIUM_FLAGS, ServerProcess, serverBinary, waitForDemoAccounts } from "./server-process.js";

const binary = serverBinary();
const available = binary !== undefined && existsSync(CHROMIUM);
if (!available && process.env.SYNCLINE_BROWSER_REQUIRED) throw new Error(`SYNCLINE_BROWSER_REQUIRED is set but ${CHROMIUM} or the server binary is missing`);
const ACCOUNTS = 20_000;
const TIMEOUT = 180_000;

interface BulkTestWindow {
  bulkTest: {
    client?: SynclineClient;
    notes: { status: string; code?: string; bytes: number; totalBytes: number; records: number }[];
    calls: { range: string | null; status: number }[];
    restoredSize?: number;
    release: () => void;
    failure?: string;
  };
}

/** What the page exposes for tests of the store alone. */
type Library = { BlobRef: typeof BlobRef; IndexedDbStorage: typeof IndexedDbStorage };

let server: ServerProcess;
let web: Server;
let browser: Browser;

async function open(db: string, flags = ""): Promise<Page> {
  const page = await browser.newPage();
  const { port } = web.address() as AddressInfo;
  await page.goto(`http://127.0.0.1:${port}/?url=${encodeURIComponent(server.deviceUrl)}&db=${db}${flags}`);
  await page.waitForFunction(() => {
    const test = (window as unknown as BulkTestWindow).bulkTest;
    return test.client !== undefined || test.failure !== undefined;
  }, null, { timeout: TIMEOUT });
  const failure = await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.failure);
  expect(failure).toBeUndefined();
  return page;
}

async function bulkDone(page: Page): Promise<void> {
  await page.waitForFunction(
    () => {
      const test = (window as unknown as BulkTestWindow).bulkTest;
      const partitions = test.client?.partitions() ?? [];
      return test.notes.some((note) => note.status === "complete") && partitions.length === 1 && partitions.every((partition) => partition.phase === "caught_up");
    },
    null,
    { timeout: TIMEOUT, polling: 50 },
  );
}

async function statuses(page: Page): Promise<string[]> {
  const notes = await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.notes.map((note) => note.status));
  return notes.filter((status, index) => notes[index - 1] !== status);
}

async function stats(page: Page): Promise<{ bulkSyncs: number; checksumMismatches: number; verified: number }> {
  return page.evaluate(() => {
    const client = (window as unknown as BulkTestWindow).bulkTest.client as SynclineClient;
    return { bulkSyncs: client.stats.bulkSyncs, checksumMismatches: client.stats.checksumMismatches, verified: client.stats.verified };
  });
}

/** The page's records of Account, as comparable text (as `snapshot` makes them). */
async function pageSnapshot(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const records = (window as unknown as BulkTestWindow).bulkTest.client?.source("Account").records() ?? [];
    return records.map((record) =>
      JSON.stringify([record.id, record.version.toString(), Object.entries(record.fields).sort().map(([field, value]) => [field, String(value)])]),
    );
  });
}

async function pagedSnapshot(): Promise<string[]> {
  const client = await SynclineClient.open({
    url: server.deviceUrl,
    credentials: { username: "demo", password: "demo" },
    sources: [{ source: "Account", pageSize: 2000 }],
    webSocket: (url, protocol) => new NodeWebSocket(url, protocol) as unknown as WebSocketLike,
  });
  await client.waitFor(() => client.partitions().length === 1 && client.partitions().every((partition) => partition.phase === "caught_up"), TIMEOUT);
  const records = client.source("Account").records();
  await client.stop();
  return records.map((record) =>
    JSON.stringify([record.id, record.version.toString(), Object.entries(record.fields).sort().map(([field, value]) => [field, String(value)])]),
  ).sort();
}

describe.skipIf(!available)("bulk first sync in headless Chromium", () => {
  beforeAll(async () => {
    server = await ServerProcess.start(binary ?? "", { SYNCLINE_DEMO_RECORDS: String(ACCOUNTS) });
    await waitForDemoAccounts(server, ACCOUNTS);
    web = await serveBulkPage();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, headless: true });
  });

  afterAll(async () => {
    await browser?.close();
    await new Promise((closed) => web?.close(closed));
    await server?.dispose();
  });

  it("brings 20,000 records into IndexedDB by one checked file from another origin, a change made meanwhile through the log, and keeps them across a reload", async () => {
    const page = await open("bulk-initial", "&hold=1");
    await page.waitForFunction(() => (window as unknown as BulkTestWindow).bulkTest.calls.length === 1, null, { timeout: TIMEOUT });
    // The file's answer is held: the change is after its sequence, so only the log brings it.
    server.ingest("Account", "", [
      { id: "acc-3", fields: { name: "changed while the browser downloads" } },
      { id: "acc-browser-bulk", fields: { name: "new while the browser downloads" } },
      { id: "acc-4", delete: true },
    ]);
    await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.release());
    await bulkDone(page);
    await page.waitForFunction(() => (window as unknown as BulkTestWindow).bulkTest.client?.source("Account").get("acc-browser-bulk") !== undefined, null, { timeout: TIMEOUT });
    expect(await statuses(page)).toEqual(["start", "download", "change_db", "blobs", "ok", "complete"]);
    const pageStats = await stats(page);
    expect(pageStats.bulkSyncs).toBe(1);
    expect(pageStats.checksumMismatches).toBe(0);
    const calls = await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.calls);
    expect(calls).toEqual([{ range: null, status: 200 }]);
    const paged = await pagedSnapshot();
    expect(paged.length).toBeGreaterThanOrEqual(ACCOUNTS);
    await expect.poll(async () => (await pageSnapshot(page)).sort(), { timeout: TIMEOUT }).toEqual(paged);
    expect(paged.some((text) => text.includes("changed while the browser downloads"))).toBe(true);

    // A reload: the records come back from IndexedDB at the file's cursor; no file again.
    await page.evaluate(async () => (window as unknown as BulkTestWindow).bulkTest.client?.stop());
    await page.reload();
    await page.waitForFunction(() => (window as unknown as BulkTestWindow).bulkTest.client !== undefined, null, { timeout: TIMEOUT });
    expect(await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.restoredSize)).toBe(paged.length);
    // Caught up again on the server's word: the partition is listed (an empty list would be
    // "every partition caught up" before the client has even subscribed) and was verified
    // against the server's checksum at the cursor it came back with.
    await page.waitForFunction(
      () => {
        const client = (window as unknown as BulkTestWindow).bulkTest.client;
        const partitions = client?.partitions() ?? [];
        return partitions.length === 1 && partitions.every((partition) => partition.phase === "caught_up") && (client?.stats.verified ?? 0) >= 1;
      },
      null,
      { timeout: TIMEOUT },
    );
    const reloaded = await stats(page);
    expect(reloaded.bulkSyncs).toBe(0);
    expect(reloaded.verified).toBeGreaterThanOrEqual(1);
    expect(await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.calls.length)).toBe(0);
    expect((await pageSnapshot(page)).sort()).toEqual(paged);
    await page.close();
  });

  it("gives blob references back as BlobRef from the browser's IndexedDB after a reload", async () => {
    const page = await open("blob-store");
    await page.evaluate(async () => {
      const { BlobRef, IndexedDbStorage } = (window as unknown as { library: Library }).library;
      const store = await IndexedDbStorage.open("blob-refs");
      const photo = new BlobRef("0f".repeat(32), 123456n, "image/jpeg", "face.jpg");
      await store.writePage("Gallery", "*", { clear: true, deletes: [], upserts: [{ id: "p1", fields: { photo, title: "me" }, version: 7n }], cursor: 7n });
      store.close();
    });
    await page.reload();
    await page.waitForFunction(() => (window as unknown as { library?: unknown }).library !== undefined, null, { timeout: TIMEOUT });
    const back = await page.evaluate(async () => {
      const { BlobRef, IndexedDbStorage } = (window as unknown as { library: Library }).library;
      const store = await IndexedDbStorage.open("blob-refs");
      const photo = (await store.load()).partitions[0]?.records[0]?.fields.photo;
      store.close();
      return { typed: photo instanceof BlobRef, text: String(photo), same: photo instanceof BlobRef && photo.equals(new BlobRef("0f".repeat(32), 123456n, "image/jpeg", "face.jpg")) };
    });
    expect(back).toEqual({ typed: true, text: `blob:${"0f".repeat(32)}`, same: true });
    await page.close();
  });

  it("resumes a download cut half-way with Range (206)", async () => {
    const page = await open("bulk-cut", "&cut=1");
    await bulkDone(page);
    const calls = await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.calls);
    expect(calls).toHaveLength(2);
    expect(calls[0]).toEqual({ range: null, status: 200 });
    expect(calls[1]?.status).toBe(206);
    expect(calls[1]?.range).toMatch(/^bytes=\d+-$/);
    expect((await stats(page)).bulkSyncs).toBe(1);
    expect((await pageSnapshot(page)).sort()).toEqual(await pagedSnapshot());
    await page.close();
  });

  it("refuses a forged token with the typed error across origins, and pages instead", async () => {
    const page = await open("bulk-forged", "&forge=1");
    await bulkDone(page);
    const notes = await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.notes);
    expect(notes.find((note) => note.status === "error")?.code).toBe("UNAUTHENTICATED");
    expect(await page.evaluate(() => (window as unknown as BulkTestWindow).bulkTest.calls)).toEqual([{ range: null, status: 401 }]);
    expect((await stats(page)).bulkSyncs).toBe(0);
    expect((await pageSnapshot(page)).sort()).toEqual(await pagedSnapshot());
    await page.close();
  });
});
