/**
 * What the app sees of a partition is layered: the replica (exactly what the server's log
 * says, so its checksum keeps verifying), then records merged from searches (where the
 * replica has none), then records learned from mutation results ahead of the log, then the
 * queued mutations replayed in order. Dropping a mutation therefore rolls its change back.
 *
 * @module
 */
import type { PartitionReplica } from "./replica.js";
import type { SyncRecord } from "./values.js";

/** What the device learned about a record from a mutation's result. */
type Confirmed = { kind: "record"; record: SyncRecord } | { kind: "deleted" };

/** Returns true once the replica knows as much as `confirmed`. */
function isSuperseded(id: string, confirmed: Confirmed, replica: PartitionReplica | undefined): boolean {
  if (!replica) return false;
  if (confirmed.kind === "deleted") return !replica.records.has(id);
  const held = replica.records.get(id);
  if (held && held.version >= confirmed.record.version) return true;
  return confirmed.record.version > 0n && replica.cursor >= confirmed.record.version;
}

/**
 * Records learned from mutation results that the partitions' logs have not brought yet, so
 * that a succeeded change does not flicker back between its result and the log.
 */
export class ConfirmedRecords {
  private readonly byPartition = new Map<string, Map<string, Confirmed>>();

  /** Remembers a record the backend stored (`undefined`: deleted). */
  insert(partition: string, id: string, record: SyncRecord | undefined): void {
    let records = this.byPartition.get(partition);
    if (!records) {
      records = new Map();
      this.byPartition.set(partition, records);
    }
    const known = records.get(id);
    if (record && known?.kind === "record" && record.version < known.record.version) return;
    records.set(id, record ? { kind: "record", record } : { kind: "deleted" });
  }

  /** True when nothing is remembered for `partition`. */
  isEmptyFor(partition: string): boolean {
    return (this.byPartition.get(partition)?.size ?? 0) === 0;
  }

  /** The version of a record as the backend last reported it, if still ahead of the replica. */
  version(partition: string, id: string, replica: PartitionReplica | undefined): bigint | undefined {
    const confirmed = this.byPartition.get(partition)?.get(id);
    if (!confirmed || confirmed.kind === "deleted" || isSuperseded(id, confirmed, replica)) return undefined;
    return confirmed.record.version;
  }

  /** Forgets what the replica now knows as well. */
  prune(partition: string, replica: PartitionReplica): void {
    const records = this.byPartition.get(partition);
    if (!records) return;
    for (const [id, confirmed] of records) if (isSuperseded(id, confirmed, replica)) records.delete(id);
    if (records.size === 0) this.byPartition.delete(partition);
  }

  /** Lays what is not superseded over `records`. */
  apply(partition: string, replica: PartitionReplica | undefined, records: Map<string, SyncRecord>): void {
    const confirmed = this.byPartition.get(partition);
    if (!confirmed) return;
    for (const [id, entry] of confirmed) {
      if (isSuperseded(id, entry, replica)) continue;
      if (entry.kind === "record") records.set(id, entry.record);
      else records.delete(id);
    }
  }

  /** Forgets everything. */
  clear(): void {
    this.byPartition.clear();
  }
}

/** Records merged from search results (the channel asked for a merge), by partition. */
export class SearchMerges {
  private readonly merged = new Map<string, Map<string, SyncRecord>>();

  /** Merges search results into `partition`. */
  merge(partition: string, records: readonly SyncRecord[]): void {
    let held = this.merged.get(partition);
    if (!held) {
      held = new Map();
      this.merged.set(partition, held);
    }
    for (const record of records) held.set(record.id, record);
  }

  /** True when nothing was merged into `partition`. */
  isEmptyFor(partition: string): boolean {
    return (this.merged.get(partition)?.size ?? 0) === 0;
  }

  /** Lays merged records over `records` where the replica has none. */
  apply(partition: string, replica: PartitionReplica | undefined, records: Map<string, SyncRecord>): void {
    const merged = this.merged.get(partition);
    if (!merged) return;
    for (const [id, record] of merged) if (!replica?.records.has(id)) records.set(id, record);
  }

  /** Drops what was merged into `partition` (its replica is complete now). */
  forget(partition: string): void {
    this.merged.delete(partition);
  }

  /** Forgets everything. */
  clear(): void {
    this.merged.clear();
  }
}
