import { describe, expect, it } from "vitest";
import { PartitionReplica } from "../src/replica.js";
import { changes, checksumOf, record } from "./helpers.js";

describe("partition replica: the page rules", () => {
  it("applies a snapshot across pages and moves the cursor only when it is done", () => {
    const replica = new PartitionReplica();
    const first = replica.apply(changes({ snapshot: true, reset: true, to: 10n, upserts: [record("a", 3), record("b", 10)], page: 1n }));
    expect(first.kind).toBe("applied");
    expect(first.kind === "applied" && first.write).toMatchObject({ clear: true, cursor: 0n });
    expect(replica.cursor).toBe(0n);
    expect(replica.receivingSnapshot).toBe(true);
    const last = replica.apply(changes({ snapshot: true, snapshotDone: true, to: 10n, upserts: [record("c", 7)], page: 2n }));
    expect(last.kind === "applied" && last.write.cursor).toBe(10n);
    expect(replica.cursor).toBe(10n);
    expect(replica.total).toBe(3n);
    expect(replica.verify(3n, checksumOf([{ id: "a", version: 3n }, { id: "b", version: 10n }, { id: "c", version: 7n }]))).toBeUndefined();
  });

  it("refuses snapshot pages that do not fit the snapshot being received", () => {
    const replica = new PartitionReplica();
    expect(replica.apply(changes({ snapshot: true, to: 5n })).kind).toBe("unexpected");
    replica.apply(changes({ snapshot: true, reset: true, to: 5n }));
    expect(replica.apply(changes({ snapshot: true, to: 6n })).kind).toBe("unexpected");
    expect(replica.apply(changes({ from: 6n, to: 6n })).kind).toBe("unexpected");
  });

  it("treats log pages as duplicates, gaps or overlaps, deletes before upserts", () => {
    const replica = PartitionReplica.restore(5n, [{ id: "a", fields: {}, version: 5n }]);
    expect(replica.apply(changes({ from: 4n, to: 5n })).kind).toBe("duplicate");
    expect(replica.apply(changes({ from: 8n, to: 9n }))).toEqual({ kind: "gap", expectedFrom: 6n, from: 8n });
    expect(replica.apply(changes({ from: 7n, to: 6n })).kind).toBe("unexpected");
    // Overlapping the cursor: applied, the net state at `to`.
    const outcome = replica.apply(changes({ from: 5n, to: 7n, deletes: ["a"], upserts: [record("a", 7, { n: 1n })] }));
    expect(outcome.kind).toBe("applied");
    expect(replica.records.get("a")?.fields).toEqual({ n: 1n });
    expect(replica.cursor).toBe(7n);
  });

  it("checks the checksum a log page carries at its `to`", () => {
    const replica = PartitionReplica.restore(1n, [{ id: "a", fields: {}, version: 1n }]);
    const good = checksumOf([{ id: "a", version: 1n }, { id: "b", version: 2n }]);
    const applied = replica.apply(changes({ from: 2n, to: 2n, upserts: [record("b", 2)], total: 2n, checksum: good }));
    expect(applied).toMatchObject({ kind: "applied", verified: true });
    const bad = replica.apply(changes({ from: 3n, to: 3n, upserts: [record("c", 3)], total: 3n, checksum: 12345n }));
    expect(bad.kind).toBe("mismatch");
    expect(bad.kind === "mismatch" && bad.mismatch.localTotal).toBe(3n);
  });
});
