/**
 * `@syncline/client`: the Syncline device library for browsers and Node. One
 * {@link SynclineClient} keeps a local, offline-first copy of backend records over one
 * WebSocket, verifies it with the server's checksum, queues the app's changes while offline
 * and sends each exactly once, and exposes reactive views to render from.
 *
 * ```ts
 * import { SynclineClient, IndexedDbStorage } from "@syncline/client";
 *
 * const client = await SynclineClient.open({
 *   url: "wss://sync.example.com/v1/sync",
 *   credentials: { username: "demo", password: "demo" },
 *   sources: ["Account", "Contact"],
 *   storage: await IndexedDbStorage.open("crm"),
 * });
 * const accounts = client.source("Account");
 * accounts.subscribe(() => render(accounts.records()));
 * const { record } = client.create("Account", { name: "Acme", employees: 12n });
 * ```
 *
 * @module
 */
export { BULK_PROGRESS_BYTES, DEFAULT_BULK_MIN_RECORDS, SynclineClient } from "./client.js";
export type {
  BulkOptions,
  ClientOptions,
  ConnectionState,
  PendingChange,
  SearchOptions,
  SearchResults,
  WebSocketFactory,
  WebSocketLike,
} from "./client.js";
export { SourceView, toPredicate } from "./source.js";
export type { RecordFilter } from "./source.js";
export { MemoryStorage } from "./storage.js";
export type { SessionState, Storage, StoredPartition, StoredState } from "./storage.js";
export { IndexedDbStorage } from "./indexeddb.js";
export { SynclineError, errorCodeName } from "./errors.js";
export type { ErrorCodeName, ProtocolErrorCode } from "./errors.js";
export type {
  BulkNotification,
  BulkStatusName,
  ChangedNotification,
  CommandNotification,
  MutationNotification,
  MutationOutcome,
  Notification,
  SyncNotification,
  SyncStatusName,
} from "./notifications.js";
export type { MutationFailure, MutationKind, MutationState, QueuedMutation } from "./outbox.js";
export { TEMP_ID_PREFIX } from "./outbox.js";
export type { SubscriptionOptions } from "./partition.js";
export type { Credentials, EngineStats, StopReason } from "./engine.js";
export { PROTOCOL_VERSION } from "./engine.js";
export { Checksum, recordHash } from "./checksum.js";
export { PartitionReplica } from "./replica.js";
export type { ApplyOutcome, ChecksumMismatch, PageWrite } from "./replica.js";
export { Backoff } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { BlobRef, fromValue, toValue, fromRecord, toRecord, reviveFields } from "./values.js";
export {
  BULK_FORMAT_VERSION,
  BulkFileError,
  decodeFields,
  DEFAULT_DOWNLOAD_ATTEMPTS,
  downloadBulkFile,
  readBulkFile,
  SELECT_IDS_AND_VERSIONS,
  SELECT_RECORDS,
  sqlJsLoader,
} from "./bulk.js";
export type { BulkDownloadOptions, BulkFileContents, BulkFileExpectation, BulkFileProblem, DownloadedFile, SqlJsLoader, SqlJsOptions } from "./bulk.js";
export { BLOBS_PATH, blobHash, DEFAULT_BLOB_ATTEMPTS, DEFAULT_PIECE_BYTES, downloadBlob, uploadBlob } from "./blobs.js";
export type { BlobRecordHint, BlobTransferOptions } from "./blobs.js";
export { HttpError, httpBase, resolveUrl } from "./http.js";
export type { FetchLike } from "./http.js";
export type { FieldValue, Fields, SyncRecord } from "./values.js";
export {
  binaryFrames,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientFrame,
  encodeServerFrame,
  jsonFrames,
  SUBPROTOCOL,
  SYNC_PATH,
} from "./wire.js";
export type { FrameCodec, FrameFormat } from "./wire.js";
