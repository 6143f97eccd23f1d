import { describe, expect, it } from "vitest";
import { SyncEngine } from "../src/engine.js";
import type { EngineOptions } from "../src/engine.js";
import { ErrorCode, SyncStatus, CommandKind, MutationOp } from "../src/gen/syncline/v1/device_pb.js";
import { partitionKey } from "../src/partition.js";
import { MemoryStorage } from "../src/storage.js";
import type { Storage } from "../src/storage.js";
import { changes, checksumOf, framesOf, record, server } from "./helpers.js";

const ACCOUNTS = partitionKey("Account", "*");

async function engine(options: Partial<EngineOptions> = {}, storage: Storage = new MemoryStorage()): Promise<SyncEngine> {
  return new SyncEngine(
    { credentials: { username: "demo", password: "demo" }, subscriptions: [{ source: "Account", pageSize: 2, window: 4 }], ...options },
    storage,
    await storage.load(),
  );
}

function welcome(sessionToken = "st-1") {
  return server({
    case: "welcome",
    value: {
      clientId: "c-1",
      sessionToken,
      userId: "demo",
      sources: [
        { name: "Account", partitioning: "app", keys: ["*"] },
        { name: "Contact", partitioning: "user", keys: ["demo"] },
      ],
    },
  });
}

function caughtUp(cursor: bigint, records: { id: string; version: bigint }[]) {
  return server({
    case: "syncState",
    value: { source: "Account", key: "*", status: SyncStatus.CAUGHT_UP, cursor, total: BigInt(records.length), checksum: checksumOf(records) },
  });
}

describe("engine: session", () => {
  it("logs in with the password, then the session token, and falls back when the token is refused", async () => {
    const device = await engine();
    const first = device.hello();
    expect(first.msg.case === "hello" && first.msg.value.credentials.case).toBe("login");
    await device.onFrame(welcome(), 0);
    device.onDisconnect({ kind: "lost" });
    const second = device.hello();
    expect(second.msg.case === "hello" && second.msg.value.credentials).toEqual({ case: "sessionToken", value: "st-1" });
    expect(second.msg.case === "hello" && second.msg.value.clientId).toBe("c-1");
    expect(device.onDisconnect({ kind: "closed", code: 4001, reason: "expired" })).toEqual({ reconnect: "now" });
    const third = device.hello();
    expect(third.msg.case === "hello" && third.msg.value.credentials.case).toBe("login");
    expect(device.onDisconnect({ kind: "closed", code: 4001, reason: "wrong password" })).toEqual({
      stop: { kind: "unauthenticated", reason: "wrong password" },
    });
  });

  it("logs in with a backend token", async () => {
    const device = await engine({ credentials: { backendToken: "jwt" } });
    const hello = device.hello();
    expect(hello.msg.case === "hello" && hello.msg.value.credentials).toEqual({ case: "backendToken", value: "jwt" });
    expect(hello.msg.case === "hello" && hello.msg.value.protocolVersion).toBe(1);
  });

  it("maps close codes and fatal errors to what follows", async () => {
    const device = await engine();
    expect(device.onDisconnect({ kind: "closed", code: 4003, reason: "" })).toMatchObject({ stop: { kind: "forbidden" } });
    expect(device.onDisconnect({ kind: "closed", code: 4426, reason: "" })).toMatchObject({ stop: { kind: "upgrade_required" } });
    expect(device.onDisconnect({ kind: "closed", code: 1000, reason: "" })).toMatchObject({ stop: { kind: "closed_by_server" } });
    expect(device.onDisconnect({ kind: "closed", code: 1012, reason: "" })).toEqual({ reconnect: "jitter" });
    expect(device.onDisconnect({ kind: "closed", code: 4429, reason: "" })).toEqual({ reconnect: "backoff" });
    expect(device.onDisconnect({ kind: "cut" })).toEqual({ reconnect: "backoff" });
    device.hello();
    await device.onFrame(server({ case: "error", value: { code: ErrorCode.FORBIDDEN, message: "locked", fatal: true } }), 0);
    expect(device.onDisconnect({ kind: "lost" })).toEqual({ stop: { kind: "forbidden", reason: "locked" } });
  });
});

describe("engine: paging, credits and the checksum", () => {
  it("subscribes after Welcome, acks each page by cursor and page, and verifies when caught up", async () => {
    const storage = new MemoryStorage();
    const device = await engine({}, storage);
    device.hello();
    const subscribed = await device.onFrame(welcome(), 0);
    expect(framesOf(subscribed.frames, "subscribe")).toEqual([
      expect.objectContaining({ source: "Account", key: "*", cursor: 0n, pageSize: 2, window: 4 }),
    ]);
    const page1 = await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, to: 3n, page: 1n, upserts: [record("a", 1), record("b", 2)], remaining: 1n, total: 3n }) }), 0);
    expect(framesOf(page1.frames, "ack")).toEqual([expect.objectContaining({ cursor: 0n, page: 1n })]);
    expect(page1.notifications).toEqual([expect.objectContaining({ type: "sync", status: "in_progress", processed: 2, cumulative: 2, total: 3n })]);
    const page2 = await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, snapshotDone: true, to: 3n, page: 2n, upserts: [record("c", 3)], total: 3n }) }), 0);
    expect(framesOf(page2.frames, "ack")).toEqual([expect.objectContaining({ cursor: 3n, page: 2n })]);
    const held = [{ id: "a", version: 1n }, { id: "b", version: 2n }, { id: "c", version: 3n }];
    const done = await device.onFrame(caughtUp(3n, held), 0);
    expect(done.frames).toEqual([]);
    expect(done.notifications.map((n) => n.type === "sync" && n.status)).toEqual(["ok", "complete"]);
    expect(device.partitionStates()[0]).toMatchObject({ phase: "caught_up", cursor: 3n, total: 3n });
    // The store holds the records with their cursor.
    const stored = await storage.load();
    expect(stored.partitions[0]).toMatchObject({ source: "Account", key: "*", cursor: 3n });
    expect(stored.partitions[0]?.records).toHaveLength(3);
    expect(stored.session).toMatchObject({ sessionToken: "st-1", clientId: "c-1", userId: "demo" });
  });

  it("resubscribes from cursor 0 after a checksum mismatch, dropping the partition", async () => {
    const storage = new MemoryStorage();
    const device = await engine({}, storage);
    device.hello();
    await device.onFrame(welcome(), 0);
    await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 2n, page: 1n, upserts: [record("a", 1), record("b", 2)] }) }), 0);
    const reaction = await device.onFrame(caughtUp(2n, [{ id: "a", version: 1n }]), 0);
    expect(framesOf(reaction.frames, "subscribe")).toEqual([expect.objectContaining({ cursor: 0n })]);
    expect(device.view(ACCOUNTS)?.size).toBe(0);
    expect((await storage.load()).partitions[0]).toMatchObject({ cursor: 0n, records: [] });
  });

  it("resubscribes from its cursor on a gap, and ignores pages of the old subscription meanwhile", async () => {
    const device = await engine();
    device.hello();
    await device.onFrame(welcome(), 0);
    await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 5n, page: 1n, upserts: [record("a", 5)] }) }), 0);
    await device.onFrame(caughtUp(5n, [{ id: "a", version: 5n }]), 0);
    const gap = await device.onFrame(server({ case: "changes", value: changes({ from: 8n, to: 8n, upserts: [record("b", 8)] }) }), 0);
    expect(framesOf(gap.frames, "subscribe")).toEqual([expect.objectContaining({ cursor: 5n })]);
    const stale = await device.onFrame(server({ case: "changes", value: changes({ from: 9n, to: 9n, page: 7n }) }), 0);
    expect(stale.frames).toEqual([]);
    const resumed = await device.onFrame(server({ case: "changes", value: changes({ from: 6n, to: 8n, page: 1n, upserts: [record("b", 8)] }) }), 0);
    expect(framesOf(resumed.frames, "ack")).toEqual([expect.objectContaining({ cursor: 8n, page: 1n })]);
  });

  it("pulls page by page in pull mode", async () => {
    const device = await engine({ subscriptions: [{ source: "Account", window: 0 }] });
    device.hello();
    const start = await device.onFrame(welcome(), 0);
    expect(start.frames.map((frame) => frame.msg.case)).toEqual(["subscribe", "pull"]);
    const page = await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, to: 4n, page: 1n, remaining: 1n, upserts: [record("a", 1)] }) }), 0);
    expect(page.frames.map((frame) => frame.msg.case)).toEqual(["ack", "pull"]);
  });

  it("debounces acks of live pushes and tells the app what changed", async () => {
    const device = await engine({ liveAck: { maxChanges: 2, intervalMs: 100 } });
    device.hello();
    await device.onFrame(welcome(), 0);
    await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 1n, page: 1n, upserts: [record("a", 1)] }) }), 0);
    await device.onFrame(caughtUp(1n, [{ id: "a", version: 1n }]), 0);
    const live = await device.onFrame(server({ case: "changes", value: changes({ from: 2n, to: 2n, upserts: [record("b", 2, { name: "B" })], total: 2n, checksum: checksumOf([{ id: "a", version: 1n }, { id: "b", version: 2n }]) }) }), 1000);
    expect(live.frames).toEqual([]);
    expect(live.notifications).toEqual([expect.objectContaining({ type: "changed", upserts: [{ id: "b", fields: { name: "B" }, version: 2n }] })]);
    expect(device.liveAckDeadline()).toBe(1100);
    expect(device.dueLiveAcks(1050)).toEqual([]);
    expect(framesOf(device.dueLiveAcks(1100), "ack")).toEqual([expect.objectContaining({ cursor: 2n, page: 0n })]);
    const two = await device.onFrame(server({ case: "changes", value: changes({ from: 3n, to: 3n, deletes: ["a", "b"] }) }), 2000);
    expect(framesOf(two.frames, "ack")).toEqual([expect.objectContaining({ cursor: 3n, page: 0n })]);
  });

  it("resumes from the stored cursor after a restart", async () => {
    const storage = new MemoryStorage();
    const first = await engine({}, storage);
    first.hello();
    await first.onFrame(welcome(), 0);
    await first.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 7n, page: 1n, upserts: [record("a", 7)] }) }), 0);
    const second = await engine({}, storage);
    const hello = second.hello();
    expect(hello.msg.case === "hello" && hello.msg.value.credentials.case).toBe("sessionToken");
    const reaction = await second.onFrame(welcome(), 0);
    expect(framesOf(reaction.frames, "subscribe")).toEqual([expect.objectContaining({ cursor: 7n })]);
    expect(second.view(ACCOUNTS)?.get("a")?.version).toBe(7n);
  });
});

describe("engine: mutations", () => {
  it("sends queued changes before subscribing, links creates and shows results ahead of the log", async () => {
    const device = await engine();
    const create = device.mutations.queueChange("Account", "", "create", "", { name: "New" });
    const update = device.mutations.queueChange("Account", "", "update", create.id, { name: "Newer" });
    device.hello();
    const start = await device.onFrame(welcome(), 0);
    expect(start.frames.map((frame) => frame.msg.case)).toEqual(["mutate", "subscribe"]);
    expect(framesOf(start.frames, "mutate")[0]).toMatchObject({ mutationId: create.mutationId, op: MutationOp.CREATE, id: create.id });
    const acked = await device.onFrame(server({ case: "mutationAck", value: { mutationId: create.mutationId, queued: 1n } }), 0);
    expect(acked.notifications).toEqual([expect.objectContaining({ type: "mutation", outcome: { status: "queued" } })]);
    const result = await device.onFrame(
      server({ case: "mutationResult", value: { mutationId: create.mutationId, ok: true, record: record("acc-9", 0, { name: "New" }), link: { tempId: create.id, id: "acc-9" } } }),
      0,
    );
    expect(framesOf(result.frames, "mutate")).toEqual([expect.objectContaining({ mutationId: update.mutationId, id: "acc-9" })]);
    const view = device.view(ACCOUNTS);
    expect(view?.get("acc-9")?.fields).toEqual({ name: "Newer" });
    expect(view?.has(create.id)).toBe(false);
  });

  it("surfaces a conflict with the current record and rolls back on discard", async () => {
    const device = await engine();
    device.hello();
    await device.onFrame(welcome(), 0);
    await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 3n, page: 1n, upserts: [record("a", 3, { name: "old" })] }) }), 0);
    const row = device.mutations.queueChange("Account", "", "update", "a", { name: "mine" });
    expect(row.baseVersion).toBe(3n);
    device.mutationFrames();
    const conflict = await device.onFrame(
      server({ case: "mutationResult", value: { mutationId: row.mutationId, ok: false, error: { op: MutationOp.UPDATE, code: ErrorCode.CONFLICT, message: "stale", current: record("a", 4, { name: "theirs" }) } } }),
      0,
    );
    expect(conflict.notifications).toEqual([
      expect.objectContaining({ outcome: expect.objectContaining({ status: "error", code: "CONFLICT", current: { id: "a", fields: { name: "theirs" }, version: 4n } }) }),
    ]);
    expect(device.view(ACCOUNTS)?.get("a")?.fields).toEqual({ name: "mine" });
    device.mutations.queue.discard(row.mutationId);
    expect(device.view(ACCOUNTS)?.get("a")?.fields).toEqual({ name: "theirs" });
  });

  it("completes a failed change when an operator's retry on the server succeeds", async () => {
    const device = await engine();
    device.hello();
    await device.onFrame(welcome(), 0);
    const row = device.mutations.queueChange("Account", "", "create", "", { name: "New" });
    device.mutationFrames();
    const refusal = { mutationId: row.mutationId, ok: false, error: { op: MutationOp.CREATE, code: ErrorCode.CONFLICT, message: "needs an owner" } };
    await device.onFrame(server({ case: "mutationResult", value: refusal }), 0);
    expect(device.mutations.queue.get(row.mutationId)?.state).toBe("failed");
    // The resend's second refusal changes nothing.
    expect((await device.onFrame(server({ case: "mutationResult", value: refusal }), 0)).notifications).toEqual([]);
    const retried = await device.onFrame(
      server({ case: "mutationResult", value: { mutationId: row.mutationId, ok: true, record: record("acc-7", 0, { name: "New" }), link: { tempId: row.id, id: "acc-7" } } }),
      0,
    );
    expect(retried.notifications).toEqual([expect.objectContaining({ mutationId: row.mutationId, outcome: expect.objectContaining({ status: "ok" }) })]);
    expect(device.mutations.queue.get(row.mutationId)).toBeUndefined();
    expect(device.view(ACCOUNTS)?.get("acc-7")?.fields).toEqual({ name: "New" });
  });
});

describe("engine: commands", () => {
  it("resyncs from 0, wipes, locks and logs out", async () => {
    const storage = new MemoryStorage();
    const device = await engine({}, storage);
    device.hello();
    await device.onFrame(welcome(), 0);
    await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 2n, page: 1n, upserts: [record("a", 2)] }) }), 0);
    const resync = await device.onFrame(server({ case: "command", value: { kind: CommandKind.RESYNC, reason: "ops" } }), 0);
    expect(framesOf(resync.frames, "subscribe")).toEqual([expect.objectContaining({ cursor: 0n })]);
    const lock = await device.onFrame(server({ case: "command", value: { kind: CommandKind.LOCK, reason: "stolen" } }), 0);
    expect(lock.stop).toEqual({ kind: "lock", reason: "stolen" });
    const logout = await device.onFrame(server({ case: "command", value: { kind: CommandKind.LOGOUT, reason: "bye" } }), 0);
    expect(logout.frames.map((frame) => frame.msg.case)).toEqual(["logout"]);
    expect((await storage.load()).session.sessionToken).toBeUndefined();
    device.mutations.queueChange("Account", "", "update", "a", { n: 1n });
    const wipe = await device.onFrame(server({ case: "command", value: { kind: CommandKind.WIPE, reason: "lost" } }), 0);
    expect(wipe.stop?.kind).toBe("wipe");
    const stored = await storage.load();
    expect(stored).toEqual({ session: { clientId: "c-1" }, partitions: [], mutations: [] });
  });

  const command = (kind: CommandKind, commandId: string) => server({ case: "command", value: { kind, reason: "ops", commandId } });

  it("acknowledges each command after acting on it, and acts on a command id once", async () => {
    const storage = new MemoryStorage();
    const device = await engine({}, storage);
    device.hello();
    await device.onFrame(welcome(), 0);
    const resync = await device.onFrame(command(CommandKind.RESYNC, "r-1"), 0);
    expect(resync.frames.map((frame) => frame.msg.case)).toEqual(["subscribe", "commandAck"]);
    expect(framesOf(resync.frames, "commandAck")).toEqual([expect.objectContaining({ commandId: "r-1" })]);
    const again = await device.onFrame(command(CommandKind.RESYNC, "r-1"), 0);
    expect(again.frames.map((frame) => frame.msg.case)).toEqual(["commandAck"]);
    const logout = await device.onFrame(command(CommandKind.LOGOUT, "l-1"), 0);
    expect(logout.frames.map((frame) => frame.msg.case)).toEqual(["commandAck", "logout"]);
    expect(logout.stop).toEqual({ kind: "logout", reason: "ops" });
    const stored = await storage.load();
    expect(stored.session.sessionToken).toBeUndefined();
    expect(stored.session.commandAcks).toEqual([
      { commandId: "r-1", sent: true },
      { commandId: "l-1", sent: true },
    ]);
  });

  it("wipes its store and queue but keeps its client id and the wipe's ack", async () => {
    const storage = new MemoryStorage();
    const device = await engine({}, storage);
    device.hello();
    await device.onFrame(welcome(), 0);
    await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 2n, page: 1n, upserts: [record("a", 2)] }) }), 0);
    device.mutations.queueChange("Account", "", "update", "a", { n: 1n });
    const wipe = await device.onFrame(command(CommandKind.WIPE, "w-1"), 0);
    expect(wipe.frames.map((frame) => frame.msg.case)).toEqual(["commandAck", "logout"]);
    expect(wipe.stop?.kind).toBe("wipe");
    expect(await storage.load()).toEqual({
      session: { clientId: "c-1", commandAcks: [{ commandId: "w-1", sent: true }] },
      partitions: [],
      mutations: [],
    });
  });

  it("acts on commands before a refused login and acknowledges them after the next Welcome", async () => {
    const storage = new MemoryStorage();
    const device = await engine({}, storage);
    device.hello();
    await device.onFrame(welcome(), 0);
    device.onDisconnect({ kind: "lost" });
    device.hello();
    // A locked device's Hello: its commands, then the refusal.
    const lock = await device.onFrame(command(CommandKind.LOCK, "k-1"), 0);
    expect(lock.frames).toEqual([]);
    expect(lock.stop).toBeUndefined();
    await device.onFrame(server({ case: "error", value: { code: ErrorCode.FORBIDDEN, message: "this device is locked", fatal: true } }), 0);
    expect(device.onDisconnect({ kind: "closed", code: 4003, reason: "" })).toEqual({
      stop: { kind: "forbidden", reason: "this device is locked" },
    });
    expect((await storage.load()).session.commandAcks).toEqual([{ commandId: "k-1", sent: false }]);

    // Unlocked, the app starts a client on the same store: the ack goes first.
    const restarted = await engine({}, storage);
    const hello = restarted.hello();
    expect(hello.msg.case === "hello" && hello.msg.value.credentials.case).toBe("login");
    expect(hello.msg.case === "hello" && hello.msg.value.clientId).toBe("c-1");
    const welcomed = await restarted.onFrame(welcome(), 0);
    expect(welcomed.frames[0]?.msg).toEqual(expect.objectContaining({ case: "commandAck" }));
    expect(framesOf(welcomed.frames, "commandAck")).toEqual([expect.objectContaining({ commandId: "k-1" })]);
    const resent = await restarted.onFrame(command(CommandKind.LOCK, "k-1"), 0);
    expect(resent.stop).toBeUndefined();
    expect(resent.frames.map((frame) => frame.msg.case)).toEqual(["commandAck"]);
  });
});

describe("engine: doSync", () => {
  it("starts new sync runs of all sources, one source, or only those with local changes", async () => {
    const device = await engine({ subscriptions: [{ source: "Account" }, { source: "Contact" }] });
    expect(await device.sync()).toEqual([]);
    device.hello();
    await device.onFrame(welcome(), 0);
    const all = await device.sync();
    expect(framesOf(all, "subscribe")).toEqual([
      expect.objectContaining({ source: "Account", key: "*" }),
      expect.objectContaining({ source: "Contact", key: "demo" }),
    ]);
    const one = await device.sync({ source: "Contact" });
    expect(framesOf(one, "subscribe")).toEqual([expect.objectContaining({ source: "Contact" })]);
    expect(framesOf(await device.sync({ changedOnly: true }), "subscribe")).toEqual([]);
    device.mutations.queueChange("Contact", "", "create", "", { name: "Ann" });
    const changed = await device.sync({ changedOnly: true });
    expect(changed.map((frame) => frame.msg.case)).toEqual(["mutate", "subscribe"]);
    expect(framesOf(changed, "subscribe")).toEqual([expect.objectContaining({ source: "Contact", key: "demo" })]);
  });
});

describe("engine: a store that fails", () => {
  it("drops and unsubscribes the partition instead of running ahead of its store", async () => {
    const storage = new MemoryStorage();
    const device = await engine({}, storage);
    device.hello();
    await device.onFrame(welcome(), 0);
    await device.onFrame(server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: 1n, page: 1n, upserts: [record("a", 1)] }) }), 0);
    const writePage = storage.writePage.bind(storage);
    let fail = true;
    storage.writePage = (source, key, write) => (fail && !write.clear ? Promise.reject(new Error("quota exceeded")) : writePage(source, key, write));
    const reaction = await device.onFrame(server({ case: "changes", value: changes({ from: 2n, to: 2n, page: 2n, upserts: [record("b", 2)] }) }), 0);
    expect(reaction.frames.map((frame) => frame.msg.case)).toEqual(["unsubscribe"]);
    expect(reaction.notifications[0]).toMatchObject({ type: "sync", status: "error", error: { code: "STORAGE" } });
    expect(device.partitionStates()[0]).toMatchObject({ phase: "failed", cursor: 0n });
    expect((await storage.load()).partitions[0]).toMatchObject({ cursor: 0n, records: [] });
    // Later pages of the old subscription are ignored; the next run starts from 0.
    expect((await device.onFrame(server({ case: "changes", value: changes({ from: 3n, to: 3n, page: 3n }) }), 0)).frames).toEqual([]);
    fail = false;
    expect(framesOf(await device.sync(), "subscribe")).toEqual([expect.objectContaining({ cursor: 0n })]);
  });
});

describe("engine: bad input", () => {
  it("refuses bad changes at once with typed errors", async () => {
    const device = await engine();
    const invalid = expect.objectContaining({ code: "INVALID" });
    expect(() => device.mutations.queueChange("", "", "create", "", {})).toThrow(invalid);
    expect(() => device.mutations.queueChange("Account", "", "update", "", { name: "x" })).toThrow(invalid);
    expect(() => device.mutations.queueChange("Account", "", "create", "", { n: 2n ** 64n })).toThrow(invalid);
    expect(() => device.mutations.queueChange("Account", "", "create", "", { nested: { a: 1 } as unknown as null })).toThrow(invalid);
    expect(() => device.mutations.queueChange("Account", "", "create", "", { "": "empty name" })).toThrow(invalid);
    expect(device.mutations.queue.mutations).toHaveLength(0);
  });
});
