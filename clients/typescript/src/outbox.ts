/**
 * The device's offline mutation queue: creates, updates and deletes the app made, kept in
 * the order they were made until the server reports their outcome, and persisted through
 * the {@link Storage} (every change is in memory at once and written in order).
 *
 * Policy (the same as the Rust library's `outbox`):
 * - **Identity.** Each mutation gets a random 128-bit `mutationId`, a create a temporary
 *   record id `tmp-<hex>`. A mutation is sent with the same id until it has a result: the
 *   server answers a known id from its first outcome and never hands it to the backend twice.
 * - **Order.** Mutations go out in queue order. One that may be known to the server (it was
 *   sent before) is always resent after a reconnect. One never sent waits while an earlier
 *   mutation of the same source has failed and is unresolved, or while its record id or a
 *   string field value is the temporary id of a create not linked yet; once one mutation of
 *   a source waits, the later ones of that source wait behind it.
 * - **Links.** When a create is linked (temporary id to backend id), later mutations of its
 *   source that target the temporary id are retargeted (a base version of 0 becomes the
 *   created record's version when known), and string field values equal to the temporary
 *   id are rewritten in every queued mutation. The create keeps its temporary id.
 * - **Failures.** A failed mutation stays queued with its error until the app retries it
 *   (new mutation id, same place; after a CONFLICT with the current record, based on that
 *   record's version) or discards it (its optimistic change rolls back; a discarded create
 *   takes the queued changes of its temporary record with it).
 *
 * @module
 */
import { SynclineError } from "./errors.js";
import type { ProtocolErrorCode } from "./errors.js";
import type { Storage } from "./storage.js";
import type { Fields, SyncRecord } from "./values.js";

/** Prefix of the temporary record ids the device gives its creates. */
export const TEMP_ID_PREFIX = "tmp-";

/** Default limit on queued mutations. */
export const DEFAULT_MAX_QUEUED_MUTATIONS = 10_000;

/** Create, update or delete. */
export type MutationKind = "create" | "update" | "delete";

/** Where a queued mutation stands. */
export type MutationState = "pending" | "acked" | "failed";

/** Why a mutation failed, as the server reported it. */
export interface MutationFailure {
  /** Which kind of mutation failed. */
  op: MutationKind;
  /** `CONFLICT`, `NOT_FOUND`, `BAD_REQUEST`, ... */
  code: ProtocolErrorCode;
  /** The backend's message. */
  message: string;
  /** On CONFLICT: the backend's current record. */
  current?: SyncRecord;
}

/** One mutation in the queue. */
export interface QueuedMutation {
  /** Place in the queue; increases with each mutation queued. */
  position: number;
  /** The id the server deduplicates by. */
  mutationId: string;
  source: string;
  /** Partition key as given; empty means the source's natural key. */
  key: string;
  op: MutationKind;
  /** The record id (for a create, its temporary id). */
  id: string;
  /** The fields to set (creates and updates). */
  fields: Fields;
  /** The record version the change is based on (0 for creates). */
  baseVersion: bigint;
  state: MutationState;
  /** Whether it was ever sent (the server may know it). */
  sent: boolean;
  /** For a create: the backend's id once linked. */
  linkedId?: string;
  /** Set in state `failed`. */
  failure?: MutationFailure;
}

/** A mutation to add to the queue. */
export type NewMutation = Pick<QueuedMutation, "source" | "key" | "op" | "id" | "fields" | "baseVersion">;

/** Returns the id a mutation's record has locally: the backend's id once a create is linked. */
export function localId(mutation: QueuedMutation): string {
  return mutation.linkedId ?? mutation.id;
}

/** Returns 128 random bits as 32 lowercase hex digits. */
export function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Returns a new temporary record id. */
export function tempId(): string {
  return TEMP_ID_PREFIX + randomId();
}

function isUnlinkedCreate(row: QueuedMutation): boolean {
  return row.op === "create" && row.linkedId === undefined;
}

function referencesAny(row: QueuedMutation, ids: ReadonlySet<string>): boolean {
  if (ids.has(row.id)) return true;
  return Object.values(row.fields).some((value) => typeof value === "string" && ids.has(value));
}

function cloneRow(row: QueuedMutation): QueuedMutation {
  return { ...row, fields: { ...row.fields } };
}

/** The persisted, ordered queue of the device's unfinished mutations. */
export class MutationQueue {
  private rows: QueuedMutation[];
  private nextPosition: number;
  private writes: Promise<void> = Promise.resolve();
  private writeError: unknown;

  /** Returns a queue holding `rows` (as loaded from `storage`), writing changes to `storage`. */
  constructor(
    private readonly storage: Storage,
    rows: QueuedMutation[],
    private readonly limit = DEFAULT_MAX_QUEUED_MUTATIONS,
  ) {
    this.rows = rows.map(cloneRow).sort((a, b) => a.position - b.position);
    this.nextPosition = this.rows.reduce((max, row) => Math.max(max, row.position), 0) + 1;
  }

  /** The queued mutations in order. */
  get mutations(): readonly QueuedMutation[] {
    return this.rows;
  }

  /** Returns the queued mutation with this id. */
  get(mutationId: string): QueuedMutation | undefined {
    return this.rows.find((row) => row.mutationId === mutationId);
  }

  /** Mutations waiting for a result (pending or acked). */
  get unresolvedCount(): number {
    return this.rows.filter((row) => row.state !== "failed").length;
  }

  /** Mutations that failed and wait for the app. */
  get failedCount(): number {
    return this.rows.filter((row) => row.state === "failed").length;
  }

  /** Resolves once every change so far is stored; rejects when a write failed. */
  async flushed(): Promise<void> {
    await this.writes;
    if (this.writeError !== undefined) {
      const error = this.writeError;
      this.writeError = undefined;
      throw new SynclineError("STORAGE", "storing the mutation queue failed", { cause: error });
    }
  }

  /** Appends a mutation in state pending under a new mutation id and returns it. */
  push(mutation: NewMutation): QueuedMutation {
    if (this.rows.length >= this.limit) {
      throw new SynclineError("RESOURCE_EXHAUSTED", `the mutation queue is full (${this.limit} mutations)`);
    }
    const row: QueuedMutation = {
      ...mutation,
      fields: { ...mutation.fields },
      position: this.nextPosition++,
      mutationId: randomId(),
      state: "pending",
      sent: false,
    };
    this.rows.push(row);
    this.persist([row], []);
    return row;
  }

  /** Records that a mutation went out; returns whether it had been sent before. */
  markSent(mutationId: string): boolean {
    const row = this.require(mutationId);
    if (row.sent) return true;
    row.sent = true;
    this.persist([row], []);
    return false;
  }

  /** Records the server's MutationAck; returns true when the mutation was pending until now. */
  markAcked(mutationId: string): boolean {
    const row = this.require(mutationId);
    if (row.state !== "pending") return false;
    row.state = "acked";
    row.sent = true;
    this.persist([row], []);
    return true;
  }

  /** Records a failed result. */
  markFailed(mutationId: string, failure: MutationFailure): void {
    const row = this.require(mutationId);
    row.state = "failed";
    row.sent = true;
    row.failure = failure;
    this.persist([row], []);
  }

  /** Removes a mutation that succeeded and returns it. */
  complete(mutationId: string): QueuedMutation {
    const row = this.require(mutationId);
    this.rows = this.rows.filter((other) => other !== row);
    this.persist([], [row.position]);
    return row;
  }

  /**
   * Links the temporary id of a queued create to the backend's id (see the module docs).
   * Returns false, changing nothing, when no unlinked create has that temporary id.
   */
  applyLink(tempIdValue: string, id: string, version: bigint | undefined): boolean {
    const create = this.rows.find((row) => isUnlinkedCreate(row) && row.id === tempIdValue && row.id !== id);
    if (!create) return false;
    create.linkedId = id;
    const changed = [create];
    for (const row of this.rows) {
      if (row === create) continue;
      let touched = false;
      if (row.source === create.source && row.id === tempIdValue) {
        row.id = id;
        if (row.baseVersion === 0n && row.op !== "create") row.baseVersion = version ?? 0n;
        touched = true;
      }
      for (const [name, value] of Object.entries(row.fields)) {
        if (value === tempIdValue) {
          row.fields[name] = id;
          touched = true;
        }
      }
      if (touched) changed.push(row);
    }
    this.persist(changed, []);
    return true;
  }

  /** Queues a failed mutation again under a new mutation id, at its place; returns that id. */
  retry(mutationId: string): string {
    const row = this.requireFailed(mutationId);
    const failure = row.failure;
    if (failure?.code === "CONFLICT" && failure.current && row.op !== "create") {
      row.baseVersion = failure.current.version;
    }
    row.mutationId = randomId();
    row.state = "pending";
    row.sent = false;
    delete row.failure;
    this.persist([row], []);
    return row.mutationId;
  }

  /** Drops a failed mutation (and, for a create, the queued changes of its temporary record). */
  discard(mutationId: string): QueuedMutation[] {
    const discarded = this.requireFailed(mutationId);
    const cascade = (row: QueuedMutation): boolean =>
      discarded.op === "create" &&
      row.position > discarded.position &&
      row.source === discarded.source &&
      row.id === discarded.id;
    const dropped = this.rows.filter((row) => row === discarded || cascade(row));
    this.rows = this.rows.filter((row) => !dropped.includes(row));
    this.persist(
      [],
      dropped.map((row) => row.position),
    );
    return dropped;
  }

  /** Drops every mutation (the device was wiped; the store is cleared separately). */
  clear(): void {
    this.rows = [];
  }

  /**
   * Returns the mutations to send now, in queue order, following the ordering rules;
   * `inFlight(id)` says whether a mutation was already sent on this connection.
   */
  nextToSend(inFlight: (mutationId: string) => boolean): QueuedMutation[] {
    const unlinked = new Set(this.rows.filter(isUnlinkedCreate).map((row) => row.id));
    const waitingSources = new Set<string>();
    const next: QueuedMutation[] = [];
    for (const row of this.rows) {
      if (row.state === "failed") {
        waitingSources.add(row.source);
        continue;
      }
      if (inFlight(row.mutationId)) continue;
      if (row.sent) {
        next.push(row);
        continue;
      }
      if (waitingSources.has(row.source)) continue;
      let others: ReadonlySet<string> = unlinked;
      if (isUnlinkedCreate(row)) {
        const without = new Set(unlinked);
        without.delete(row.id);
        others = without;
      }
      if (referencesAny(row, others)) {
        waitingSources.add(row.source);
        continue;
      }
      next.push(row);
    }
    return next;
  }

  private require(mutationId: string): QueuedMutation {
    const row = this.get(mutationId);
    if (!row) throw new SynclineError("NOT_FOUND", `no queued mutation ${mutationId}`);
    return row;
  }

  private requireFailed(mutationId: string): QueuedMutation {
    const row = this.require(mutationId);
    if (row.state !== "failed") throw new SynclineError("INVALID", `mutation ${mutationId} has not failed`);
    return row;
  }

  /** Writes copies of `put` and removes `remove`, after every earlier write. */
  private persist(put: QueuedMutation[], remove: number[]): void {
    const copies = put.map(cloneRow);
    this.writes = this.writes
      .then(() => this.storage.writeMutations(copies, remove))
      .catch((error: unknown) => {
        this.writeError = error;
      });
  }
}

/**
 * Applies a queued mutation to a partition's records as the device shows them: a create
 * inserts its record (under the backend id once linked, merged over the backend's copy),
 * an update merges its fields into the record if held, a delete removes it.
 */
export function applyOptimistically(records: Map<string, SyncRecord>, mutation: QueuedMutation): void {
  const id = localId(mutation);
  switch (mutation.op) {
    case "create": {
      const held = records.get(id);
      records.set(id, { id, fields: { ...held?.fields, ...mutation.fields }, version: held?.version ?? 0n });
      break;
    }
    case "update": {
      const held = records.get(id);
      if (held) records.set(id, { id, fields: { ...held.fields, ...mutation.fields }, version: held.version });
      break;
    }
    case "delete":
      records.delete(id);
      break;
  }
}
