/**
 * The device's protocol logic as a state machine: frames in, frames and notifications out,
 * no socket and no clock of its own (callers pass `now`). Storage writes are awaited inside
 * `onFrame`, so a page is durable before its Ack goes out. The same rules as the Rust
 * library's engine: Hello and token fallback, subscribes, acks and debounced live acks,
 * resubscribe on gaps, resync on checksum mismatch, what a close code means, commands.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  Changes,
  ClientFrame,
  Command,
  Error as ErrorFrame,
  ServerFrame,
  SyncState,
  Welcome,
} from "./gen/syncline/v1/device_pb.js";
import { ClientFrameSchema, CommandKind, ErrorCode, SyncStatus } from "./gen/syncline/v1/device_pb.js";
import type { HelloSchema } from "./gen/syncline/v1/device_pb.js";
import { errorCodeName } from "./errors.js";
import type { ErrorCodeName } from "./errors.js";
import { Mutations } from "./mutations.js";
import type { Notification, SyncNotification, SyncStatusName } from "./notifications.js";
import { MutationQueue } from "./outbox.js";
import { ackFrame, DEFAULT_WINDOW, partitionKey, PartitionSync, pullFrame } from "./partition.js";
import type { SubscriptionOptions } from "./partition.js";
import { PartitionReplica } from "./replica.js";
import type { PageWrite } from "./replica.js";
import type { SessionState, Storage, StoredState } from "./storage.js";
import { SearchMerges } from "./layers.js";
import { BulkSync } from "./bulk-sync.js";
import type { BulkDownloadJob, BulkOutcome } from "./bulk-sync.js";
import type { SyncRecord } from "./values.js";

/** The protocol version this library speaks. */
export const PROTOCOL_VERSION = 1;

/** Acted-on commands remembered (the server sends a command again only until it has the ack). */
export const MAX_REMEMBERED_COMMANDS = 256;

/** How the device logs in when it has no session token. */
export type Credentials = { username: string; password: string } | { backendToken: string };

/** Why a client stopped for good (until the app starts it again). */
export interface StopReason {
  kind: "unauthenticated" | "forbidden" | "upgrade_required" | "closed_by_server" | "lock" | "wipe" | "logout" | "stopped";
  reason: string;
}

/** What the engine wants done after a frame. */
export interface Reaction {
  frames: ClientFrame[];
  notifications: Notification[];
  /** Partition keys (see `partitionKey`) whose records as the app sees them changed. */
  changed: Set<string>;
  /** Set when the device must stop (after sending `frames`). */
  stop?: StopReason;
  /** Bulk files to download (the client hands each back with `onBulkLoaded`). */
  bulkDownloads: BulkDownloadJob[];
}

/** How a connection ended. */
export type Disconnect = { kind: "closed"; code: number; reason: string } | { kind: "lost" } | { kind: "cut" };

/** What to do after a connection ended. */
export type AfterDisconnect = { reconnect: "now" | "jitter" | "backoff" } | { stop: StopReason };

/** Counters of what the engine did, for apps' diagnostics and tests. */
export interface EngineStats {
  /** Catch-up pages applied. */
  pages: number;
  /** Live pushes applied. */
  livePushes: number;
  /** Times a partition was verified against the server's checksum when caught up. */
  verified: number;
  /** Checksum mismatches (each dropped the partition and resynced it from 0). */
  checksumMismatches: number;
  /** Resubscribes after a gap or a cursor the server did not continue from. */
  resubscribes: number;
  /** Schema changes the server reported (each dropped the partition and resynced it from 0). */
  schemaChanges: number;
  /** Partitions that arrived by a bulk file. */
  bulkSyncs: number;
}

/** Settings of the engine. */
export interface EngineOptions {
  credentials: Credentials;
  device?: { platform?: string; appVersion?: string; model?: string };
  subscriptions: SubscriptionOptions[];
  /** Live pushes are acked after this many changes or this long after the first. */
  liveAck?: { maxChanges: number; intervalMs: number };
  maxQueuedMutations?: number;
  /**
   * Bulk sync of natural partitions (no explicit key) from `minRecords` records: a first
   * sync asks for a SQLite file instead of snapshot pages (docs/BULK.md).
   */
  bulk?: { minRecords: number };
}

function newReaction(): Reaction {
  return { frames: [], notifications: [], changed: new Set(), bulkDownloads: [] };
}

type ClientMsg = MessageInitShape<typeof ClientFrameSchema>["msg"];
type HelloInit = MessageInitShape<typeof HelloSchema>;

function frame(msg: ClientMsg): ClientFrame {
  return create(ClientFrameSchema, { msg });
}

/** The device's protocol state machine. */
export class SyncEngine {
  private session: SessionState;
  private readonly partitions = new Map<string, PartitionSync>();
  /** Partitions loaded from the store, taken when first subscribed. */
  private readonly restored = new Map<string, PartitionReplica>();
  private subscriptions: SubscriptionOptions[];
  private helloUsedToken = false;
  private fatalError: ErrorFrame | undefined;
  private welcomedValue = false;
  private completeReported = false;
  readonly mutations: Mutations;
  /** What the engine did so far. */
  readonly stats: EngineStats = { pages: 0, livePushes: 0, verified: 0, checksumMismatches: 0, resubscribes: 0, schemaChanges: 0, bulkSyncs: 0 };
  readonly searches = new SearchMerges();
  private readonly liveAck: { maxChanges: number; intervalMs: number };
  private readonly bulk: BulkSync;

  constructor(
    private readonly options: EngineOptions,
    private readonly storage: Storage,
    stored: StoredState,
  ) {
    this.session = { ...stored.session };
    this.subscriptions = [...options.subscriptions];
    this.liveAck = options.liveAck ?? { maxChanges: 100, intervalMs: 1000 };
    const welcomed = (): boolean => this.welcomedValue;
    this.bulk = new BulkSync({
      get welcomed() {
        return welcomed();
      },
      storage,
      partitions: () => this.partitions.entries(),
      replaced: (partition) => this.mutations.prune(partition),
    });
    for (const partition of stored.partitions) {
      // A cursor of 0 is a snapshot that never finished: useless.
      if (partition.cursor === 0n) continue;
      this.restored.set(partitionKey(partition.source, partition.key), PartitionReplica.restore(partition.cursor, partition.records));
    }
    const queue = new MutationQueue(storage, stored.mutations, options.maxQueuedMutations);
    this.mutations = new Mutations(queue, {
      resolvePartition: (source, key) => this.resolvePartition(source, key),
      replica: (partition) => this.partitions.get(partition)?.replica ?? this.restored.get(partition),
    });
  }

  /** True once this connection's session is open. */
  get welcomed(): boolean {
    return this.welcomedValue;
  }

  /** The user id of the session, once known. */
  get userId(): string | undefined {
    return this.session.userId;
  }

  /** The client id, once known. */
  get clientId(): string | undefined {
    return this.session.clientId;
  }

  /** The session state to remember (also written to the store on each change). */
  get sessionState(): SessionState {
    return { ...this.session };
  }

  /** Starts a connection: forgets the previous connection's state and returns the Hello. */
  hello(): ClientFrame {
    this.resetConnection();
    const token = this.session.sessionToken;
    this.helloUsedToken = token !== undefined;
    const { credentials } = this.options;
    let value: HelloInit["credentials"];
    if (token !== undefined) value = { case: "sessionToken", value: token };
    else if ("backendToken" in credentials) value = { case: "backendToken", value: credentials.backendToken };
    else value = { case: "login", value: { username: credentials.username, password: credentials.password } };
    return frame({
      case: "hello",
      value: {
        protocolVersion: PROTOCOL_VERSION,
        credentials: value,
        clientId: this.session.clientId ?? "",
        device: { platform: "web", ...this.options.device },
      },
    });
  }

  /** Handles one server frame; storage writes it causes are done when it resolves. */
  async onFrame(message: ServerFrame, now: number): Promise<Reaction> {
    const reaction = newReaction();
    const msg = message.msg;
    switch (msg.case) {
      case "welcome":
        await this.onWelcome(msg.value, reaction);
        break;
      case "changes":
        await this.onChanges(msg.value, now, reaction);
        break;
      case "syncState":
        await this.onSyncState(msg.value, reaction);
        break;
      case "error":
        this.onError(msg.value, reaction);
        break;
      case "command":
        await this.onCommand(msg.value, reaction);
        break;
      case "bulkReady":
        this.bulk.onReady(msg.value, reaction);
        this.checkComplete(reaction);
        break;
      case "mutationAck": {
        const notification = this.mutations.onAck(msg.value.mutationId);
        if (notification) reaction.notifications.push(notification);
        break;
      }
      case "mutationResult": {
        const outcome = this.mutations.onResult(msg.value);
        if (outcome) {
          reaction.notifications.push(outcome.notification);
          if (outcome.partition !== undefined) reaction.changed.add(outcome.partition);
          if (this.welcomedValue) reaction.frames.push(...this.mutations.frames());
        }
        break;
      }
      default:
        break;
    }
    await this.mutations.queue.flushed();
    return reaction;
  }

  /**
   * Takes the outcome of a bulk download (a checked file, or why it failed): the file
   * replaces the partition's records, stored and in memory, then it follows the log.
   */
  async onBulkLoaded(partition: string, outcome: BulkOutcome): Promise<Reaction> {
    const reaction = newReaction();
    await this.bulk.onLoaded(partition, outcome, reaction);
    this.stats.bulkSyncs = this.bulk.completed;
    this.checkComplete(reaction);
    return reaction;
  }

  /** Returns the Mutate frames to send now (none before Welcome). */
  mutationFrames(): ClientFrame[] {
    return this.welcomedValue ? this.mutations.frames() : [];
  }

  /** When the earliest debounced live ack is due, if any. */
  liveAckDeadline(): number | undefined {
    let due: number | undefined;
    for (const partition of this.partitions.values()) {
      if (!partition.pendingLiveAck) continue;
      const at = partition.pendingLiveAck.since + this.liveAck.intervalMs;
      due = due === undefined ? at : Math.min(due, at);
    }
    return due;
  }

  /** Returns the live acks due at `now`. */
  dueLiveAcks(now: number): ClientFrame[] {
    const frames: ClientFrame[] = [];
    for (const partition of this.partitions.values()) {
      const pending = partition.pendingLiveAck;
      if (pending && pending.since + this.liveAck.intervalMs <= now) {
        partition.pendingLiveAck = undefined;
        frames.push(ackFrame(partition.id, partition.replica.cursor, 0n));
      }
    }
    return frames;
  }

  /** Ends the connection's state and decides what follows. */
  onDisconnect(disconnect: Disconnect): AfterDisconnect {
    this.resetConnection();
    if (disconnect.kind === "cut") return { reconnect: "backoff" };
    const fatalCode = this.fatalError ? this.fatalError.code : undefined;
    const fatalMessage = this.fatalError?.message ?? "";
    const code = disconnect.kind === "closed" ? disconnect.code : undefined;
    const reason = disconnect.kind === "closed" && disconnect.reason !== "" ? disconnect.reason : fatalMessage;
    const is = (close: number, error: ErrorCode): boolean =>
      code === close || (code === undefined && fatalCode === error);
    if (is(4001, ErrorCode.UNAUTHENTICATED)) {
      if (this.helloUsedToken) {
        // A refused session token: log in with the credentials at once.
        delete this.session.sessionToken;
        return { reconnect: "now" };
      }
      return { stop: { kind: "unauthenticated", reason } };
    }
    if (is(4003, ErrorCode.FORBIDDEN)) return { stop: { kind: "forbidden", reason } };
    if (is(4426, ErrorCode.UNSUPPORTED_VERSION)) return { stop: { kind: "upgrade_required", reason } };
    if (code === 1000) return { stop: { kind: "closed_by_server", reason } };
    if (code === 1012) return { reconnect: "jitter" };
    return { reconnect: "backoff" };
  }

  /**
   * Starts new sync runs (doSync): of every subscribed partition, of one source's, or of those
   * with queued local changes only; returns the frames (none while offline: the next
   * connection syncs everything anyway).
   */
  async sync(filter: { source?: string; changedOnly?: boolean } = {}): Promise<ClientFrame[]> {
    if (!this.welcomedValue) return [];
    const frames: ClientFrame[] = [...this.mutations.frames()];
    const changed = new Set(
      this.mutations.queue.mutations.map((row) => this.resolvePartition(row.source, row.key)).filter((key) => key !== undefined),
    );
    for (const [key, partition] of this.partitions) {
      if (partition.phase === "idle" || partition.phase === "bulk") continue;
      if (filter.source !== undefined && partition.id.source !== filter.source) continue;
      if (filter.changedOnly && !changed.has(key)) continue;
      frames.push(...(await this.subscribe(partition)));
    }
    this.completeReported = false;
    return frames;
  }

  /** Adds a subscription; returns its frames when connected. */
  async addSubscription(subscription: SubscriptionOptions): Promise<ClientFrame[]> {
    this.subscriptions.push(subscription);
    if (!this.welcomedValue) return [];
    const partition = this.partitionFor(subscription);
    this.completeReported = false;
    return this.subscribe(partition);
  }

  /**
   * Returns a partition's records as the app sees them (all layers), or undefined if unknown.
   * Read only: without local layers it is the replica's own map.
   */
  view(partition: string): Map<string, SyncRecord> | undefined {
    const replica = this.partitions.get(partition)?.replica ?? this.restored.get(partition);
    const bare = this.mutations.isEmptyFor(partition) && this.searches.isEmptyFor(partition);
    if (bare) return replica?.records;
    const records = new Map(replica?.records ?? []);
    this.searches.apply(partition, replica, records);
    this.mutations.applyTo(partition, records);
    return records;
  }

  /** The sync state of each partition: cursor, totals, checksum, phase, error. */
  partitionStates(): { source: string; key: string; cursor: bigint; total: bigint; checksum: bigint; phase: string; error?: { code: ErrorCodeName; message: string } }[] {
    return [...this.partitions.values()].map((partition) => ({
      source: partition.id.source,
      key: partition.id.key,
      cursor: partition.replica.cursor,
      total: partition.replica.total,
      checksum: partition.replica.checksum,
      phase: partition.phase,
      ...(partition.error ? { error: partition.error } : {}),
    }));
  }

  /** Returns the partition key a (source, key-as-given) pair means, once the natural key is known. */
  resolvePartition(source: string, key: string): string | undefined {
    if (key !== "") return partitionKey(source, key);
    const natural = this.session.naturalKeys?.[source];
    return natural === undefined ? undefined : partitionKey(source, natural);
  }

  private resetConnection(): void {
    this.welcomedValue = false;
    this.completeReported = false;
    this.mutations.resetConnection();
    this.bulk.resetConnection();
    for (const partition of this.partitions.values()) {
      partition.phase = "idle";
      partition.awaitingRestart = false;
      partition.pendingLiveAck = undefined;
    }
  }

  private partitionFor(subscription: SubscriptionOptions): PartitionSync {
    const key = subscription.key ?? this.session.naturalKeys?.[subscription.source] ?? this.session.userId ?? "";
    const id = partitionKey(subscription.source, key);
    let partition = this.partitions.get(id);
    if (!partition) {
      partition = new PartitionSync({ source: subscription.source, key }, subscription.pageSize ?? 0, subscription.window ?? DEFAULT_WINDOW);
      // Bulk files hold a source's natural partition only.
      const bulk = this.options.bulk;
      if (bulk && subscription.key === undefined) partition.bulkMinRecords = BigInt(Math.max(0, Math.floor(bulk.minRecords)));
      const restored = this.restored.get(id);
      if (restored) {
        partition.replica = restored;
        this.restored.delete(id);
      }
      this.partitions.set(id, partition);
    }
    return partition;
  }

  private async subscribe(partition: PartitionSync): Promise<ClientFrame[]> {
    if (partition.mustClearOnSubscribe) await this.clearPartition(partition);
    return this.bulk.begin(partition) ?? partition.subscribe();
  }

  private async clearPartition(partition: PartitionSync): Promise<void> {
    partition.replica.clear();
    await this.storage.writePage(partition.id.source, partition.id.key, { clear: true, deletes: [], upserts: [], cursor: 0n });
  }

  private async onWelcome(welcome: Welcome, reaction: Reaction): Promise<void> {
    this.welcomedValue = true;
    if (welcome.sessionToken !== "") this.session.sessionToken = welcome.sessionToken;
    if (welcome.clientId !== "") this.session.clientId = welcome.clientId;
    this.session.userId = welcome.userId;
    const naturalKeys: { [source: string]: string } = {};
    for (const source of welcome.sources) {
      if (source.keys.length === 1 && source.keys[0] !== undefined) naturalKeys[source.name] = source.keys[0];
      else naturalKeys[source.name] = source.partitioning === "app" ? "*" : welcome.userId;
    }
    this.session.naturalKeys = naturalKeys;
    await this.storage.writeSession(this.session);
    // Acks of commands acted on without a session come first.
    const unsent = (this.session.commandAcks ?? []).filter((ack) => !ack.sent).map((ack) => ack.commandId);
    reaction.frames.push(...(await this.commandAcks(unsent)));
    // Mutations before Subscribes: links of the device's own creates arrive before catch-up
    // pages bring the created records, and offline writes reach the server's queue first.
    reaction.frames.push(...this.mutations.frames());
    for (const subscription of this.subscriptions) {
      reaction.frames.push(...(await this.subscribe(this.partitionFor(subscription))));
    }
    for (const key of this.partitions.keys()) reaction.changed.add(key);
  }

  private async onChanges(changes: Changes, now: number, reaction: Reaction): Promise<void> {
    const id = partitionKey(changes.source, changes.key);
    const linked = this.mutations.applyLinks(changes.links, changes.upserts);
    await this.applyChanges(id, changes, now, reaction);
    this.mutations.prune(id);
    reaction.changed.add(id);
    if (linked) reaction.frames.push(...this.mutationFrames());
  }

  private async applyChanges(id: string, changes: Changes, now: number, reaction: Reaction): Promise<void> {
    const partition = this.partitions.get(id);
    if (!partition || partition.phase === "idle" || partition.phase === "bulk" || partition.error?.code === "STORAGE") return;
    if (changes.page === 1n || changes.reset) partition.awaitingRestart = false;
    const outcome = partition.replica.apply(changes);
    switch (outcome.kind) {
      case "applied":
        if (await this.store(partition, outcome.write, reaction)) {
          this.afterApplied(partition, changes, outcome.changes, now, reaction);
        }
        return;
      case "duplicate":
        if (changes.page > 0n && !partition.awaitingRestart) {
          reaction.frames.push(ackFrame(partition.id, partition.replica.cursor, changes.page));
        }
        return;
      case "gap":
      case "unexpected":
        if (!partition.awaitingRestart) {
          this.stats.resubscribes += 1;
          this.completeReported = false;
          reaction.frames.push(...(await this.subscribe(partition)));
        }
        return;
      case "mismatch":
        this.stats.checksumMismatches += 1;
        this.completeReported = false;
        await this.clearPartition(partition);
        reaction.frames.push(...(await this.subscribe(partition)));
        return;
    }
  }

  private afterApplied(partition: PartitionSync, changes: Changes, applied: number, now: number, reaction: Reaction): void {
    partition.serverTotal = changes.total;
    if (changes.page > 0n) {
      this.stats.pages += 1;
      if (partition.phase === "caught_up") this.completeReported = false;
      partition.phase = "catching_up";
      partition.cumulative += applied;
      // Pages of a previous subscription hold no credit in this one: ack the cursor only.
      const page = partition.awaitingRestart ? 0n : changes.page;
      partition.pendingLiveAck = undefined;
      reaction.frames.push(ackFrame(partition.id, partition.replica.cursor, page));
      if (partition.window === 0 && changes.remaining > 0n) reaction.frames.push(pullFrame(partition.id));
      reaction.notifications.push(syncNotification(partition, "in_progress", changes.total, applied));
      return;
    }
    this.stats.livePushes += 1;
    const pending = (partition.pendingLiveAck ??= { changes: 0, since: now });
    pending.changes += applied;
    if (pending.changes >= this.liveAck.maxChanges) {
      partition.pendingLiveAck = undefined;
      reaction.frames.push(ackFrame(partition.id, partition.replica.cursor, 0n));
    }
    reaction.notifications.push({
      type: "changed",
      source: changes.source,
      key: changes.key,
      upserts: changes.upserts.map((record) => partition.replica.records.get(record.id) ?? { id: record.id, fields: {}, version: record.version }),
      deletes: [...changes.deletes],
    });
  }

  /**
   * Writes a page; returns false when the store refused it. The replica is then ahead of the
   * store, so the partition is dropped (in memory, and from the store if it still writes) and
   * unsubscribed, with an `error` notification (`STORAGE`); the next sync run or connection
   * syncs it again from cursor 0.
   */
  private async store(partition: PartitionSync, write: PageWrite, reaction: Reaction): Promise<boolean> {
    try {
      await this.storage.writePage(partition.id.source, partition.id.key, write);
      return true;
    } catch (error) {
      partition.replica.clear();
      await this.storage
        .writePage(partition.id.source, partition.id.key, { clear: true, deletes: [], upserts: [], cursor: 0n })
        .catch(() => undefined);
      partition.phase = "failed";
      partition.error = { code: "STORAGE", message: `storing a page failed: ${String(error)}` };
      const { source, key } = partition.id;
      reaction.frames.push(frame({ case: "unsubscribe", value: { source, key } }));
      reaction.notifications.push({ ...syncNotification(partition, "error", partition.serverTotal, 0), error: partition.error });
      this.checkComplete(reaction);
      return false;
    }
  }

  private async onSyncState(state: SyncState, reaction: Reaction): Promise<void> {
    const id = partitionKey(state.source, state.key);
    const partition = this.partitions.get(id);
    if (!partition || partition.phase === "idle" || partition.phase === "bulk") return;
    switch (state.status) {
      case SyncStatus.CAUGHT_UP:
        await this.onCaughtUp(partition, state, reaction);
        return;
      case SyncStatus.RESET:
        // The cursor is below the horizon: a file instead of the snapshot, if bulk is on.
        if (this.bulk.insteadOfReset(partition, reaction)) {
          this.completeReported = false;
          return;
        }
        if (partition.phase === "caught_up") {
          partition.phase = "catching_up";
          this.completeReported = false;
        }
        return;
      case SyncStatus.IN_PROGRESS:
        if (partition.phase === "caught_up") {
          partition.phase = "catching_up";
          this.completeReported = false;
        }
        return;
      case SyncStatus.SCHEMA_CHANGED:
        // The source's schema changed: what the device holds may not match it; sync from 0.
        this.stats.schemaChanges += 1;
        this.completeReported = false;
        await this.clearPartition(partition);
        reaction.frames.push(...(await this.subscribe(partition)));
        reaction.changed.add(partitionKey(partition.id.source, partition.id.key));
        reaction.notifications.push(syncNotification(partition, "schema_changed", partition.serverTotal, 0));
        return;
      case SyncStatus.ERROR: {
        const error = { code: errorCodeName(state.error?.code ?? 0), message: state.error?.message ?? "" };
        partition.phase = "failed";
        partition.error = error;
        reaction.notifications.push({ ...syncNotification(partition, "error", partition.serverTotal, 0), error });
        this.checkComplete(reaction);
        return;
      }
      default:
        return;
    }
  }

  private async onCaughtUp(partition: PartitionSync, state: SyncState, reaction: Reaction): Promise<void> {
    const replica = partition.replica;
    // Live pushes may be applied before this arrives: the replica is then past the server's
    // cursor, already verified by each push's own checksum.
    const liveAhead = !replica.receivingSnapshot && state.cursor < replica.cursor && !partition.awaitingRestart;
    if (!liveAhead && (state.cursor !== replica.cursor || replica.receivingSnapshot)) {
      if (partition.awaitingRestart) return;
      this.stats.resubscribes += 1;
      this.completeReported = false;
      reaction.frames.push(...(await this.subscribe(partition)));
      return;
    }
    partition.awaitingRestart = false;
    partition.serverTotal = state.total;
    if (!liveAhead) this.stats.verified += 1;
    const mismatch = liveAhead ? undefined : replica.verify(state.total, state.checksum);
    if (mismatch) {
      // The order-independent checksum disagrees: drop the partition and sync it from 0.
      this.stats.checksumMismatches += 1;
      this.completeReported = false;
      await this.clearPartition(partition);
      reaction.frames.push(...(await this.subscribe(partition)));
      reaction.changed.add(partitionKey(partition.id.source, partition.id.key));
      return;
    }
    if (partition.phase !== "caught_up") {
      partition.phase = "caught_up";
      this.searches.forget(partitionKey(partition.id.source, partition.id.key));
      reaction.notifications.push(syncNotification(partition, "ok", state.total, 0));
    }
    this.checkComplete(reaction);
  }

  private onError(error: ErrorFrame, reaction: Reaction): void {
    const code = errorCodeName(error.code);
    const failed: PartitionSync[] = [];
    if (error.source !== "") {
      for (const partition of this.partitions.values()) {
        const named = partition.id.source === error.source && (error.key === "" || partition.id.key === error.key);
        if (named && partition.phase === "catching_up") {
          partition.phase = "failed";
          partition.error = { code, message: error.message };
          failed.push(partition);
        }
      }
    }
    for (const partition of failed) {
      reaction.notifications.push({
        ...syncNotification(partition, "error", partition.serverTotal, 0),
        error: { code, message: error.message },
      });
    }
    if (failed.length === 0) {
      reaction.notifications.push({
        type: "sync",
        source: error.source,
        key: error.key,
        status: "error",
        total: 0n,
        processed: 0,
        cumulative: 0,
        error: { code, message: error.message },
      });
    }
    if (error.fatal) this.fatalError = error;
    this.checkComplete(reaction);
  }

  /**
   * Acts on an operator command once per command id and acknowledges it (device.proto,
   * Command): the ack is recorded in the session state first, sent on the open session, or
   * after the next Welcome when there is none (commands before a locked device's refusal,
   * which are acted on without stopping: the server closes).
   */
  private async onCommand(command: Command, reaction: Reaction): Promise<void> {
    const id = command.commandId;
    if (id !== "" && (this.session.commandAcks ?? []).some((ack) => ack.commandId === id)) {
      reaction.frames.push(...(await this.commandAcks([id])));
      return;
    }
    let stop: StopReason | undefined;
    switch (command.kind) {
      case CommandKind.RESYNC:
        for (const [key, partition] of this.partitions) {
          await this.clearPartition(partition);
          if (partition.phase !== "idle") reaction.frames.push(...partition.subscribe());
          reaction.changed.add(key);
        }
        this.restored.clear();
        this.completeReported = false;
        reaction.notifications.push({ type: "command", kind: "resync", reason: command.reason });
        break;
      case CommandKind.WIPE: {
        const kept = { clientId: this.session.clientId, commandAcks: this.session.commandAcks };
        await this.wipe();
        if (kept.clientId !== undefined) this.session.clientId = kept.clientId;
        if (kept.commandAcks !== undefined) this.session.commandAcks = kept.commandAcks;
        for (const key of this.partitions.keys()) reaction.changed.add(key);
        reaction.notifications.push({ type: "command", kind: "wipe", reason: command.reason });
        stop = { kind: "wipe", reason: command.reason };
        break;
      }
      case CommandKind.LOCK:
        delete this.session.sessionToken;
        reaction.notifications.push({ type: "command", kind: "lock", reason: command.reason });
        stop = { kind: "lock", reason: command.reason };
        break;
      case CommandKind.LOGOUT:
        delete this.session.sessionToken;
        reaction.notifications.push({ type: "command", kind: "logout", reason: command.reason });
        stop = { kind: "logout", reason: command.reason };
        break;
      default:
        return;
    }
    if (id !== "") {
      const acks = this.session.commandAcks ?? [];
      acks.push({ commandId: id, sent: false });
      this.session.commandAcks = acks.slice(-MAX_REMEMBERED_COMMANDS);
      reaction.frames.push(...(await this.commandAcks([id])));
    }
    await this.storage.writeSession(this.session);
    if (!stop || !this.welcomedValue) return;
    if (stop.kind === "wipe" || stop.kind === "logout") reaction.frames.push(frame({ case: "logout", value: {} }));
    reaction.stop = stop;
  }

  /** Returns the CommandAck frames of `ids` when the session is open, recording them sent. */
  private async commandAcks(ids: readonly string[]): Promise<ClientFrame[]> {
    if (!this.welcomedValue || ids.length === 0) return [];
    for (const ack of this.session.commandAcks ?? []) {
      if (ids.includes(ack.commandId)) ack.sent = true;
    }
    await this.storage.writeSession(this.session);
    return ids.map((commandId) => frame({ case: "commandAck", value: { commandId } }));
  }

  /** Deletes all local data: records, cursors, queued mutations and the session. */
  async wipe(): Promise<void> {
    for (const partition of this.partitions.values()) partition.replica.clear();
    this.restored.clear();
    this.mutations.confirmed.clear();
    this.mutations.queue.clear();
    this.searches.clear();
    this.session = {};
    await this.mutations.queue.flushed().catch(() => undefined);
    await this.storage.clear();
  }

  /** Forgets the session token (logout). */
  async forgetSession(): Promise<void> {
    delete this.session.sessionToken;
    await this.storage.writeSession(this.session);
  }

  /** Reports `complete` when every subscribed partition is caught up or failed. */
  private checkComplete(reaction: Reaction): void {
    if (this.completeReported) return;
    const subscribed = [...this.partitions.values()].filter((partition) => partition.phase !== "idle");
    if (subscribed.length === 0) return;
    if (subscribed.some((partition) => partition.phase === "catching_up" || partition.phase === "bulk")) return;
    this.completeReported = true;
    let total = 0n;
    let cumulative = 0;
    for (const partition of subscribed) {
      total += partition.serverTotal;
      cumulative += partition.cumulative;
    }
    reaction.notifications.push({ type: "sync", source: "", key: "", status: "complete", total, processed: 0, cumulative });
  }
}

function syncNotification(partition: PartitionSync, status: SyncStatusName, total: bigint, processed: number): SyncNotification {
  return {
    type: "sync",
    source: partition.id.source,
    key: partition.id.key,
    status,
    total,
    processed,
    cumulative: partition.cumulative,
  };
}
