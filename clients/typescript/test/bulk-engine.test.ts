// The engine's bulk state machine (bulk-sync.ts) frame by frame: a first sync asks for a file
// instead of subscribing; BulkReady starts a download; the checked file replaces the
// partition in one store write and the partition subscribes from the file's sequence; "page
// instead", a refusal or a failed download page as usual and never ask again; the server's
// RESET of a partition that was synced asks for a file instead of the snapshot.
import { describe, expect, it } from "vitest";
import { SyncEngine } from "../src/engine.js";
import { ErrorCode, SyncStatus } from "../src/gen/syncline/v1/device_pb.js";
import type { BulkFileSchema } from "../src/gen/syncline/v1/device_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SyncRecord } from "../src/values.js";
import { HttpError } from "../src/http.js";
import type { BulkNotification } from "../src/notifications.js";
import { partitionKey } from "../src/partition.js";
import { MemoryStorage } from "../src/storage.js";
import { changes, checksumOf, framesOf, record, server } from "./helpers.js";

const ACCOUNTS = partitionKey("Account", "*");

async function engine(storage = new MemoryStorage()): Promise<SyncEngine> {
  const options = { credentials: { username: "demo", password: "demo" }, subscriptions: [{ source: "Account" }, { source: "Contact", key: "other" }], bulk: { minRecords: 100 } };
  return new SyncEngine(options, storage, await storage.load());
}

function welcome() {
  return server({
    case: "welcome",
    value: { clientId: "c-1", sessionToken: "st", userId: "demo", sources: [{ name: "Account", partitioning: "app", keys: ["*"] }, { name: "Contact", partitioning: "user", keys: ["demo"] }] },
  });
}

const records: SyncRecord[] = [
  { id: "a", fields: { name: "A" }, version: 3n },
  { id: "b", fields: {}, version: 5n },
];

function file(sequence = 5n): MessageInitShape<typeof BulkFileSchema> {
  return { source: "Account", key: "*", url: "/v1/bulk/f1", token: "tok", sequence, recordCount: 2n, checksum: checksumOf(records), bytes: 4096n };
}

function statuses(notifications: { type: string }[]): string[] {
  return notifications.filter((n): n is BulkNotification => n.type === "bulk").map((n) => n.status);
}

describe("engine: bulk first sync", () => {
  it("asks for a file, swaps it in with one store write and subscribes from its sequence", async () => {
    const storage = new MemoryStorage();
    const device = await engine(storage);
    device.hello();
    const welcomed = await device.onFrame(welcome(), 0);
    const requests = framesOf(welcomed.frames, "bulkRequest") as { requestId: string; sources: string[]; minRecords: bigint }[];
    expect(requests).toEqual([expect.objectContaining({ sources: ["Account"], minRecords: 100n })]);
    // A partition with an explicit key subscribes as usual.
    expect(framesOf(welcomed.frames, "subscribe")).toEqual([expect.objectContaining({ source: "Contact", key: "other" })]);
    const ready = await device.onFrame(server({ case: "bulkReady", value: { requestId: requests[0]?.requestId ?? "", files: [file()] } }), 0);
    expect(ready.bulkDownloads).toEqual([{ partition: ACCOUNTS, file: expect.objectContaining({ sequence: 5n }) }]);
    expect(statuses(ready.notifications)).toEqual(["start"]);
    // Changes of the old subscription are not applied meanwhile.
    await device.onFrame(server({ case: "changes", value: changes({ from: 6n, to: 6n, upserts: [record("z", 6)] }) }), 0);
    const loaded = await device.onBulkLoaded(ACCOUNTS, { ok: true, contents: { source: "Account", key: "*", sequence: 5n, recordCount: 2n, checksum: checksumOf(records), createdMs: 1, records } });
    expect(statuses(loaded.notifications)).toEqual(["change_db", "blobs", "ok", "complete"]);
    expect(framesOf(loaded.frames, "subscribe")).toEqual([expect.objectContaining({ source: "Account", key: "*", cursor: 5n })]);
    expect([...(device.view(ACCOUNTS)?.keys() ?? [])].sort()).toEqual(["a", "b"]);
    expect(device.stats.bulkSyncs).toBe(1);
    const stored = (await storage.load()).partitions.find((partition) => partition.source === "Account");
    expect(stored?.cursor).toBe(5n);
    expect(stored?.records.map((row) => row.id).sort()).toEqual(["a", "b"]);
    // The log continues from the file's sequence.
    await device.onFrame(server({ case: "changes", value: changes({ from: 6n, to: 6n, page: 1n, upserts: [record("c", 6)], total: 3n }) }), 0);
    expect(device.view(ACCOUNTS)?.has("c")).toBe(true);
  });

  it("pages instead when the server says so, on a refusal and after a failed download, and never asks again", async () => {
    for (const answer of ["page_instead", "refused", "failed"] as const) {
      const device = await engine();
      device.hello();
      const welcomed = await device.onFrame(welcome(), 0);
      const requestId = (framesOf(welcomed.frames, "bulkRequest")[0] as { requestId: string }).requestId;
      let reaction;
      if (answer === "page_instead") {
        reaction = await device.onFrame(server({ case: "bulkReady", value: { requestId, pageInstead: ["Account"] } }), 0);
        expect(statuses(reaction.notifications)).toEqual(["complete"]);
      } else if (answer === "refused") {
        reaction = await device.onFrame(server({ case: "bulkReady", value: { requestId, error: { code: ErrorCode.RESOURCE_EXHAUSTED, message: "busy" } } }), 0);
        const error = reaction.notifications.find((n): n is BulkNotification => n.type === "bulk" && n.status === "error");
        expect(error?.error?.code).toBe("RESOURCE_EXHAUSTED");
      } else {
        await device.onFrame(server({ case: "bulkReady", value: { requestId, files: [file()] } }), 0);
        reaction = await device.onBulkLoaded(ACCOUNTS, { ok: false, error: new HttpError("UNAUTHENTICATED", "forged", 401) });
        expect(reaction.notifications.find((n): n is BulkNotification => n.type === "bulk" && n.status === "error")?.error?.code).toBe("UNAUTHENTICATED");
      }
      expect(framesOf(reaction.frames, "subscribe"), answer).toEqual([expect.objectContaining({ source: "Account", cursor: 0n })]);
      // A checksum mismatch later resyncs from 0 by pages, not by another file.
      device.onDisconnect({ kind: "lost" });
      device.hello();
      const again = await device.onFrame(welcome(), 0);
      expect(framesOf(again.frames, "bulkRequest"), answer).toEqual([]);
    }
  });

  it("asks for a file instead of the snapshot after the server's RESET", async () => {
    const device = await engine();
    device.hello();
    const welcomed = await device.onFrame(welcome(), 0);
    const requestId = (framesOf(welcomed.frames, "bulkRequest")[0] as { requestId: string }).requestId;
    await device.onFrame(server({ case: "bulkReady", value: { requestId, files: [file()] } }), 0);
    await device.onBulkLoaded(ACCOUNTS, { ok: true, contents: { source: "Account", key: "*", sequence: 5n, recordCount: 2n, checksum: checksumOf(records), createdMs: 1, records } });
    const reset = await device.onFrame(server({ case: "syncState", value: { source: "Account", key: "*", status: SyncStatus.RESET, cursor: 0n } }), 0);
    expect(reset.frames.map((frame) => frame.msg.case)).toEqual(["unsubscribe", "bulkRequest"]);
    expect(device.partitionStates().find((state) => state.source === "Account")?.phase).toBe("bulk");
    // The old records stay visible until the new file replaces them.
    expect(device.view(ACCOUNTS)?.size).toBe(2);
  });
});
