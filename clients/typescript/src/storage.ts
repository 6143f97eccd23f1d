/**
 * The local store behind a client: a small interface so that an app can plug its own
 * (SQLite on React Native or wasm), with an in-memory implementation for Node and tests.
 * The IndexedDB implementation for browsers is in `indexeddb.ts`.
 *
 * Contract: each method's writes are atomic (all or nothing) and durable once its promise
 * resolves. {@link Storage.writePage} writes a page's records together with the partition's
 * cursor, so a store never holds a record ahead of or behind its cursor.
 *
 * @module
 */
import type { PageWrite } from "./replica.js";
import type { QueuedMutation } from "./outbox.js";
import { copyRecord } from "./values.js";
import type { SyncRecord } from "./values.js";

/** What the device remembers about its session between runs. */
export interface SessionState {
  /** The client id from the last Welcome. */
  clientId?: string;
  /** The session token from the last Welcome (absent after a logout or a refused token). */
  sessionToken?: string;
  /** The user the session acts as. */
  userId?: string;
  /** Each source's natural partition key from the last Welcome. */
  naturalKeys?: { [source: string]: string };
  /**
   * Operator commands the device acted on, oldest first: `sent` once their `CommandAck` went
   * out on an open session. Unsent acks go after the next Welcome; a command the server
   * sends again is only acknowledged again. Kept through a wipe.
   */
  commandAcks?: { commandId: string; sent: boolean }[];
}

/** One partition as stored. */
export interface StoredPartition {
  source: string;
  key: string;
  /** The sequence the stored records are at (0: nothing usable). */
  cursor: bigint;
  records: SyncRecord[];
}

/** Everything a store holds, as read when a client starts. */
export interface StoredState {
  session: SessionState;
  partitions: StoredPartition[];
  /** The queued mutations, in queue order. */
  mutations: QueuedMutation[];
}

/** The local store of one device. */
export interface Storage {
  /** Reads everything the store holds. */
  load(): Promise<StoredState>;
  /** Applies a page to a partition's records and sets its cursor, atomically. */
  writePage(source: string, key: string, write: PageWrite): Promise<void>;
  /** Stores (inserts or replaces, by position) and removes queued mutations, atomically. */
  writeMutations(put: readonly QueuedMutation[], remove: readonly number[]): Promise<void>;
  /** Stores the session state. */
  writeSession(session: SessionState): Promise<void>;
  /** Deletes everything (a wipe). */
  clear(): Promise<void>;
}

/** A store in memory: for Node, tests, and apps that keep nothing across restarts. */
export class MemoryStorage implements Storage {
  private session: SessionState = {};
  private readonly partitions = new Map<string, { source: string; key: string; cursor: bigint; records: Map<string, SyncRecord> }>();
  private readonly mutations = new Map<number, QueuedMutation>();

  load(): Promise<StoredState> {
    const partitions = [...this.partitions.values()].map((partition) => ({
      source: partition.source,
      key: partition.key,
      cursor: partition.cursor,
      records: [...partition.records.values()].map(copyRecord),
    }));
    const mutations = [...this.mutations.values()].sort((a, b) => a.position - b.position).map((row) => structuredClone(row));
    return Promise.resolve({ session: { ...this.session }, partitions, mutations });
  }

  writePage(source: string, key: string, write: PageWrite): Promise<void> {
    const id = JSON.stringify([source, key]);
    let stored = this.partitions.get(id);
    if (!stored) {
      stored = { source, key, cursor: 0n, records: new Map() };
      this.partitions.set(id, stored);
    }
    if (write.clear) stored.records.clear();
    for (const deleted of write.deletes) stored.records.delete(deleted);
    for (const record of write.upserts) stored.records.set(record.id, copyRecord(record));
    stored.cursor = write.cursor;
    return Promise.resolve();
  }

  writeMutations(put: readonly QueuedMutation[], remove: readonly number[]): Promise<void> {
    for (const position of remove) this.mutations.delete(position);
    for (const mutation of put) this.mutations.set(mutation.position, structuredClone(mutation));
    return Promise.resolve();
  }

  writeSession(session: SessionState): Promise<void> {
    this.session = { ...session };
    return Promise.resolve();
  }

  clear(): Promise<void> {
    this.session = {};
    this.partitions.clear();
    this.mutations.clear();
    return Promise.resolve();
  }
}
