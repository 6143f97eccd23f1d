/**
 * The browser store: IndexedDB, one database per device. Records are kept in chunks of up
 * to {@link CHUNK_RECORDS} under the key `[source, key, chunk number]` (one IndexedDB value
 * per record writes an order of magnitude slower), cursors under `[source, key]`, queued
 * mutations under their position and the session under `"session"`. An in-memory index
 * says which chunk holds each record; a page rewrites the chunks it touches. Each page is one
 * readwrite transaction over records and cursors, so a tab closed mid-page leaves both as
 * they were before it or both after.
 *
 * @module
 */
import type { PageWrite } from "./replica.js";
import type { QueuedMutation } from "./outbox.js";
import type { SessionState, Storage, StoredPartition, StoredState } from "./storage.js";
import { SynclineError } from "./errors.js";
import { reviveFields } from "./values.js";
import type { SyncRecord } from "./values.js";

const RECORDS = "records";
const PARTITIONS = "partitions";
const MUTATIONS = "mutations";
const META = "meta";
const SCHEMA_VERSION = 2;

/** Most records in one stored chunk. */
export const CHUNK_RECORDS = 500;

/** Where each record of a partition is stored. */
interface PartitionChunks {
  chunks: Map<number, Map<string, SyncRecord>>;
  chunkOf: Map<string, number>;
  /** The chunk new records go to while it has room. */
  open: number;
}

function emptyChunks(): PartitionChunks {
  return { chunks: new Map(), chunkOf: new Map(), open: 0 };
}

function partitionId(source: string, key: string): string {
  return JSON.stringify([source, key]);
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new SynclineError("STORAGE", `IndexedDB request failed: ${String(req.error)}`));
  });
}

/**
 * Issues a transaction's requests with `issue` and resolves when it commits. A request that
 * throws (e.g. a value that cannot be cloned) aborts the transaction, so none of its writes
 * land: an uncaught throw would otherwise let the requests issued before it commit.
 */
async function atomically(transaction: IDBTransaction, issue: () => void): Promise<void> {
  const finished = done(transaction);
  try {
    issue();
  } catch (error) {
    transaction.abort();
    await finished.catch(() => undefined);
    throw new SynclineError("STORAGE", `IndexedDB write refused: ${String(error)}`, { cause: error });
  }
  await finished;
}

function done(transaction: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    const fail = (): void => reject(new SynclineError("STORAGE", `IndexedDB transaction failed: ${String(transaction.error)}`));
    transaction.onerror = fail;
    transaction.onabort = fail;
  });
}

/** A store in IndexedDB, for browsers (and any runtime with an `indexedDB` global). */
export class IndexedDbStorage implements Storage {
  /** The chunk index of each partition, from `load` (partitions not in it are read first). */
  private readonly index = new Map<string, PartitionChunks>();

  private constructor(private readonly db: IDBDatabase) {}

  /** Opens (creating when missing) the database `name`; `factory` defaults to the global `indexedDB`. */
  static async open(name: string, factory: IDBFactory = globalThis.indexedDB): Promise<IndexedDbStorage> {
    const req = factory.open(name, SCHEMA_VERSION);
    req.onupgradeneeded = (event) => {
      const db = req.result;
      if (event.oldVersion < 2 && db.objectStoreNames.contains(RECORDS)) {
        // Version 1 kept one value per record: drop records and cursors (a resync follows).
        db.deleteObjectStore(RECORDS);
        db.deleteObjectStore(PARTITIONS);
      }
      for (const store of [RECORDS, PARTITIONS, MUTATIONS, META]) {
        if (!db.objectStoreNames.contains(store)) db.createObjectStore(store);
      }
    };
    return new IndexedDbStorage(await request(req));
  }

  /** Closes the database. */
  close(): void {
    this.db.close();
  }

  async load(): Promise<StoredState> {
    const transaction = this.db.transaction([RECORDS, PARTITIONS, MUTATIONS, META], "readonly");
    const [chunkKeys, chunks, partitionRows, mutations, session] = await Promise.all([
      request(transaction.objectStore(RECORDS).getAllKeys()),
      request(transaction.objectStore(RECORDS).getAll() as IDBRequest<SyncRecord[][]>),
      request(transaction.objectStore(PARTITIONS).getAll() as IDBRequest<{ source: string; key: string; cursor: bigint }[]>),
      request(transaction.objectStore(MUTATIONS).getAll() as IDBRequest<QueuedMutation[]>),
      request(transaction.objectStore(META).get("session") as IDBRequest<SessionState | undefined>),
    ]);
    const partitions = new Map<string, StoredPartition>();
    this.index.clear();
    for (const row of partitionRows) {
      partitions.set(partitionId(row.source, row.key), { source: row.source, key: row.key, cursor: row.cursor, records: [] });
      this.index.set(partitionId(row.source, row.key), emptyChunks());
    }
    chunkKeys.forEach((chunkKey, position) => {
      const [source, key, number] = chunkKey as [string, string, number];
      const id = partitionId(source, key);
      const partition = partitions.get(id);
      const index = this.index.get(id);
      if (!partition || !index) return;
      const chunk = new Map<string, SyncRecord>();
      for (const record of chunks[position] ?? []) {
        // Blob references come back from the structured clone as plain objects.
        reviveFields(record.fields);
        partition.records.push(record);
        chunk.set(record.id, record);
        index.chunkOf.set(record.id, number);
      }
      index.chunks.set(number, chunk);
      index.open = Math.max(index.open, number);
    });
    mutations.sort((a, b) => a.position - b.position);
    for (const mutation of mutations) reviveFields(mutation.fields);
    return { session: session ?? {}, partitions: [...partitions.values()], mutations };
  }

  async writePage(source: string, key: string, write: PageWrite): Promise<void> {
    const id = partitionId(source, key);
    // A clearing write (a snapshot's first page, a bulk file's records) starts from nothing:
    // the chunks held before are deleted in the same transaction, unread.
    let index = write.clear ? emptyChunks() : this.index.get(id);
    if (!index) index = await this.readChunks(source, key);
    const dirty = new Set<number>();
    for (const deleted of write.deletes) {
      const number = index.chunkOf.get(deleted);
      if (number === undefined) continue;
      index.chunkOf.delete(deleted);
      index.chunks.get(number)?.delete(deleted);
      dirty.add(number);
    }
    for (const record of write.upserts) {
      let number = index.chunkOf.get(record.id);
      if (number === undefined) {
        if ((index.chunks.get(index.open)?.size ?? 0) >= CHUNK_RECORDS) index.open += 1;
        number = index.open;
        index.chunkOf.set(record.id, number);
      }
      let chunk = index.chunks.get(number);
      if (!chunk) {
        chunk = new Map();
        index.chunks.set(number, chunk);
      }
      chunk.set(record.id, record);
      dirty.add(number);
    }
    // The index is trusted only once the transaction commits; a failed one is read anew.
    this.index.delete(id);
    const transaction = this.db.transaction([RECORDS, PARTITIONS], "readwrite");
    await atomically(transaction, () => {
      const records = transaction.objectStore(RECORDS);
      if (write.clear) records.delete(IDBKeyRange.bound([source, key], [source, key, []]));
      for (const number of dirty) {
        const chunk = index.chunks.get(number);
        if (chunk && chunk.size > 0) records.put([...chunk.values()], [source, key, number]);
        else records.delete([source, key, number]);
      }
      transaction.objectStore(PARTITIONS).put({ source, key, cursor: write.cursor }, [source, key]);
    });
    this.index.set(id, index);
  }

  /** Reads one partition's chunk index from the database. */
  private async readChunks(source: string, key: string): Promise<PartitionChunks> {
    const range = IDBKeyRange.bound([source, key], [source, key, []]);
    const transaction = this.db.transaction([RECORDS], "readonly");
    const [keys, chunks] = await Promise.all([
      request(transaction.objectStore(RECORDS).getAllKeys(range)),
      request(transaction.objectStore(RECORDS).getAll(range) as IDBRequest<SyncRecord[][]>),
    ]);
    const index = emptyChunks();
    keys.forEach((chunkKey, position) => {
      const number = (chunkKey as [string, string, number])[2];
      for (const record of chunks[position] ?? []) reviveFields(record.fields);
      index.chunks.set(number, new Map((chunks[position] ?? []).map((record) => [record.id, record])));
      for (const record of chunks[position] ?? []) index.chunkOf.set(record.id, number);
      index.open = Math.max(index.open, number);
    });
    return index;
  }

  async writeMutations(put: readonly QueuedMutation[], remove: readonly number[]): Promise<void> {
    const transaction = this.db.transaction([MUTATIONS], "readwrite");
    await atomically(transaction, () => {
      const store = transaction.objectStore(MUTATIONS);
      for (const position of remove) store.delete(position);
      for (const mutation of put) store.put(mutation, mutation.position);
    });
  }

  async writeSession(session: SessionState): Promise<void> {
    const transaction = this.db.transaction([META], "readwrite");
    await atomically(transaction, () => transaction.objectStore(META).put(session, "session"));
  }

  async clear(): Promise<void> {
    const transaction = this.db.transaction([RECORDS, PARTITIONS, MUTATIONS, META], "readwrite");
    this.index.clear();
    await atomically(transaction, () => {
      for (const store of [RECORDS, PARTITIONS, MUTATIONS, META]) transaction.objectStore(store).clear();
    });
  }
}
