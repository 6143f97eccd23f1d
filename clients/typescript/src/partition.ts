/**
 * Partition ids and the per-partition sync state the engine keeps across connections.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { ClientFrame } from "./gen/syncline/v1/device_pb.js";
import { ClientFrameSchema } from "./gen/syncline/v1/device_pb.js";
import type { ErrorCodeName } from "./errors.js";
import { PartitionReplica } from "./replica.js";

/** Names a partition: (source, key). */
export interface PartitionId {
  source: string;
  key: string;
}

/** Returns a string naming a partition, usable as a map key. */
export function partitionKey(source: string, key: string): string {
  return `${source}\u0000${key}`;
}

/** What to subscribe to. */
export interface SubscriptionOptions {
  /** Source name, e.g. `Account`. */
  source: string;
  /** Partition key; absent: the source's natural key (the user's id, or `*`). */
  key?: string;
  /** Records or changes per catch-up page; 0: the server's default. */
  pageSize?: number;
  /** Catch-up pages the server may send before an ack; 0: pull mode. Default 4. */
  window?: number;
}

/** A partition's progress on the current connection ("bulk": waiting for a bulk file). */
export type Phase = "idle" | "catching_up" | "caught_up" | "failed" | "bulk";

/** Where a partition's bulk sync stands (see bulk-sync.ts). */
export type BulkPhase = { kind: "idle" } | { kind: "requested"; requestId: string } | { kind: "downloading"; sequence: bigint };

/** Default credit window: pages the server may send ahead of the device's acks. */
export const DEFAULT_WINDOW = 4;

/** One partition: its replica plus its per-connection sync state. */
export class PartitionSync {
  replica = new PartitionReplica();
  phase: Phase = "idle";
  /**
   * Set by each Subscribe until a frame shows that the new subscription started (page 1, a
   * snapshot reset, or a SyncState at the cursor); frames of the previous one may still
   * arrive meanwhile and are not acked by page or resubscribed on.
   */
  awaitingRestart = false;
  /** Changes applied in this sync run. */
  cumulative = 0;
  /** The partition's total as the server last reported it. */
  serverTotal = 0n;
  error: { code: ErrorCodeName; message: string } | undefined;
  /** Live pushes applied and not acked yet: their count and when the first came. */
  pendingLiveAck: { changes: number; since: number } | undefined;
  /** Bulk sync from this many records (undefined: never; a natural partition's option). */
  bulkMinRecords: bigint | undefined;
  /** Where its bulk sync stands. */
  bulk: BulkPhase = { kind: "idle" };
  /** Bulk sync failed or the server said "page instead": the partition pages from now on. */
  bulkDeclined = false;

  constructor(
    readonly id: PartitionId,
    readonly pageSize: number,
    readonly window: number,
  ) {}

  /** True when the replica holds a snapshot's first pages only: subscribing must drop them. */
  get mustClearOnSubscribe(): boolean {
    return this.replica.receivingSnapshot;
  }

  /** Starts a sync run from the replica's cursor and returns the frames that ask for it. */
  subscribe(): ClientFrame[] {
    this.phase = "catching_up";
    this.awaitingRestart = true;
    this.cumulative = 0;
    this.error = undefined;
    this.pendingLiveAck = undefined;
    const { source, key } = this.id;
    const frames = [
      create(ClientFrameSchema, {
        msg: {
          case: "subscribe",
          value: { source, key, cursor: this.replica.cursor, pageSize: this.pageSize, window: this.window },
        },
      }),
    ];
    if (this.window === 0) frames.push(pullFrame(this.id));
    return frames;
  }
}

/** Returns an Ack of a partition at `cursor` for catch-up page `page` (0: live). */
export function ackFrame(id: PartitionId, cursor: bigint, page: bigint): ClientFrame {
  return create(ClientFrameSchema, { msg: { case: "ack", value: { source: id.source, key: id.key, cursor, page } } });
}

/** Returns a Pull of one page. */
export function pullFrame(id: PartitionId): ClientFrame {
  return create(ClientFrameSchema, { msg: { case: "pull", value: { source: id.source, key: id.key, pages: 1 } } });
}
