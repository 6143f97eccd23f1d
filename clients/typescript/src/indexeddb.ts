/**
 * The browser store: IndexedDB, one database per device. Records are kept under the key
 * `[source, key, id]`, cursors under `[source, key]`, queued mutations under their position
 * and the session under `"session"`. Each page is one readwrite transaction over records
 * and cursors, so a tab closed mid-page leaves both as they were before it or both after.
 *
 * @module
 */
import type { PageWrite } from "./replica.js";
import type { QueuedMutation } from "./outbox.js";
import type { SessionState, Storage, StoredPartition, StoredState } from "./storage.js";
import { SynclineError } from "./errors.js";
import type { SyncRecord } from "./values.js";

const RECORDS = "records";
const PARTITIONS = "partitions";
const MUTATIONS = "mutations";
const META = "meta";
const SCHEMA_VERSION = 1;

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new SynclineError("STORAGE", `IndexedDB request failed: ${String(req.error)}`));
  });
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
  private constructor(private readonly db: IDBDatabase) {}

  /** Opens (creating when missing) the database `name`; `factory` defaults to the global `indexedDB`. */
  static async open(name: string, factory: IDBFactory = globalThis.indexedDB): Promise<IndexedDbStorage> {
    const req = factory.open(name, SCHEMA_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
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
    const [recordKeys, records, partitionRows, mutations, session] = await Promise.all([
      request(transaction.objectStore(RECORDS).getAllKeys()),
      request(transaction.objectStore(RECORDS).getAll() as IDBRequest<SyncRecord[]>),
      request(transaction.objectStore(PARTITIONS).getAll() as IDBRequest<{ source: string; key: string; cursor: bigint }[]>),
      request(transaction.objectStore(MUTATIONS).getAll() as IDBRequest<QueuedMutation[]>),
      request(transaction.objectStore(META).get("session") as IDBRequest<SessionState | undefined>),
    ]);
    const partitions = new Map<string, StoredPartition>();
    for (const row of partitionRows) {
      partitions.set(JSON.stringify([row.source, row.key]), { source: row.source, key: row.key, cursor: row.cursor, records: [] });
    }
    recordKeys.forEach((recordKey, index) => {
      const [source, key] = recordKey as [string, string, string];
      const record = records[index];
      const partition = partitions.get(JSON.stringify([source, key]));
      if (partition && record) partition.records.push(record);
    });
    mutations.sort((a, b) => a.position - b.position);
    return { session: session ?? {}, partitions: [...partitions.values()], mutations };
  }

  async writePage(source: string, key: string, write: PageWrite): Promise<void> {
    const transaction = this.db.transaction([RECORDS, PARTITIONS], "readwrite");
    const finished = done(transaction);
    const records = transaction.objectStore(RECORDS);
    if (write.clear) records.delete(IDBKeyRange.bound([source, key], [source, key, []]));
    for (const id of write.deletes) records.delete([source, key, id]);
    for (const record of write.upserts) records.put(record, [source, key, record.id]);
    transaction.objectStore(PARTITIONS).put({ source, key, cursor: write.cursor }, [source, key]);
    await finished;
  }

  async writeMutations(put: readonly QueuedMutation[], remove: readonly number[]): Promise<void> {
    const transaction = this.db.transaction([MUTATIONS], "readwrite");
    const finished = done(transaction);
    const store = transaction.objectStore(MUTATIONS);
    for (const position of remove) store.delete(position);
    for (const mutation of put) store.put(mutation, mutation.position);
    await finished;
  }

  async writeSession(session: SessionState): Promise<void> {
    const transaction = this.db.transaction([META], "readwrite");
    const finished = done(transaction);
    transaction.objectStore(META).put(session, "session");
    await finished;
  }

  async clear(): Promise<void> {
    const transaction = this.db.transaction([RECORDS, PARTITIONS, MUTATIONS, META], "readwrite");
    const finished = done(transaction);
    for (const store of [RECORDS, PARTITIONS, MUTATIONS, META]) transaction.objectStore(store).clear();
    await finished;
  }
}
