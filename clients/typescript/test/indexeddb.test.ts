import { IDBFactory } from "fake-indexeddb";
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { IndexedDbStorage } from "../src/indexeddb.js";
import type { QueuedMutation } from "../src/outbox.js";
import { BlobRef } from "../src/values.js";

// fake-indexeddb implements the IndexedDB API in Node; the same class runs on the browser's
// own IndexedDB.
describe("IndexedDB store", () => {
  it("writes pages with their cursor, clears on reset, and reads it all back", async () => {
    const factory = new IDBFactory();
    const store = await IndexedDbStorage.open("device", factory);
    const bytes = new Uint8Array([1, 2, 250]);
    await store.writePage("Account", "*", {
      clear: true,
      deletes: [],
      upserts: [
        { id: "a", fields: { name: "A", n: 5n, x: 1.5, ok: true, logo: bytes, none: null }, version: 1n },
        { id: "b", fields: {}, version: 2n },
      ],
      cursor: 2n,
    });
    await store.writePage("Contact", "demo", { clear: true, deletes: [], upserts: [{ id: "c", fields: {}, version: 1n }], cursor: 1n });
    await store.writePage("Account", "*", { clear: false, deletes: ["b"], upserts: [{ id: "d", fields: {}, version: 3n }], cursor: 3n });
    await store.writeSession({ clientId: "c-1", sessionToken: "st", userId: "demo", naturalKeys: { Account: "*" } });
    const mutation: QueuedMutation = {
      position: 1,
      mutationId: "m1",
      source: "Account",
      key: "",
      op: "create",
      id: "tmp-1",
      fields: { name: "X" },
      baseVersion: 0n,
      state: "pending",
      sent: false,
    };
    await store.writeMutations([mutation, { ...mutation, position: 2, mutationId: "m2" }], []);
    await store.writeMutations([], [1]);
    store.close();

    const reopened = await IndexedDbStorage.open("device", factory);
    const state = await reopened.load();
    const accounts = state.partitions.find((partition) => partition.source === "Account");
    expect(accounts?.cursor).toBe(3n);
    expect(accounts?.records.map((record) => record.id).sort()).toEqual(["a", "d"]);
    expect(accounts?.records.find((record) => record.id === "a")?.fields).toEqual({ name: "A", n: 5n, x: 1.5, ok: true, logo: bytes, none: null });
    expect(state.partitions.find((partition) => partition.source === "Contact")?.records).toHaveLength(1);
    expect(state.session).toEqual({ clientId: "c-1", sessionToken: "st", userId: "demo", naturalKeys: { Account: "*" } });
    expect(state.mutations.map((row) => row.mutationId)).toEqual(["m2"]);

    // A snapshot's first page replaces the partition, and only that partition.
    await reopened.writePage("Account", "*", { clear: true, deletes: [], upserts: [{ id: "z", fields: {}, version: 9n }], cursor: 0n });
    const reset = await reopened.load();
    expect(reset.partitions.find((partition) => partition.source === "Account")).toMatchObject({ cursor: 0n, records: [{ id: "z" }] });
    expect(reset.partitions.find((partition) => partition.source === "Contact")?.records).toHaveLength(1);
    await reopened.clear();
    expect(await reopened.load()).toEqual({ session: {}, partitions: [], mutations: [] });
  });

  it("keeps records in chunks across many pages, updates and deletes, with or without a load first", async () => {
    const factory = new IDBFactory();
    const store = await IndexedDbStorage.open("chunks", factory);
    const page = (from: number, count: number) =>
      Array.from({ length: count }, (_, n) => ({ id: `r${from + n}`, fields: { n: BigInt(from + n) }, version: BigInt(from + n + 1) }));
    await store.writePage("Account", "*", { clear: true, deletes: [], upserts: page(0, 1200), cursor: 0n });
    await store.writePage("Account", "*", { clear: false, deletes: [], upserts: page(1200, 300), cursor: 1500n });
    store.close();
    // Written without a load first: the chunk index is read from the database.
    const writer = await IndexedDbStorage.open("chunks", factory);
    await writer.writePage("Account", "*", {
      clear: false,
      deletes: ["r0", "r750", "r1499"],
      upserts: [{ id: "r10", fields: { n: -1n }, version: 1501n }, ...page(1500, 2)],
      cursor: 1502n,
    });
    const state = await writer.load();
    const records = state.partitions[0]?.records ?? [];
    expect(state.partitions[0]?.cursor).toBe(1502n);
    expect(records).toHaveLength(1499);
    expect(new Set(records.map((record) => record.id)).size).toBe(1499);
    expect(records.find((record) => record.id === "r10")?.fields.n).toBe(-1n);
    expect(records.some((record) => record.id === "r750")).toBe(false);
    // After a load, the index from it is used.
    await writer.writePage("Account", "*", { clear: false, deletes: ["r1"], upserts: [], cursor: 1503n });
    expect((await writer.load()).partitions[0]?.records).toHaveLength(1498);
  });

  it("leaves records and cursor as they were when a page cannot be written whole", async () => {
    const store = await IndexedDbStorage.open("atomic", new IDBFactory());
    await store.writePage("Account", "*", { clear: true, deletes: [], upserts: [{ id: "a", fields: {}, version: 1n }], cursor: 1n });
    const unclonable = { id: "b", fields: { bad: (() => undefined) as unknown as null }, version: 2n };
    const failed = store.writePage("Account", "*", { clear: false, deletes: ["a"], upserts: [unclonable], cursor: 2n });
    await expect(failed).rejects.toMatchObject({ code: "STORAGE" });
    const state = await store.load();
    expect(state.partitions[0]).toMatchObject({ cursor: 1n, records: [{ id: "a" }] });
  });

  it("gives blob references back as BlobRef after a reload, in records and queued mutations", async () => {
    const factory = new IDBFactory();
    const store = await IndexedDbStorage.open("blobs", factory);
    const photo = new BlobRef("0f".repeat(32), 123456n, "image/jpeg", "face.jpg");
    const nameless = new BlobRef("a1".repeat(32), 0n, "application/octet-stream");
    // A bulk file's records replace the partition in one clearing write, as pages do.
    await store.writePage("Gallery", "*", {
      clear: true,
      deletes: [],
      upserts: [{ id: "p1", fields: { photo, title: "me", other: nameless }, version: 7n }],
      cursor: 7n,
    });
    const mutation: QueuedMutation = {
      position: 1,
      mutationId: "m1",
      source: "Gallery",
      key: "",
      op: "create",
      id: "tmp-1",
      fields: { photo },
      baseVersion: 0n,
      state: "pending",
      sent: false,
    };
    await store.writeMutations([mutation], []);
    store.close();
    const reopened = await IndexedDbStorage.open("blobs", factory);
    const state = await reopened.load();
    const fields = state.partitions[0]?.records[0]?.fields ?? {};
    expect(fields.photo).toBeInstanceOf(BlobRef);
    expect((fields.photo as BlobRef).equals(photo)).toBe(true);
    expect(String(fields.photo)).toBe(`blob:${photo.hash}`);
    expect(fields.other).toBeInstanceOf(BlobRef);
    expect((fields.other as BlobRef).equals(nameless)).toBe(true);
    expect(fields.title).toBe("me");
    expect(state.mutations[0]?.fields.photo).toBeInstanceOf(BlobRef);
    // A write after a reload (its chunk index read from the database) keeps them typed too.
    await reopened.writePage("Gallery", "*", { clear: false, deletes: [], upserts: [{ id: "p2", fields: {}, version: 8n }], cursor: 8n });
    const again = await reopened.load();
    expect(again.partitions[0]?.records.find((record) => record.id === "p1")?.fields.photo).toBeInstanceOf(BlobRef);
  });
});
