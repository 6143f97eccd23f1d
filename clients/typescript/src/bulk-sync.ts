/**
 * Bulk sync in the engine (docs/BULK.md), as the Rust library does it: when a natural
 * partition of a client with the `bulk` option starts from nothing (a first sync, or the
 * server's RESET: the cursor is below the horizon), the engine sends a `BulkRequest` instead
 * of a `Subscribe`. `BulkReady` hands the client files to download ({@link BulkDownloadJob});
 * once a file is downloaded and checked, its records replace the partition's local copy in
 * one store write (one IndexedDB transaction, one swap in memory) and the partition
 * subscribes with cursor = the file's sequence, so the log brings what changed since. A
 * partition the server lists as "page instead", a refused request or a failed download
 * pages as usual (and does not ask for bulk again in this client's life). Each step is a
 * {@link BulkNotification}.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { BulkFile, BulkReady, ClientFrame } from "./gen/syncline/v1/device_pb.js";
import { ClientFrameSchema } from "./gen/syncline/v1/device_pb.js";
import { errorCodeName, SynclineError } from "./errors.js";
import type { ErrorCodeName } from "./errors.js";
import type { BulkFileContents } from "./bulk.js";
import type { BulkNotification, BulkStatusName, Notification } from "./notifications.js";
import { partitionKey } from "./partition.js";
import type { PartitionSync } from "./partition.js";
import { PartitionReplica } from "./replica.js";
import type { Storage } from "./storage.js";
import { BlobRef } from "./values.js";
import type { SyncRecord } from "./values.js";

/** A file for the client to download, check and hand back (`SyncEngine.onBulkLoaded`). */
export interface BulkDownloadJob {
  /** The partition's map key (`partitionKey`). */
  partition: string;
  file: BulkFile;
}

/** What the client learned of a download: the checked file, or why it failed. */
export type BulkOutcome = { ok: true; contents: BulkFileContents } | { ok: false; error: unknown };

/** What bulk sync needs of the engine. */
export interface BulkHost {
  readonly welcomed: boolean;
  readonly storage: Storage;
  partitions(): Iterable<[string, PartitionSync]>;
  /** Called after a file replaced a partition's records (the engine prunes its layers). */
  replaced(partition: string): void;
}

/** What a bulk step adds to the engine's reaction. */
export interface BulkReaction {
  frames: ClientFrame[];
  notifications: Notification[];
  changed: Set<string>;
  bulkDownloads: BulkDownloadJob[];
}

/** Returns a bulk notification. */
export function bulkNotification(
  source: string,
  key: string,
  status: BulkStatusName,
  details: Partial<Omit<BulkNotification, "type" | "source" | "key" | "status">> = {},
): BulkNotification {
  return { type: "bulk", source, key, status, bytes: 0, totalBytes: 0, records: 0, blobs: 0, sequence: 0n, ...details };
}

/** Returns the number of blob references in `records`. */
export function countBlobs(records: readonly SyncRecord[]): number {
  let blobs = 0;
  for (const record of records) {
    for (const value of Object.values(record.fields)) if (value instanceof BlobRef) blobs += 1;
  }
  return blobs;
}

/** The engine's bulk sync state machine. */
export class BulkSync {
  /** BulkRequests sent (their ids count up). */
  private requests = 0;
  /** Bulk syncs completed. */
  completed = 0;

  constructor(private readonly host: BulkHost) {}

  /** True when `partition` should start from a file rather than snapshot pages. */
  wants(partition: PartitionSync): boolean {
    return partition.bulkMinRecords !== undefined && !partition.bulkDeclined && partition.replica.cursor === 0n;
  }

  /**
   * Starts `partition`'s sync on this connection when it goes by bulk: returns the frames
   * (a BulkRequest, or none while a download runs), or undefined to subscribe as usual.
   */
  begin(partition: PartitionSync): ClientFrame[] | undefined {
    if (partition.bulk.kind === "downloading") {
      partition.phase = "bulk";
      return [];
    }
    if (this.wants(partition)) return [this.request(partition)];
    partition.bulk = { kind: "idle" };
    return undefined;
  }

  /**
   * On the server's RESET of a partition that may bulk sync: leaves the subscription and asks
   * for a file instead of the snapshot pages. Returns false when the partition pages as usual.
   */
  insteadOfReset(partition: PartitionSync, reaction: BulkReaction): boolean {
    if (partition.bulkMinRecords === undefined || partition.bulkDeclined || partition.bulk.kind !== "idle") return false;
    const { source, key } = partition.id;
    reaction.frames.push(create(ClientFrameSchema, { msg: { case: "unsubscribe", value: { source, key } } }));
    reaction.frames.push(this.request(partition));
    return true;
  }

  /** Handles BulkReady: files to download, partitions to page instead, or a refusal. */
  onReady(ready: BulkReady, reaction: BulkReaction): void {
    const asked = [...this.host.partitions()].filter(([, partition]) => partition.bulk.kind === "requested" && partition.bulk.requestId === ready.requestId);
    if (asked.length === 0) return;
    for (const [id, partition] of asked) {
      const { source, key } = partition.id;
      const file = ready.files.find((candidate) => candidate.source === source && candidate.key === key);
      if (!ready.error && file) {
        partition.bulk = { kind: "downloading", sequence: file.sequence };
        const details = { totalBytes: Number(file.bytes), records: Number(file.recordCount), sequence: file.sequence };
        reaction.notifications.push(bulkNotification(source, key, "start", details));
        reaction.bulkDownloads.push({ partition: id, file });
        continue;
      }
      if (ready.error) {
        const error = { code: errorCodeName(ready.error.code), message: `the server refused the bulk request: ${ready.error.message}` };
        reaction.notifications.push(bulkNotification(source, key, "error", { error }));
      }
      this.pageInstead(partition, reaction);
    }
    this.checkComplete(reaction);
  }

  /**
   * Takes the outcome of a partition's download: the file's records replace the partition's
   * local copy in one store write and one swap of the replica, and the partition subscribes
   * from the file's sequence; a failure pages instead.
   */
  async onLoaded(id: string, outcome: BulkOutcome, reaction: BulkReaction): Promise<void> {
    const partition = [...this.host.partitions()].find(([key]) => key === id)?.[1];
    if (!partition || partition.bulk.kind !== "downloading") return;
    const { source, key } = partition.id;
    if (!outcome.ok) {
      reaction.notifications.push(bulkNotification(source, key, "error", { error: describe(outcome.error) }));
      this.pageInstead(partition, reaction);
      this.checkComplete(reaction);
      return;
    }
    const { records, sequence } = outcome.contents;
    const details = { records: records.length, sequence };
    reaction.notifications.push(bulkNotification(source, key, "change_db", details));
    try {
      await this.host.storage.writePage(source, key, { clear: true, deletes: [], upserts: records, cursor: sequence });
    } catch (error) {
      // The store kept what it held (the write is atomic): page from there.
      const failure = { code: "STORAGE" as const, message: `storing the bulk file failed: ${String(error)}` };
      reaction.notifications.push(bulkNotification(source, key, "error", { ...details, error: failure }));
      this.pageInstead(partition, reaction);
      this.checkComplete(reaction);
      return;
    }
    partition.replica = PartitionReplica.restore(sequence, records);
    partition.bulk = { kind: "idle" };
    this.completed += 1;
    this.host.replaced(id);
    reaction.changed.add(partitionKey(source, key));
    const blobs = countBlobs(records);
    reaction.notifications.push(bulkNotification(source, key, "blobs", { ...details, blobs }));
    reaction.notifications.push(bulkNotification(source, key, "ok", { ...details, blobs }));
    this.resume(partition, reaction);
    this.checkComplete(reaction);
  }

  /** Forgets requests of the connection that ended (a running download carries on). */
  resetConnection(): void {
    for (const [, partition] of this.host.partitions()) {
      if (partition.bulk.kind === "requested") partition.bulk = { kind: "idle" };
    }
  }

  /** True while some partition waits for a file. */
  get waiting(): boolean {
    return [...this.host.partitions()].some(([, partition]) => partition.bulk.kind !== "idle");
  }

  private request(partition: PartitionSync): ClientFrame {
    this.requests += 1;
    const requestId = `bulk-${this.requests}`;
    partition.phase = "bulk";
    partition.bulk = { kind: "requested", requestId };
    const value = { requestId, sources: [partition.id.source], minRecords: partition.bulkMinRecords ?? 0n };
    return create(ClientFrameSchema, { msg: { case: "bulkRequest", value } });
  }

  /** Gives up bulk for `partition` for this client's life and subscribes (now if connected). */
  private pageInstead(partition: PartitionSync, reaction: BulkReaction): void {
    partition.bulk = { kind: "idle" };
    partition.bulkDeclined = true;
    this.resume(partition, reaction);
  }

  /** Subscribes from the replica's cursor when the session is open; else the next Welcome does. */
  private resume(partition: PartitionSync, reaction: BulkReaction): void {
    if (this.host.welcomed) reaction.frames.push(...partition.subscribe());
    else partition.phase = "idle";
  }

  /** Reports bulk `complete` once no partition waits for a file. */
  private checkComplete(reaction: BulkReaction): void {
    if (!this.waiting) reaction.notifications.push(bulkNotification("", "", "complete"));
  }
}

function describe(error: unknown): { code: ErrorCodeName; message: string } {
  if (error instanceof SynclineError) return { code: error.code, message: error.message };
  return { code: "INTERNAL", message: String(error) };
}
