/**
 * A device's copy of one partition and the page rules of `device.proto`, as a pure `apply`
 * (the same rules as the Rust library's `PartitionReplica`): snapshot pages (the first with
 * `reset`, the cursor moving to `to` only after `snapshot_done`), log pages and live pushes
 * (a page ending at or before the cursor is a duplicate; one starting after `cursor + 1`
 * leaves a gap; one overlapping the cursor is applied), deletes before upserts, and the
 * checksum check at `to`.
 *
 * @module
 */
import type { Changes } from "./gen/syncline/v1/device_pb.js";
import { Checksum } from "./checksum.js";
import { fromRecord } from "./values.js";
import type { SyncRecord } from "./values.js";

/** The device's and the server's view of a partition disagree. */
export interface ChecksumMismatch {
  cursor: bigint;
  expectedTotal: bigint;
  expectedChecksum: bigint;
  localTotal: bigint;
  localChecksum: bigint;
}

/** What a page changed, for the store: written atomically with the new cursor. */
export interface PageWrite {
  /** Drop everything held of the partition first (a snapshot's first page). */
  clear: boolean;
  /** Ids removed. */
  deletes: string[];
  /** Records created or replaced. */
  upserts: SyncRecord[];
  /** The cursor after the page (0 while a snapshot is incomplete). */
  cursor: bigint;
}

/** What {@link PartitionReplica.apply} did with a page. */
export type ApplyOutcome =
  | { kind: "applied"; changes: number; verified: boolean; write: PageWrite }
  | { kind: "duplicate" }
  | { kind: "gap"; expectedFrom: bigint; from: bigint }
  | { kind: "unexpected"; reason: string }
  | { kind: "mismatch"; mismatch: ChecksumMismatch; write: PageWrite };

/** A device's copy of one partition: records, cursor, checksum and total. */
export class PartitionReplica {
  readonly records = new Map<string, SyncRecord>();
  private cursorValue = 0n;
  private readonly sum = new Checksum();
  /** The sequence of the snapshot being received, between its `reset` and `snapshot_done`. */
  private snapshot: bigint | undefined;

  /** Returns a replica holding `records` at `cursor` (e.g. restored from the store). */
  static restore(cursor: bigint, records: Iterable<SyncRecord>): PartitionReplica {
    const replica = new PartitionReplica();
    for (const record of records) {
      replica.records.set(record.id, record);
      replica.sum.add(record.id, record.version);
    }
    replica.cursorValue = cursor;
    return replica;
  }

  /** The sequence the replica has applied (0: nothing, or a snapshot still arriving). */
  get cursor(): bigint {
    return this.cursorValue;
  }

  /** Number of records held. */
  get total(): bigint {
    return BigInt(this.records.size);
  }

  /** The checksum over the records held. */
  get checksum(): bigint {
    return this.sum.value;
  }

  /** True between a snapshot's first page and its last. */
  get receivingSnapshot(): boolean {
    return this.snapshot !== undefined;
  }

  /** Drops every record and returns to cursor 0. */
  clear(): void {
    this.records.clear();
    this.cursorValue = 0n;
    this.sum.value = 0n;
    this.snapshot = undefined;
  }

  /** Applies one `Changes` frame following the page rules of `device.proto`. */
  apply(changes: Changes): ApplyOutcome {
    if (changes.snapshot) return this.applySnapshotPage(changes);
    if (changes.to < changes.from) return { kind: "unexpected", reason: "a log page ends before it starts" };
    if (changes.to <= this.cursorValue) return { kind: "duplicate" };
    if (this.snapshot !== undefined) return { kind: "unexpected", reason: "a log page arrived during a snapshot" };
    if (changes.from > this.cursorValue + 1n) {
      return { kind: "gap", expectedFrom: this.cursorValue + 1n, from: changes.from };
    }
    const write = this.applyRecords(changes, false);
    this.cursorValue = changes.to;
    write.cursor = changes.to;
    const count = write.deletes.length + write.upserts.length;
    if (changes.checksum === 0n) return { kind: "applied", changes: count, verified: false, write };
    const mismatch = this.verify(changes.total, changes.checksum);
    if (mismatch) return { kind: "mismatch", mismatch, write };
    return { kind: "applied", changes: count, verified: true, write };
  }

  /** Compares the replica with a total and checksum the server sent for its cursor. */
  verify(total: bigint, checksum: bigint): ChecksumMismatch | undefined {
    if (this.total === total && this.sum.value === checksum) return undefined;
    return {
      cursor: this.cursorValue,
      expectedTotal: total,
      expectedChecksum: checksum,
      localTotal: this.total,
      localChecksum: this.sum.value,
    };
  }

  private applySnapshotPage(changes: Changes): ApplyOutcome {
    let clear = false;
    if (changes.reset) {
      this.clear();
      this.snapshot = changes.to;
      clear = true;
    }
    if (this.snapshot === undefined) return { kind: "unexpected", reason: "a snapshot page without reset" };
    if (this.snapshot !== changes.to) return { kind: "unexpected", reason: "the snapshot's sequence changed" };
    const write = this.applyRecords(changes, clear);
    if (changes.snapshotDone) {
      this.snapshot = undefined;
      this.cursorValue = changes.to;
    }
    write.cursor = this.cursorValue;
    return { kind: "applied", changes: write.deletes.length + write.upserts.length, verified: false, write };
  }

  /** Applies deletes, then upserts, keeping the checksum in step. */
  private applyRecords(changes: Changes, clear: boolean): PageWrite {
    for (const id of changes.deletes) {
      const old = this.records.get(id);
      if (old) {
        this.records.delete(id);
        this.sum.remove(old.id, old.version);
      }
    }
    const upserts = changes.upserts.map(fromRecord);
    for (const record of upserts) {
      const old = this.records.get(record.id);
      if (old) this.sum.remove(old.id, old.version);
      this.records.set(record.id, record);
      this.sum.add(record.id, record.version);
    }
    return { clear, deletes: [...changes.deletes], upserts, cursor: this.cursorValue };
  }
}
