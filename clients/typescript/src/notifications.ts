/**
 * What a client tells its app, modelled on the RhoConnect client's sync notifications:
 * per-partition progress (`in_progress`, `ok`, `error`), `complete` when a sync run is done,
 * object notifications for live changes, the outcomes of the device's own mutations (which
 * the app answers with `client.resolve`), and operator commands.
 *
 * @module
 */
import type { ErrorCodeName, ProtocolErrorCode } from "./errors.js";
import type { MutationKind } from "./outbox.js";
import type { SyncRecord } from "./values.js";

/** Where a sync run stands (RhoConnect's `status` of a sync notification). */
export type SyncStatusName = "in_progress" | "ok" | "error" | "complete" | "schema_changed";

/** Progress of a partition's sync run, or of the whole run (`complete`). */
export interface SyncNotification {
  type: "sync";
  /** Source name (empty for `complete`). */
  source: string;
  /** Partition key (empty for `complete`). */
  key: string;
  status: SyncStatusName;
  /** Live records in the partition as the server last reported (for `complete`, the sum). */
  total: bigint;
  /** Changes (upserts + deletes) in the page this notification is about (`in_progress`). */
  processed: number;
  /** Changes applied in this sync run so far (a run starts at each subscribe). */
  cumulative: number;
  /** For `error`: why. */
  error?: { code: ErrorCodeName; message: string };
}

/** Records changed by a live push (an object notification). */
export interface ChangedNotification {
  type: "changed";
  source: string;
  key: string;
  upserts: SyncRecord[];
  deletes: string[];
}

/** What happened to one of the device's mutations. */
export type MutationOutcome =
  | { status: "queued" }
  | { status: "ok"; record?: SyncRecord; link?: { tempId: string; id: string } }
  | { status: "error"; code: ProtocolErrorCode; message: string; current?: SyncRecord };

/** News about one of the device's creates, updates or deletes. */
export interface MutationNotification {
  type: "mutation";
  /** What `client.resolve` takes. */
  mutationId: string;
  source: string;
  key: string;
  op: MutationKind;
  outcome: MutationOutcome;
}

/** An operator's command the client carried out. */
export interface CommandNotification {
  type: "command";
  kind: "lock" | "wipe" | "resync" | "logout";
  reason: string;
}

/**
 * Where a partition's bulk sync stands (RhoConnect's `bulk_status`): `start` (the server
 * announced a file, `totalBytes` its size), `download` (bytes so far of `totalBytes`),
 * `change_db` (the file is checked; the local data is being replaced with its `records`),
 * `blobs` (the file's records reference `blobs` files, fetched on demand with
 * `client.downloadBlob`), `ok` (the partition holds the file and follows the log from its
 * sequence), `complete` (no partition waits for a file any more; source and key empty),
 * `error` (why in `error`; the partition pages instead).
 */
export type BulkStatusName = "start" | "download" | "change_db" | "blobs" | "ok" | "complete" | "error";

/** Progress of a bulk sync (docs/BULK.md). */
export interface BulkNotification {
  type: "bulk";
  source: string;
  key: string;
  status: BulkStatusName;
  /** Bytes of the file downloaded so far. */
  bytes: number;
  /** The file's size. */
  totalBytes: number;
  /** Records in the file (from `change_db` on). */
  records: number;
  /** Blob references in the file's records (`blobs`, `ok`). */
  blobs: number;
  /** The file's sequence: the cursor the partition follows the log from. */
  sequence: bigint;
  /** For `error`: why (e.g. `UNAUTHENTICATED` for a refused token, `PROTOCOL` for a bad file). */
  error?: { code: ErrorCodeName; message: string };
}

/** One notification to the app. */
export type Notification = SyncNotification | ChangedNotification | MutationNotification | CommandNotification | BulkNotification;
