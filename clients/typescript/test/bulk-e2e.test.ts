// Bulk first sync end to end in Node against a real `syncline serve` whose demo holds 20,000
// accounts: the partition arrives by one SQLite file (checksum checked) and a change
// ingested during the download arrives through the log after it, nothing lost or twice; a
// download cut mid-way resumes with Range (206); a forged token is refused with the typed
// error (and the partition pages instead); blobs upload in pieces and download intact.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket as NodeWebSocket } from "ws";
import { downloadBulkFile } from "../src/bulk.js";
import { SynclineClient } from "../src/client.js";
import type { ClientOptions, WebSocketLike } from "../src/client.js";
import { HttpError, resolveUrl } from "../src/http.js";
import type { FetchLike } from "../src/http.js";
import type { BulkNotification, Notification } from "../src/notifications.js";
import { BlobRef } from "../src/values.js";
import { requestBulk } from "./bulk-server.js";
import { snapshot } from "./scenario.js";
import { ServerProcess, serverBinary, waitForDemoAccounts } from "./server-process.js";

const binary = serverBinary();
if (!binary && process.env.SYNCLINE_E2E_REQUIRED) {
  throw new Error("SYNCLINE_E2E_REQUIRED is set but the server binary is missing (build target/debug/syncline or set SYNCLINE_BIN)");
}

const ACCOUNTS = 20_000;
const TIMEOUT = 180_000;
const webSocket = (url: string, protocol: string): WebSocketLike => new NodeWebSocket(url, protocol) as unknown as WebSocketLike;

let server: ServerProcess;
const clients: SynclineClient[] = [];

async function device(options: Partial<ClientOptions> = {}): Promise<SynclineClient> {
  const client = await SynclineClient.open({
    url: server.deviceUrl,
    credentials: { username: "demo", password: "demo" },
    sources: ["Account"],
    webSocket,
    backoff: { initialMs: 50, maxMs: 500 },
    ...options,
  });
  clients.push(client);
  return client;
}

function caughtUp(client: SynclineClient): boolean {
  const partitions = client.partitions();
  return partitions.length > 0 && partitions.every((partition) => partition.phase === "caught_up");
}

function bulkStatuses(notifications: Notification[]): string[] {
  const statuses: string[] = [];
  for (const notification of notifications) {
    if (notification.type === "bulk" && statuses.at(-1) !== notification.status) statuses.push(notification.status);
  }
  return statuses;
}

/** The records of a fresh device that pages (no bulk), once caught up. */
async function pagedSnapshot(): Promise<string[]> {
  const check = await device({ sources: [{ source: "Account", pageSize: 2000 }] });
  await check.waitFor(() => caughtUp(check), TIMEOUT);
  const records = snapshot(check.source("Account").records());
  await check.stop();
  return records;
}

/** Wraps the global fetch: `change` may alter each bulk request's headers or its response. */
function recordingFetch(change: { headers?: (headers: Record<string, string>) => void; response?: (response: Response, call: number) => Response } = {}): {
  fetch: FetchLike;
  calls: { url: string; range: string | undefined; status: number }[];
} {
  const calls: { url: string; range: string | undefined; status: number }[] = [];
  const fetch: FetchLike = async (url, init) => {
    const headers = { ...(init?.headers as Record<string, string>) };
    change.headers?.(headers);
    const response = await globalThis.fetch(url, { ...init, headers });
    calls.push({ url, range: headers.range, status: response.status });
    return change.response ? change.response(response, calls.length) : response;
  };
  return { fetch, calls };
}

/** Returns `response` with its body cut (an error) after `bytes` bytes. */
function cutBody(response: Response, bytes: number): Response {
  const reader = response.body?.getReader();
  let passed = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await reader?.read();
      if (!next || next.done) {
        controller.close();
        return;
      }
      const room = bytes - passed;
      if (room <= 0) {
        await reader?.cancel();
        controller.error(new Error("connection cut by the test"));
        return;
      }
      const chunk = next.value.length > room ? next.value.slice(0, room) : next.value;
      passed += chunk.length;
      controller.enqueue(chunk);
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

describe.skipIf(!binary)("bulk first sync end to end against syncline serve", () => {
  beforeAll(async () => {
    server = await ServerProcess.start(binary ?? "", { SYNCLINE_DEMO_RECORDS: String(ACCOUNTS) });
    await waitForDemoAccounts(server, ACCOUNTS);
  });

  afterAll(async () => {
    for (const client of clients.splice(0)) await client.stop();
    await server?.dispose();
  });

  it("brings 20,000 records by one checked file and a change made during the download through the log after it", async () => {
    const notifications: Notification[] = [];
    let ingested = false;
    const client = await device({ bulk: { minRecords: 1000 } });
    client.onNotification((notification) => {
      notifications.push(notification);
      if (notification.type === "bulk" && notification.status === "start" && !ingested) {
        ingested = true;
        // After the file's sequence, before its records are in: only the log can bring these.
        server.ingest("Account", "", [
          { id: "acc-1", fields: { name: "changed during the bulk download" } },
          { id: "acc-bulk-new", fields: { name: "new during the bulk download" } },
          { id: "acc-2", delete: true },
        ]);
      }
    });
    await client.waitFor(() => notifications.some((n) => n.type === "bulk" && n.status === "complete") && caughtUp(client), TIMEOUT);
    await client.waitFor(() => client.source("Account").get("acc-bulk-new") !== undefined, TIMEOUT);
    expect(bulkStatuses(notifications)).toEqual(["start", "download", "change_db", "blobs", "ok", "complete"]);
    const start = notifications.find((n): n is BulkNotification => n.type === "bulk" && n.status === "start");
    const ok = notifications.find((n): n is BulkNotification => n.type === "bulk" && n.status === "ok");
    const downloads = notifications.filter((n): n is BulkNotification => n.type === "bulk" && n.status === "download");
    expect(start?.records).toBeGreaterThanOrEqual(ACCOUNTS);
    expect(ok?.records).toBe(start?.records);
    expect(downloads.at(-1)?.bytes).toBe(start?.totalBytes);
    expect(client.stats.bulkSyncs).toBe(1);
    expect(client.stats.checksumMismatches).toBe(0);
    expect(client.stats.verified).toBeGreaterThanOrEqual(1);
    expect(client.stats.pages).toBeLessThanOrEqual(2);
    const accounts = client.source("Account");
    expect(accounts.get("acc-1")?.fields.name).toBe("changed during the bulk download");
    expect(accounts.get("acc-2")).toBeUndefined();
    // Nothing lost or twice: the same records, versions and values as a device that paged.
    await client.waitFor(() => caughtUp(client), TIMEOUT);
    const paged = await pagedSnapshot();
    expect(paged.length).toBeGreaterThanOrEqual(ACCOUNTS);
    expect(snapshot(accounts.records())).toEqual(paged);
    // Later changes arrive live.
    server.ingest("Account", "", [{ id: "acc-after-bulk", fields: { name: "after" } }]);
    await client.waitFor(() => accounts.get("acc-after-bulk") !== undefined, TIMEOUT);
    await client.stop();
  });

  it("resumes a download cut mid-way with Range (206) and ends with the same records", async () => {
    let cutAt = 0;
    const { fetch, calls } = recordingFetch({
      response: (response, call) => {
        if (call !== 1) return response;
        cutAt = Math.floor(Number(response.headers.get("content-length")) / 2);
        return cutBody(response, cutAt);
      },
    });
    const notifications: Notification[] = [];
    const client = await device({ bulk: { minRecords: 1000, backoff: { initialMs: 10, maxMs: 50 } }, fetch });
    client.onNotification((notification) => notifications.push(notification));
    await client.waitFor(() => notifications.some((n) => n.type === "bulk" && n.status === "complete") && caughtUp(client), TIMEOUT);
    expect(bulkStatuses(notifications)).toContain("ok");
    expect(cutAt).toBeGreaterThan(0);
    expect(calls).toEqual([
      { url: expect.stringContaining("/v1/bulk/"), range: undefined, status: 200 },
      { url: expect.stringContaining("/v1/bulk/"), range: `bytes=${cutAt}-`, status: 206 },
    ]);
    expect(client.stats.bulkSyncs).toBe(1);
    expect(snapshot(client.source("Account").records())).toEqual(await pagedSnapshot());
    await client.stop();
  });

  it("refuses a forged token with the typed error; the client pages instead", async () => {
    const ready = await requestBulk(server.deviceUrl, "Account");
    const file = ready.files[0];
    expect(file).toBeDefined();
    const url = resolveUrl(server.deviceUrl, file?.url ?? "");
    const forged = `${(file?.token ?? "").slice(0, -2)}xx`;
    const error = await downloadBulkFile(url, forged, { maxAttempts: 3 }).catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(HttpError);
    expect(error).toMatchObject({ code: "UNAUTHENTICATED", status: 401, serverCode: "unauthenticated" });

    const { fetch, calls } = recordingFetch({ headers: (headers) => void (headers.authorization = `Bearer ${forged}`) });
    const notifications: Notification[] = [];
    const client = await device({ bulk: { minRecords: 1000 }, fetch, sources: [{ source: "Account", pageSize: 2000 }] });
    client.onNotification((notification) => notifications.push(notification));
    await client.waitFor(() => notifications.some((n) => n.type === "bulk" && n.status === "complete") && caughtUp(client), TIMEOUT);
    const failure = notifications.find((n): n is BulkNotification => n.type === "bulk" && n.status === "error");
    expect(failure?.error?.code).toBe("UNAUTHENTICATED");
    expect(calls).toHaveLength(1);
    expect(client.stats.bulkSyncs).toBe(0);
    expect(client.source("Account").size).toBeGreaterThanOrEqual(ACCOUNTS);
    expect(client.stats.checksumMismatches).toBe(0);
    await client.stop();
  });

  it("uploads a blob in resumable pieces and downloads the same bytes", async () => {
    const client = await device();
    await client.waitFor(() => caughtUp(client), TIMEOUT);
    const bytes = new Uint8Array(300_000).map((_, index) => (index * 31) % 251);
    const progress: number[] = [];
    const ref = await client.uploadBlob(bytes, "image/png", "pattern.png", { pieceBytes: 100_000, onProgress: (done) => progress.push(done) });
    expect(ref).toBeInstanceOf(BlobRef);
    expect(ref.size).toBe(300_000n);
    expect(progress).toEqual([100_000, 200_000, 300_000]);
    // A second upload of the same bytes sends nothing: the server holds them.
    expect((await client.uploadBlob(bytes, "image/png", "pattern.png")).equals(ref)).toBe(true);
    const back = await client.downloadBlob(ref);
    expect(back).toEqual(bytes);
    await client.stop();
  });
});
