import { describe, expect, it } from "vitest";
import { applyOptimistically, MutationQueue, TEMP_ID_PREFIX } from "../src/outbox.js";
import type { NewMutation } from "../src/outbox.js";
import { MemoryStorage } from "../src/storage.js";
import type { SyncRecord } from "../src/values.js";

function change(op: NewMutation["op"], id: string, fields: NewMutation["fields"] = {}, source = "Account"): NewMutation {
  return { source, key: "", op, id, fields, baseVersion: 0n };
}

const nothingInFlight = (): boolean => false;

async function reopen(storage: MemoryStorage, queue: MutationQueue): Promise<MutationQueue> {
  await queue.flushed();
  return new MutationQueue(storage, (await storage.load()).mutations);
}

describe("outbox", () => {
  it("keeps mutations in order across a reload, with their ids and states", async () => {
    const storage = new MemoryStorage();
    const queue = new MutationQueue(storage, []);
    const a = queue.push(change("create", `${TEMP_ID_PREFIX}1`, { name: "A" }));
    const b = queue.push(change("update", "acc-1", { name: "B", employees: 3n }));
    queue.markSent(a.mutationId);
    queue.markAcked(a.mutationId);
    const reloaded = await reopen(storage, queue);
    expect(reloaded.mutations.map((row) => [row.mutationId, row.state, row.sent])).toEqual([
      [a.mutationId, "acked", true],
      [b.mutationId, "pending", false],
    ]);
    expect(reloaded.mutations[1]?.fields).toEqual({ name: "B", employees: 3n });
    const c = reloaded.push(change("delete", "acc-2"));
    expect(c.position).toBeGreaterThan(b.position);
  });

  it("holds back mutations naming an unlinked temporary id, and a source behind them", () => {
    const queue = new MutationQueue(new MemoryStorage(), []);
    const create = queue.push(change("create", "tmp-a", { name: "A" }));
    const update = queue.push(change("update", "tmp-a", { name: "A2" }));
    const contact = queue.push(change("create", "tmp-c", { account: "tmp-a" }, "Contact"));
    const other = queue.push(change("update", "acc-9", { name: "later" }));
    expect(queue.nextToSend(nothingInFlight).map((row) => row.mutationId)).toEqual([create.mutationId]);
    expect(queue.applyLink("tmp-a", "acc-1", 4n)).toBe(true);
    const next = queue.nextToSend(nothingInFlight);
    expect(next.map((row) => row.mutationId)).toEqual([create.mutationId, update.mutationId, contact.mutationId, other.mutationId]);
    expect(update.id).toBe("acc-1");
    expect(update.baseVersion).toBe(4n);
    expect(contact.fields).toEqual({ account: "acc-1" });
    // The create keeps its temporary id: it is resent as first sent.
    expect(create.id).toBe("tmp-a");
    expect(create.linkedId).toBe("acc-1");
    expect(queue.applyLink("tmp-a", "acc-1", 4n)).toBe(false);
  });

  it("resends what the server may know, and skips what is in flight", () => {
    const queue = new MutationQueue(new MemoryStorage(), []);
    const a = queue.push(change("update", "acc-1", { n: 1n }));
    const b = queue.push(change("update", "acc-2", { n: 2n }));
    queue.markSent(a.mutationId);
    expect(queue.nextToSend((id) => id === a.mutationId).map((row) => row.mutationId)).toEqual([b.mutationId]);
    expect(queue.markSent(a.mutationId)).toBe(true);
    expect(queue.nextToSend(nothingInFlight)).toHaveLength(2);
  });

  it("stops a source behind a failure until the app retries or discards", async () => {
    const storage = new MemoryStorage();
    const queue = new MutationQueue(storage, []);
    const failing = queue.push(change("update", "acc-1", { name: "mine" }));
    const behind = queue.push(change("update", "acc-2", { name: "x" }));
    const elsewhere = queue.push(change("update", "c-1", { name: "y" }, "Contact"));
    queue.markFailed(failing.mutationId, {
      op: "update",
      code: "CONFLICT",
      message: "changed",
      current: { id: "acc-1", fields: { name: "theirs" }, version: 9n },
    });
    expect(queue.nextToSend(nothingInFlight).map((row) => row.mutationId)).toEqual([elsewhere.mutationId]);
    expect(queue.failedCount).toBe(1);
    const reloaded = await reopen(storage, queue);
    expect(reloaded.get(failing.mutationId)?.failure?.current?.version).toBe(9n);
    const newId = reloaded.retry(failing.mutationId);
    expect(newId).not.toBe(failing.mutationId);
    const retried = reloaded.get(newId);
    expect(retried?.baseVersion).toBe(9n);
    expect(retried?.position).toBe(failing.position);
    expect(reloaded.nextToSend(nothingInFlight).map((row) => row.mutationId)).toEqual([newId, behind.mutationId, elsewhere.mutationId]);
    expect(() => reloaded.retry(newId)).toThrow(/has not failed/);
  });

  it("discards a failed create with the queued changes of its record", () => {
    const queue = new MutationQueue(new MemoryStorage(), []);
    const create = queue.push(change("create", "tmp-a", { name: "A" }));
    const update = queue.push(change("update", "tmp-a", { name: "A2" }));
    const other = queue.push(change("update", "acc-1", { name: "kept" }));
    queue.markFailed(create.mutationId, { op: "create", code: "BAD_REQUEST", message: "no" });
    const dropped = queue.discard(create.mutationId).map((row) => row.mutationId);
    expect(dropped).toEqual([create.mutationId, update.mutationId]);
    expect(queue.mutations.map((row) => row.mutationId)).toEqual([other.mutationId]);
  });

  it("refuses mutations beyond its limit with a typed error", () => {
    const queue = new MutationQueue(new MemoryStorage(), [], 2);
    queue.push(change("update", "a"));
    queue.push(change("update", "b"));
    expect(() => queue.push(change("update", "c"))).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
  });

  it("applies mutations optimistically to the records the app sees", () => {
    const records = new Map<string, SyncRecord>([["acc-1", { id: "acc-1", fields: { name: "A", n: 1n }, version: 3n }]]);
    const queue = new MutationQueue(new MemoryStorage(), []);
    applyOptimistically(records, queue.push(change("update", "acc-1", { name: "B" })));
    applyOptimistically(records, queue.push(change("create", "tmp-x", { name: "X" })));
    applyOptimistically(records, queue.push(change("update", "missing", { name: "ignored" })));
    expect(records.get("acc-1")).toEqual({ id: "acc-1", fields: { name: "B", n: 1n }, version: 3n });
    expect(records.get("tmp-x")?.fields).toEqual({ name: "X" });
    expect(records.has("missing")).toBe(false);
    applyOptimistically(records, queue.push(change("delete", "acc-1")));
    expect(records.has("acc-1")).toBe(false);
  });
});
