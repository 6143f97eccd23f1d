// The page of the browser bulk tests (test/bulk-browser.test.ts): a client with bulk sync into
// IndexedDB, served from another origin than the device listener (so every bulk download is
// a CORS request with a preflight). Query: url (the socket), db (IndexedDB name), hold (the
// first bulk answer waits for window.bulkTest.release()), cut (the first bulk answer's body
// breaks half-way), forge (the bulk token is replaced with a forged one).
import { BlobRef, IndexedDbStorage, SynclineClient } from "../../src/index.js";
import type { FetchLike, Notification } from "../../src/index.js";

interface Note {
  status: string;
  code?: string;
  bytes: number;
  totalBytes: number;
  records: number;
}

interface BulkTest {
  client?: SynclineClient;
  notes: Note[];
  calls: { range: string | null; status: number }[];
  restoredSize?: number;
  release: () => void;
  failure?: string;
}

const params = new URLSearchParams(location.search);
let release: () => void = () => undefined;
const released = new Promise<void>((resolve) => {
  release = resolve;
});
const test: BulkTest = { notes: [], calls: [], release: () => release() };
(window as unknown as { bulkTest: BulkTest }).bulkTest = test;
// For tests of the store alone.
(window as unknown as { library: unknown }).library = { BlobRef, IndexedDbStorage };

const fetchForTest: FetchLike = async (url, init) => {
  const headers = new Headers(init?.headers);
  if (params.has("forge")) headers.set("authorization", `Bearer ${(headers.get("authorization") ?? "").slice(7, -2)}xx`);
  const response = await fetch(url, { ...init, headers });
  test.calls.push({ range: headers.get("range"), status: response.status });
  const first = test.calls.length === 1;
  if (first && params.has("hold")) await released;
  if (!first || !params.has("cut") || !response.body) return response;
  const cutAt = Math.floor(Number(response.headers.get("content-length")) / 2);
  const reader = response.body.getReader();
  let passed = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await reader.read();
      const room = cutAt - passed;
      if (next.done || room <= 0) {
        await reader.cancel();
        controller.error(new Error("cut by the test"));
        return;
      }
      const chunk = next.value.length > room ? next.value.slice(0, room) : next.value;
      passed += chunk.length;
      controller.enqueue(chunk);
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
};

try {
  const storage = await IndexedDbStorage.open(params.get("db") ?? "bulk");
  test.restoredSize = (await storage.load()).partitions.reduce((sum, partition) => sum + partition.records.length, 0);
  const client = await SynclineClient.open({
    url: params.get("url") ?? "",
    credentials: { username: "demo", password: "demo" },
    sources: [{ source: "Account", pageSize: 2000 }],
    storage,
    bulk: { minRecords: 1000, wasmUrl: "/sql-wasm.wasm", backoff: { initialMs: 10, maxMs: 50 } },
    fetch: fetchForTest,
    backoff: { initialMs: 50, maxMs: 500 },
  });
  client.onNotification((notification: Notification) => {
    if (notification.type !== "bulk") return;
    const { status, bytes, totalBytes, records } = notification;
    test.notes.push({ status, bytes, totalBytes, records, ...(notification.error ? { code: notification.error.code } : {}) });
  });
  test.client = client;
} catch (error) {
  test.failure = String(error);
}
