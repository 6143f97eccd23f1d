/**
 * {@link SynclineClient}: one device's connection to Syncline, its local store and the API
 * an app renders from and writes through. A thin loop around the engine: it owns the
 * WebSocket, reconnects with jittered backoff and resumes from the stored cursors, runs
 * every frame and local change one at a time (a page is stored before its Ack), and answers
 * RPC calls and searches.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ClientFrame, ServerFrame } from "./gen/syncline/v1/device_pb.js";
import { ClientFrameSchema } from "./gen/syncline/v1/device_pb.js";
import { Backoff } from "./backoff.js";
import type { BackoffOptions } from "./backoff.js";
import { SyncEngine } from "./engine.js";
import type { Credentials, Disconnect, EngineOptions, EngineStats, Reaction, StopReason } from "./engine.js";
import { errorCodeName, SynclineError } from "./errors.js";
import type { Notification } from "./notifications.js";
import type { MutationKind, QueuedMutation } from "./outbox.js";
import { localId, randomId } from "./outbox.js";
import { partitionKey } from "./partition.js";
import type { SubscriptionOptions } from "./partition.js";
import { PendingRequests } from "./requests.js";
import { SourceView } from "./source.js";
import { MemoryStorage } from "./storage.js";
import type { Storage } from "./storage.js";
import { fromRecord, toValues } from "./values.js";
import type { Fields, SyncRecord } from "./values.js";
import { binaryFrames, SUBPROTOCOL } from "./wire.js";
import { downloadBulkFile, readBulkFile, sqlJsLoader } from "./bulk.js";
import type { SqlJsLoader, SqlJsOptions } from "./bulk.js";
import { bulkNotification } from "./bulk-sync.js";
import type { BulkDownloadJob } from "./bulk-sync.js";
import { downloadBlob, uploadBlob } from "./blobs.js";
import type { BlobRecordHint, BlobTransferOptions } from "./blobs.js";
import { defaultFetch, httpBase, resolveUrl } from "./http.js";
import type { FetchLike } from "./http.js";
import type { BlobRef } from "./values.js";
import type { FrameCodec, FrameFormat } from "./wire.js";

/** The part of the WHATWG WebSocket API the client uses (browsers' and the `ws` package's). */
export interface WebSocketLike {
  binaryType: string;
  send(data: Uint8Array | string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** Opens a WebSocket to `url` with subprotocol `protocol`. */
export type WebSocketFactory = (url: string, protocol: string) => WebSocketLike;

/** Partitions of at least this many records come by bulk file by default. */
export const DEFAULT_BULK_MIN_RECORDS = 5000;

/** Bytes between two `download` notifications of a bulk file (and one at the end). */
export const BULK_PROGRESS_BYTES = 512 * 1024;

/**
 * Bulk first sync (docs/BULK.md): a natural partition that starts from nothing (a new
 * device, or a cursor the server's log no longer reaches) is downloaded as one SQLite file,
 * checked against its checksum and swapped in at once, then followed from the log.
 */
export interface BulkOptions extends SqlJsOptions {
  /** On unless false. */
  enabled?: boolean;
  /** Partitions with fewer records page as usual (default {@link DEFAULT_BULK_MIN_RECORDS}). */
  minRecords?: number;
  /** Loads sql.js another way (default: `wasmUrl` / `wasmBinary`, or node_modules in Node). */
  sqlJs?: SqlJsLoader;
  /** Download attempts before the partition pages instead (default 20). */
  maxAttempts?: number;
  /** Delays between download attempts. */
  backoff?: BackoffOptions;
}

/** Settings of a client. */
export interface ClientOptions {
  /** The device endpoint, e.g. `wss://sync.example.com/v1/sync`. */
  url: string;
  /** How to log in when there is no session token (a stored token is used first). */
  credentials: Credentials;
  /** What to sync: source names (natural partition) or subscription options. */
  sources: (string | SubscriptionOptions)[];
  /** The local store (default: in memory). */
  storage?: Storage;
  /** Opens sockets (default: the global `WebSocket`). */
  webSocket?: WebSocketFactory;
  /** Frame encoding: `"binary"` protobuf (the default) or `jsonFrames` (canonical JSON text). */
  format?: FrameFormat;
  /** Reconnect delays. */
  backoff?: BackoffOptions;
  /** What the device says about itself. */
  device?: EngineOptions["device"];
  /** Live pushes are acked after this many changes or this long after the first. */
  liveAck?: EngineOptions["liveAck"];
  /** Most queued mutations (default 10,000). */
  maxQueuedMutations?: number;
  /** A socket that is not open after this long is given up (default 10 s). */
  connectTimeoutMs?: number;
  /** A session that lasted this long resets the backoff when it ends (default 5 s). */
  healthyAfterMs?: number;
  /** Bulk first sync of large partitions (off when absent). */
  bulk?: BulkOptions;
  /** HTTP requests (bulk files, blobs; default: the global `fetch`). */
  fetch?: FetchLike;
}

/** Where the connection stands. */
export type ConnectionState = "connecting" | "connected" | "offline" | "stopped";

/** A local change: the optimistic record, its mutation id, and when it is stored locally. */
export interface PendingChange {
  /** The record as the app sees it right after the change (undefined after a delete). */
  record: SyncRecord | undefined;
  /** The mutation's id (what `resolve` and mutation notifications name). */
  mutationId: string;
  /** Resolves once the change is in the local store (rejects with STORAGE if that failed). */
  stored: Promise<void>;
}

/** Options of a search. */
export interface SearchOptions {
  /** Matches to skip. */
  offset?: number;
  /** Most matches (0: the channel's default). */
  limit?: number;
  /** How long to wait for the answer (default 30 s). */
  timeoutMs?: number;
}

/** The answer to a search. */
export interface SearchResults {
  records: SyncRecord[];
  /** Matches known to the backend. */
  total: bigint;
  /** Set when the records were merged into the local view of this partition key. */
  mergedInto?: string;
}

type SearchAnswer = { records: SyncRecord[]; total: bigint; mergeKey: string };

function clientFrame(msg: MessageInitShape<typeof ClientFrameSchema>["msg"]): ClientFrame {
  return create(ClientFrameSchema, { msg });
}

const NO_CLOSE_FRAME = new Set([1005, 1006, 1015]);

/** One device's connection to Syncline, its local store and the app's API. */
export class SynclineClient {
  private readonly backoff: Backoff;
  private readonly codec: FrameCodec;
  private socket: WebSocketLike | undefined;
  private generation = 0;
  private cutGeneration = -1;
  private connectionState: ConnectionState = "offline";
  private stopReasonValue: StopReason | undefined;
  private welcomedAt: number | undefined;
  private work: Promise<void> = Promise.resolve();
  private timers = new Set<ReturnType<typeof setTimeout>>();
  private liveAckTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly views = new Map<string, SourceView>();
  private readonly listeners = new Set<(notification: Notification) => void>();
  private readonly waiters = new Set<() => void>();
  private readonly calls = new PendingRequests<Uint8Array>("call");
  private readonly searches = new PendingRequests<SearchAnswer>("search");
  private readonly searchSources = new Map<string, string>();
  private readonly downloads = new Set<AbortController>();
  private readonly loadSqlJs: SqlJsLoader;

  private constructor(
    private readonly options: ClientOptions,
    private readonly storage: Storage,
    readonly engine: SyncEngine,
  ) {
    this.backoff = new Backoff(options.backoff);
    this.codec = options.format === undefined || options.format === "binary" ? binaryFrames : options.format;
    this.loadSqlJs = options.bulk?.sqlJs ?? sqlJsLoader(options.bulk ?? {});
  }

  /** Opens the local store, restores what it holds and starts connecting. */
  static async open(options: ClientOptions): Promise<SynclineClient> {
    const storage = options.storage ?? new MemoryStorage();
    const stored = await storage.load();
    const subscriptions = options.sources.map((source) => (typeof source === "string" ? { source } : source));
    const engine = new SyncEngine(
      {
        credentials: options.credentials,
        subscriptions,
        ...(options.device ? { device: options.device } : {}),
        ...(options.liveAck ? { liveAck: options.liveAck } : {}),
        ...(options.maxQueuedMutations ? { maxQueuedMutations: options.maxQueuedMutations } : {}),
        ...(options.bulk && options.bulk.enabled !== false ? { bulk: { minRecords: options.bulk.minRecords ?? DEFAULT_BULK_MIN_RECORDS } } : {}),
      },
      storage,
      stored,
    );
    const client = new SynclineClient(options, storage, engine);
    client.connect();
    return client;
  }

  /** Where the connection stands. */
  get connection(): ConnectionState {
    return this.connectionState;
  }

  /** Why the client stopped, once it has. */
  get stopReason(): StopReason | undefined {
    return this.stopReasonValue;
  }

  /** The user the session acts as, once known. */
  get userId(): string | undefined {
    return this.engine.userId;
  }

  /** Counters of what the client's engine did (pages, verifications, mismatches, ...). */
  get stats(): Readonly<EngineStats> {
    return this.engine.stats;
  }

  /** The queued mutations, in order. */
  get pendingMutations(): readonly QueuedMutation[] {
    return this.engine.mutations.queue.mutations;
  }

  /** The sync state of each subscribed partition. */
  partitions(): ReturnType<SyncEngine["partitionStates"]> {
    return this.engine.partitionStates();
  }

  /** The reactive view of a source's records (partition `key`, or the natural one). */
  source(name: string, key?: string): SourceView {
    const id = `${name}\u0000${key ?? ""}`;
    let view = this.views.get(id);
    if (!view) {
      view = new SourceView({ viewOf: (source, given) => this.viewOf(source, given) }, name, key);
      this.views.set(id, view);
    }
    return view;
  }

  /** Calls `listener` with every notification; returns a function that stops it. */
  onNotification(listener: (notification: Notification) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves once `condition()` holds (checked after every change); rejects with TIMEOUT. */
  waitFor(condition: () => boolean, timeoutMs = 30_000): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new SynclineError("TIMEOUT", `condition not met within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  /** Creates a record in `source`; returns it at once under a temporary id. */
  create(source: string, fields: Fields, options: { key?: string } = {}): PendingChange {
    return this.change(source, options.key ?? "", "create", "", fields);
  }

  /** Sets `fields` of record `id` (other fields are kept); returns the record as changed. */
  update(source: string, id: string, fields: Fields, options: { key?: string; baseVersion?: bigint } = {}): PendingChange {
    return this.change(source, options.key ?? "", "update", id, fields, options.baseVersion);
  }

  /** Deletes record `id`. */
  delete(source: string, id: string, options: { key?: string } = {}): PendingChange {
    return this.change(source, options.key ?? "", "delete", id, {});
  }

  /**
   * Answers a failed mutation: `retry` sends it again under a new mutation id (returned),
   * `discard` drops it and rolls its change back (returns the dropped mutation ids).
   */
  async resolve(mutationId: string, resolution: "retry" | "discard"): Promise<string[]> {
    const queue = this.engine.mutations.queue;
    const result = resolution === "retry" ? [queue.retry(mutationId)] : queue.discard(mutationId).map((row) => row.mutationId);
    this.invalidateAll();
    await this.run(() => Promise.resolve(this.afterLocalChange()));
    await queue.flushed();
    return result;
  }

  /**
   * Starts new sync runs, like RhoConnect's doSync: of all sources (no argument), of one
   * source, or only of sources with local changes (`changedOnly`). Queued changes go out too.
   */
  sync(filter: { source?: string; changedOnly?: boolean } = {}): Promise<void> {
    return this.run(async () => this.send(await this.engine.sync(filter)));
  }

  /** Starts syncing another source (or partition) too. */
  subscribe(subscription: string | SubscriptionOptions): Promise<void> {
    const options = typeof subscription === "string" ? { source: subscription } : subscription;
    return this.run(async () => this.send(await this.engine.addSubscription(options)));
  }

  /** Calls a backend operation over the socket; resolves with its reply payload. */
  async call(service: string, method: string, payload: Uint8Array | string, options: { timeoutMs?: number } = {}): Promise<Uint8Array> {
    this.requireOnline();
    const timeoutMs = options.timeoutMs ?? 30_000;
    const callId = randomId();
    const body = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const answer = this.calls.wait(callId, timeoutMs + 1000);
    this.send([clientFrame({ case: "rpcCall", value: { callId, service, method, payload: body, deadlineMs: timeoutMs } })]);
    return answer;
  }

  /** Asks the source's channel to search; merged results show in the source's view. */
  async search(source: string, params: Fields, options: SearchOptions = {}): Promise<SearchResults> {
    this.requireOnline();
    const searchId = randomId();
    this.searchSources.set(searchId, source);
    const answer = this.searches.wait(searchId, options.timeoutMs ?? 30_000);
    const search = { searchId, source, params: toValues(params), offset: options.offset ?? 0, limit: options.limit ?? 0 };
    this.send([clientFrame({ case: "search", value: search })]);
    try {
      const { records, total, mergeKey } = await answer;
      return mergeKey === "" ? { records, total } : { records, total, mergedInto: mergeKey };
    } finally {
      this.searchSources.delete(searchId);
    }
  }

  /**
   * Uploads a file for records to reference (resumable; the server checks its SHA-256) and
   * returns the {@link BlobRef} to put in a record's fields. Needs a session (after Welcome).
   */
  async uploadBlob(bytes: Uint8Array, mediaType: string, name = "", options: BlobTransferOptions = {}): Promise<BlobRef> {
    const token = this.sessionToken();
    return uploadBlob(httpBase(this.options.url), token, bytes, mediaType, name, { ...this.transferDefaults(), ...options });
  }

  /**
   * Downloads the bytes of a blob a record references (resuming with `Range`); name the
   * record (`{ source, key, id }`) unless this device uploaded the blob.
   */
  async downloadBlob(ref: BlobRef | string, record?: BlobRecordHint, options: BlobTransferOptions = {}): Promise<Uint8Array> {
    const token = this.sessionToken();
    return downloadBlob(httpBase(this.options.url), token, ref, record, { ...this.transferDefaults(), ...options });
  }

  /** Drops the connection as a network loss would; the client reconnects and resumes. */
  cut(): void {
    if (!this.socket) return;
    this.cutGeneration = this.generation;
    this.socket.close(4000, "cut");
  }

  /** Logs out: the server revokes the session token; the client forgets it and stops. */
  async logout(): Promise<void> {
    if (this.engine.welcomed) this.send([clientFrame({ case: "logout", value: {} })]);
    await this.engine.forgetSession();
    this.halt({ kind: "logout", reason: "logged out by the app" });
  }

  /** Stops syncing and closes the socket; local data stays in the store. */
  async stop(): Promise<void> {
    this.halt({ kind: "stopped", reason: "stopped by the app" });
    await this.work;
    await this.engine.mutations.queue.flushed().catch(() => undefined);
  }

  /** Deletes all local data (records, cursors, queued changes, session) and stops. */
  async wipe(): Promise<void> {
    this.halt({ kind: "wipe", reason: "wiped by the app" });
    await this.run(() => this.engine.wipe());
    this.invalidateAll();
  }

  private viewOf(source: string, key: string | undefined): Map<string, SyncRecord> | undefined {
    const partition = this.engine.resolvePartition(source, key ?? "");
    return partition === undefined ? undefined : this.engine.view(partition);
  }

  private change(source: string, key: string, op: MutationKind, id: string, fields: Fields, baseVersion?: bigint): PendingChange {
    const row = this.engine.mutations.queueChange(source, key, op, id, fields, baseVersion);
    const partition = this.engine.resolvePartition(source, key);
    const view = partition === undefined ? undefined : this.engine.view(partition);
    const record = op === "delete" ? undefined : (view?.get(localId(row)) ?? { id: localId(row), fields: { ...row.fields }, version: 0n });
    this.invalidateAll();
    const stored = this.engine.mutations.queue.flushed();
    void this.run(() => Promise.resolve(this.afterLocalChange()));
    return { record, mutationId: row.mutationId, stored };
  }

  private afterLocalChange(): void {
    this.send(this.engine.mutationFrames());
    this.checkWaiters();
  }

  private sessionToken(): string {
    if (this.connectionState === "stopped") throw new SynclineError("STOPPED", "the client has stopped");
    const token = this.engine.sessionState.sessionToken;
    if (token === undefined) throw new SynclineError("OFFLINE", "no session yet: blobs need the session token of a Welcome");
    return token;
  }

  private transferDefaults(): BlobTransferOptions {
    return this.options.fetch ? { fetch: this.options.fetch } : {};
  }

  /**
   * Downloads and checks a bulk file off the frame loop, reporting progress, then hands the
   * outcome to the engine (in turn with frames) to swap it in and follow the log.
   */
  private async bulkDownload(job: BulkDownloadJob): Promise<void> {
    const abort = new AbortController();
    this.downloads.add(abort);
    const { source, key, url, token } = job.file;
    const totalBytes = Number(job.file.bytes);
    let reported = 0;
    const onProgress = (bytes: number, total: number): void => {
      if (bytes - reported < BULK_PROGRESS_BYTES && bytes < total) return;
      reported = bytes;
      this.emit(bulkNotification(source, key, "download", { bytes, totalBytes: total, sequence: job.file.sequence }));
    };
    let outcome: Parameters<SyncEngine["onBulkLoaded"]>[1];
    try {
      const bulk = this.options.bulk ?? {};
      const downloaded = await downloadBulkFile(resolveUrl(this.options.url, url), token, {
        fetch: this.options.fetch ?? defaultFetch(),
        expectedBytes: totalBytes,
        onProgress,
        signal: abort.signal,
        ...(bulk.maxAttempts !== undefined ? { maxAttempts: bulk.maxAttempts } : {}),
        ...(bulk.backoff ? { backoff: bulk.backoff } : {}),
      });
      const expected = { source, key, sequence: job.file.sequence, recordCount: job.file.recordCount, checksum: job.file.checksum };
      outcome = { ok: true, contents: await readBulkFile(downloaded.bytes, expected, this.loadSqlJs) };
    } catch (error) {
      outcome = { ok: false, error };
    } finally {
      this.downloads.delete(abort);
    }
    if (this.connectionState === "stopped") return;
    await this.run(async () => this.react(await this.engine.onBulkLoaded(job.partition, outcome)));
  }

  private requireOnline(): void {
    if (this.connectionState === "stopped") throw new SynclineError("STOPPED", "the client has stopped");
    if (!this.engine.welcomed) throw new SynclineError("OFFLINE", "the device is not connected");
  }

  /** Runs `task` after every task queued before it. */
  private run(task: () => Promise<void>): Promise<void> {
    const next = this.work.then(task);
    this.work = next.catch((error: unknown) => this.report(error));
    return next;
  }

  private report(error: unknown): void {
    const code = error instanceof SynclineError ? error.code : "INTERNAL";
    this.emit({ type: "sync", source: "", key: "", status: "error", total: 0n, processed: 0, cumulative: 0, error: { code, message: String(error) } });
  }

  private connect(): void {
    if (this.connectionState === "stopped") return;
    const generation = ++this.generation;
    this.setConnection("connecting");
    const factory = this.options.webSocket ?? ((url: string, protocol: string) => new WebSocket(url, protocol) as unknown as WebSocketLike);
    let socket: WebSocketLike;
    try {
      socket = factory(this.options.url, SUBPROTOCOL);
    } catch (error) {
      this.report(error);
      this.scheduleReconnect(this.backoff.nextDelay());
      return;
    }
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    let opened = false;
    const openTimer = this.later(() => {
      if (!opened && generation === this.generation) socket.close(4000, "connect timeout");
    }, this.options.connectTimeoutMs ?? 10_000);
    socket.onopen = () => {
      opened = true;
      this.clearTimer(openTimer);
      void this.run(() => Promise.resolve(this.send([this.engine.hello()])));
    };
    socket.onmessage = (event) => {
      void this.run(() => this.onMessage(generation, event.data));
    };
    socket.onclose = (event) => {
      this.clearTimer(openTimer);
      void this.run(() => Promise.resolve(this.onClosed(generation, event)));
    };
    socket.onerror = () => undefined;
  }

  private async onMessage(generation: number, data: unknown): Promise<void> {
    if (generation !== this.generation || this.connectionState === "stopped") return;
    let frame: ServerFrame;
    try {
      frame = this.codec.decodeServer(typeof data === "string" ? data : new Uint8Array(data as ArrayBuffer));
    } catch (error) {
      this.report(error);
      this.socket?.close(4000, "undecodable frame");
      return;
    }
    if (this.answerRequest(frame)) return;
    const reaction = await this.engine.onFrame(frame, Date.now());
    if (generation !== this.generation) return;
    if (frame.msg.case === "welcome") {
      this.welcomedAt = Date.now();
      this.setConnection("connected");
    }
    this.react(reaction);
  }

  /** Answers RPC replies and search results; returns true when the frame was one. */
  private answerRequest(frame: ServerFrame): boolean {
    const msg = frame.msg;
    if (msg.case === "rpcReply") {
      const reply = msg.value;
      if (reply.result.case === "payload") this.calls.resolve(reply.callId, reply.result.value);
      else {
        const error = reply.result.value;
        this.calls.reject(reply.callId, new SynclineError(errorCodeName(error?.code ?? 0), error?.message ?? "the call failed"));
      }
      return true;
    }
    if (msg.case === "searchResult") {
      const result = msg.value;
      if (result.error) {
        this.searches.reject(result.searchId, new SynclineError(errorCodeName(result.error.code), result.error.message));
        return true;
      }
      const records = result.records.map(fromRecord);
      const source = this.searchSources.get(result.searchId);
      if (source !== undefined && result.mergeKey !== "") {
        this.engine.searches.merge(partitionKey(source, result.mergeKey), records);
        this.invalidateAll();
      }
      this.searches.resolve(result.searchId, { records, total: result.total, mergeKey: result.mergeKey });
      return true;
    }
    return false;
  }

  private react(reaction: Reaction): void {
    this.send(reaction.frames);
    for (const job of reaction.bulkDownloads) void this.bulkDownload(job);
    if (reaction.changed.size > 0) this.invalidateAll();
    for (const notification of reaction.notifications) {
      if (notification.type === "sync" && notification.status === "complete") this.backoff.reset();
      this.emit(notification);
    }
    if (reaction.stop) this.halt(reaction.stop);
    this.scheduleLiveAck();
    this.checkWaiters();
  }

  private onClosed(generation: number, event: { code: number; reason: string }): void {
    if (generation !== this.generation) return;
    this.socket = undefined;
    this.calls.rejectAll("DISCONNECTED", "the connection ended before the answer came");
    this.searches.rejectAll("DISCONNECTED", "the connection ended before the answer came");
    if (this.connectionState === "stopped") return;
    const disconnect: Disconnect =
      this.cutGeneration === generation
        ? { kind: "cut" }
        : NO_CLOSE_FRAME.has(event.code)
          ? { kind: "lost" }
          : { kind: "closed", code: event.code, reason: event.reason };
    if (this.welcomedAt !== undefined && Date.now() - this.welcomedAt >= (this.options.healthyAfterMs ?? 5000)) {
      this.backoff.reset();
    }
    this.welcomedAt = undefined;
    const after = this.engine.onDisconnect(disconnect);
    this.invalidateAll();
    if ("stop" in after) {
      this.halt(after.stop);
      return;
    }
    const delay = after.reconnect === "now" ? 0 : after.reconnect === "jitter" ? this.backoff.restartDelay() : this.backoff.nextDelay();
    this.scheduleReconnect(delay);
  }

  private scheduleReconnect(delayMs: number): void {
    this.setConnection("offline");
    this.later(() => this.connect(), delayMs);
  }

  private scheduleLiveAck(): void {
    const due = this.engine.liveAckDeadline();
    if (due === undefined || this.liveAckTimer !== undefined) return;
    this.liveAckTimer = this.later(() => {
      this.liveAckTimer = undefined;
      void this.run(() => {
        this.send(this.engine.dueLiveAcks(Date.now()));
        this.scheduleLiveAck();
        return Promise.resolve();
      });
    }, Math.max(0, due - Date.now()));
  }

  private send(frames: readonly ClientFrame[]): void {
    const socket = this.socket;
    if (!socket || frames.length === 0) return;
    for (const frame of frames) socket.send(this.codec.encodeClient(frame));
  }

  private halt(reason: StopReason): void {
    if (this.connectionState === "stopped") return;
    this.stopReasonValue = reason;
    this.setConnection("stopped");
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.liveAckTimer = undefined;
    this.calls.rejectAll("STOPPED", "the client has stopped");
    this.searches.rejectAll("STOPPED", "the client has stopped");
    for (const download of this.downloads) download.abort();
    this.downloads.clear();
    const socket = this.socket;
    this.socket = undefined;
    this.generation += 1;
    socket?.close(1000, reason.kind);
  }

  private setConnection(state: ConnectionState): void {
    if (this.connectionState === "stopped") return;
    this.connectionState = state;
    this.checkWaiters();
  }

  private emit(notification: Notification): void {
    for (const listener of [...this.listeners]) listener(notification);
  }

  private invalidateAll(): void {
    for (const view of this.views.values()) view.invalidate();
  }

  private checkWaiters(): void {
    for (const check of [...this.waiters]) check();
  }

  private later(callback: () => void, delayMs: number): ReturnType<typeof setTimeout> {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      callback();
    }, delayMs);
    this.timers.add(timer);
    return timer;
  }

  private clearTimer(timer: ReturnType<typeof setTimeout>): void {
    clearTimeout(timer);
    this.timers.delete(timer);
  }
}
