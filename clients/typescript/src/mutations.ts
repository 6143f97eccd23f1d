/**
 * The engine's part of device-side writes: queuing creates, updates and deletes, sending
 * them as `Mutate` (in the order and under the rules of the outbox), and handling
 * `MutationAck`, `MutationResult` and the `links` of `Changes`. Results are not pushed after
 * a reconnect: after each Welcome the device resends every mutation the server may know and
 * has not answered, under the same `mutationId`, and the server answers from its records.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { ClientFrame, MutationResult } from "./gen/syncline/v1/device_pb.js";
import { ClientFrameSchema, MutationOp } from "./gen/syncline/v1/device_pb.js";
import { errorCodeName, SynclineError } from "./errors.js";
import { ConfirmedRecords } from "./layers.js";
import type { MutationNotification, MutationOutcome } from "./notifications.js";
import { applyOptimistically, localId, tempId } from "./outbox.js";
import type { MutationKind, QueuedMutation , MutationQueue} from "./outbox.js";
import type { PartitionReplica } from "./replica.js";
import { checkFields, fromRecord, toValues } from "./values.js";
import type { Fields, SyncRecord } from "./values.js";

const OPS: { [kind in MutationKind]: MutationOp } = {
  create: MutationOp.CREATE,
  update: MutationOp.UPDATE,
  delete: MutationOp.DELETE,
};

/** What the mutation flow needs to know of the engine. */
export interface MutationHost {
  /** The partition key string of a (source, key as given) pair, once the natural key is known. */
  resolvePartition(source: string, key: string): string | undefined;
  /** The replica of a partition, if subscribed. */
  replica(partition: string): PartitionReplica | undefined;
}

/** The device's queued writes and what it learned from their results. */
export class Mutations {
  /** Records learned from results that the logs have not brought yet. */
  readonly confirmed = new ConfirmedRecords();
  /** Mutations sent on this connection and not answered yet. */
  private readonly inFlight = new Set<string>();

  constructor(
    readonly queue: MutationQueue,
    private readonly host: MutationHost,
  ) {}

  /** Forgets what was in flight (a connection ended or starts). */
  resetConnection(): void {
    this.inFlight.clear();
  }

  /** Queues a change and returns the queued row. Ids of linked creates are replaced by the real ids. */
  queueChange(source: string, key: string, op: MutationKind, id: string, fields: Fields, baseVersion?: bigint): QueuedMutation {
    if (source === "") throw new SynclineError("INVALID", "the source is empty");
    checkFields(fields);
    const recordId = op === "create" ? tempId() : this.linkedId(source, id) ?? id;
    if (recordId === "") throw new SynclineError("INVALID", "the record id is empty");
    const rewritten: Fields = {};
    for (const [name, value] of Object.entries(fields)) {
      rewritten[name] = typeof value === "string" ? (this.linkedId(undefined, value) ?? value) : value;
    }
    const base = op === "create" ? 0n : (baseVersion ?? this.serverVersion(source, key, recordId) ?? 0n);
    return this.queue.push({ source, key, op, id: recordId, fields: rewritten, baseVersion: base });
  }

  /** Returns the Mutate frames to send now and counts them as in flight. */
  frames(): ClientFrame[] {
    const next = this.queue.nextToSend((id) => this.inFlight.has(id));
    return next.map((row) => {
      this.queue.markSent(row.mutationId);
      this.inFlight.add(row.mutationId);
      return create(ClientFrameSchema, {
        msg: {
          case: "mutate",
          value: {
            mutationId: row.mutationId,
            source: row.source,
            key: row.key,
            op: OPS[row.op],
            id: row.id,
            fields: toValues(row.fields),
            baseVersion: row.baseVersion,
          },
        },
      });
    });
  }

  /** Lays the confirmed records and queued mutations of `partition` over `records`. */
  applyTo(partition: string, records: Map<string, SyncRecord>): void {
    this.confirmed.apply(partition, this.host.replica(partition), records);
    for (const row of this.queue.mutations) {
      if (this.host.resolvePartition(row.source, row.key) === partition) applyOptimistically(records, row);
    }
  }

  /** True when nothing of the mutation layers touches `partition`. */
  isEmptyFor(partition: string): boolean {
    return (
      this.confirmed.isEmptyFor(partition) &&
      !this.queue.mutations.some((row) => this.host.resolvePartition(row.source, row.key) === partition)
    );
  }

  /** Handles a MutationAck; returns the notification when the mutation was pending until now. */
  onAck(mutationId: string): MutationNotification | undefined {
    const row = this.queue.get(mutationId);
    if (!row || !this.queue.markAcked(mutationId)) return undefined;
    return notification(row, { status: "queued" });
  }

  /** Handles a MutationResult; returns the notification and the partition whose view changed. */
  onResult(result: MutationResult): { notification: MutationNotification; partition: string | undefined } | undefined {
    const row = this.queue.get(result.mutationId);
    if (!row) return undefined;
    this.inFlight.delete(row.mutationId);
    // A second refusal of a failed mutation (its resend) is nothing new; a success is an
    // operator's retry on the server that went through: it completes like any success.
    if (row.state === "failed" && !result.ok) return undefined;
    const partition = this.host.resolvePartition(row.source, row.key);
    if (result.ok) return { notification: this.succeeded(row, result, partition), partition };
    const error = result.error;
    const current = error?.current ? fromRecord(error.current) : undefined;
    const code = errorCodeName(error?.code ?? 0);
    const opName = (Object.keys(OPS) as MutationKind[]).find((kind) => OPS[kind] === error?.op) ?? row.op;
    this.queue.markFailed(row.mutationId, { op: opName, code, message: error?.message ?? "", current });
    if (partition !== undefined && current && code === "CONFLICT") {
      this.confirmed.insert(partition, current.id, current);
      this.prune(partition);
    }
    return {
      notification: notification(row, { status: "error", code, message: error?.message ?? "", current }),
      partition,
    };
  }

  /** Applies the links a Changes frame carries; returns true when one linked a queued create. */
  applyLinks(links: readonly { tempId: string; id: string }[], upserts: readonly { id: string; version: bigint }[]): boolean {
    let linked = false;
    for (const link of links) {
      const version = upserts.find((record) => record.id === link.id)?.version;
      if (this.queue.applyLink(link.tempId, link.id, version)) linked = true;
    }
    return linked;
  }

  /** Forgets confirmed records the replica of `partition` now knows as well. */
  prune(partition: string): void {
    const replica = this.host.replica(partition);
    if (replica) this.confirmed.prune(partition, replica);
  }

  private succeeded(row: QueuedMutation, result: MutationResult, partition: string | undefined): MutationNotification {
    const record = result.record ? fromRecord(result.record) : undefined;
    let link: { tempId: string; id: string } | undefined;
    if (row.op === "create") {
      const id = result.link?.id || record?.id;
      if (id && id !== row.id) link = { tempId: row.id, id };
    }
    if (link) this.queue.applyLink(link.tempId, link.id, record?.version);
    const completed = this.queue.complete(row.mutationId);
    if (partition !== undefined) {
      if (completed.op !== "delete" && record) this.confirmed.insert(partition, record.id, record);
      else if (completed.op === "create") {
        const id = localId(completed);
        this.confirmed.insert(partition, id, { id, fields: { ...completed.fields }, version: 0n });
      } else if (completed.op === "delete") this.confirmed.insert(partition, localId(completed), undefined);
      this.prune(partition);
    }
    return notification(completed, { status: "ok", record, link });
  }

  /** The backend id of a queued, linked create whose temporary id is `id` (of `source`, or any). */
  private linkedId(source: string | undefined, id: string): string | undefined {
    const row = this.queue.mutations.find(
      (candidate) => candidate.op === "create" && candidate.id === id && (source === undefined || candidate.source === source),
    );
    return row?.linkedId;
  }

  /** The version of a record as the device last got it from the server. */
  private serverVersion(source: string, key: string, id: string): bigint | undefined {
    const partition = this.host.resolvePartition(source, key);
    if (partition === undefined) return undefined;
    const replica = this.host.replica(partition);
    return this.confirmed.version(partition, id, replica) ?? replica?.records.get(id)?.version;
  }
}

function notification(row: QueuedMutation, outcome: MutationOutcome): MutationNotification {
  return { type: "mutation", mutationId: row.mutationId, source: row.source, key: row.key, op: row.op, outcome };
}
