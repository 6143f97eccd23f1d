/**
 * The reactive, framework-agnostic view of one source's records as the app sees them
 * (synced records with the device's own pending changes laid over them). Render from
 * `records()`, `get(id)` or `query(filter)`, and re-render when `subscribe`'s listener is
 * called.
 *
 * @module
 */
import { BlobRef } from "./values.js";
import type { SyncRecord, FieldValue } from "./values.js";

/** A record filter: a predicate, or field values that must all be equal. */
export type RecordFilter = ((record: SyncRecord) => boolean) | { [field: string]: FieldValue };

/** Where a source view gets its records from. */
export interface SourceHost {
  /** The records of the partition the view names, as the app sees them (undefined: none yet). */
  viewOf(source: string, key: string | undefined): Map<string, SyncRecord> | undefined;
}

function equalValues(a: FieldValue | undefined, b: FieldValue): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.length === b.length && a.every((byte, index) => byte === b[index]);
  }
  if (a instanceof BlobRef && b instanceof BlobRef) return a.equals(b);
  return a === b;
}

/** Returns a predicate for a filter. */
export function toPredicate(filter: RecordFilter): (record: SyncRecord) => boolean {
  if (typeof filter === "function") return filter;
  const wanted = Object.entries(filter);
  return (record) => wanted.every(([name, value]) => equalValues(record.fields[name], value));
}

/** One source's records as the app sees them, with change subscriptions. */
export class SourceView {
  private cache: SyncRecord[] | undefined;
  private map: Map<string, SyncRecord> | undefined;
  private readonly listeners = new Set<() => void>();

  /** Returns the view of `source` (partition `key`, or the natural one). */
  constructor(
    private readonly host: SourceHost,
    /** Source name. */
    readonly source: string,
    /** Partition key as given (undefined: the natural key). */
    readonly key: string | undefined,
  ) {}

  /** The records, sorted by id. The array is the same until something changes. */
  records(): readonly SyncRecord[] {
    if (!this.cache) {
      this.map = this.host.viewOf(this.source, this.key) ?? new Map<string, SyncRecord>();
      this.cache = [...this.map.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    }
    return this.cache;
  }

  /** The record with this id, if held. */
  get(id: string): SyncRecord | undefined {
    this.records();
    return this.map?.get(id);
  }

  /** The records matching `filter`, sorted by id. */
  query(filter: RecordFilter): SyncRecord[] {
    return this.records().filter(toPredicate(filter));
  }

  /** Number of records. */
  get size(): number {
    return this.records().length;
  }

  /** Calls `listener` after each change of the records; returns a function that stops it. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Marks the view stale and tells the listeners (called by the client). */
  invalidate(): void {
    this.cache = undefined;
    this.map = undefined;
    for (const listener of [...this.listeners]) listener();
  }
}
