//! The configuration's defaults and bounds, by section.

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default device (WebSocket) listener: loopback only until an operator opens it up.
pub const DEFAULT_DEVICE_ADDR: &str = "127.0.0.1:7700";
/// Default gRPC listener (Ingest): loopback only.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7701";
/// Default admin (HTTP) listener: loopback only, since it manages the whole app.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:7702";
/// Shortest admin password accepted (`admin.password`, API and CLI): long enough that the
/// login rate limit makes online guessing hopeless.
pub const MIN_ADMIN_PASSWORD_CHARS: usize = 8;
/// Largest device frame: a page of a few hundred records fits comfortably, and one device
/// cannot make the server buffer more than this per read.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Outbound frames queued per connection before a live subscriber is demoted to catch-up:
/// absorbs bursts of about a second at 100 changes/s without demotion.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 128;
/// Default bound of the encoded bytes queued for live push per connection (1 MiB, as
/// Centrifugo's client queue).
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 1024 * 1024;
/// Server ping interval: below common NAT and load-balancer idle timeouts (60 s).
pub const DEFAULT_HEARTBEAT_SECS: u64 = 25;
/// Idle timeout: more than two missed heartbeats.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Time a new connection has to complete a Hello before it is closed (Error TIMEOUT, close
/// 4408): a device sends Hello right after connecting, and a password check or a channel's
/// login takes well under a second, so 10 s covers slow mobile networks while a socket that
/// only answers pings holds its resources for no longer than this.
pub const DEFAULT_HELLO_TIMEOUT_MS: u64 = 10_000;
/// Most simultaneous device connections per process (about the file-descriptor limit of a
/// default Linux service).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default catch-up page size, in records or changes.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Largest page size a device may ask for: bounds one page's frame and read transaction.
pub const DEFAULT_MAX_PAGE_SIZE: u32 = 2_000;
/// Smallest `device.max_frame_bytes` accepted: room for a Hello and a small page.
pub const MIN_MAX_FRAME_BYTES: usize = 1024;
/// Most simultaneous sessions of one user, by default: no limit (0).
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 0;
/// Most encoded bytes of one catch-up page or live frame (256 KiB): pages of typical records
/// (a few hundred bytes) stay bounded by `DEFAULT_PAGE_SIZE`, while pages of large ones stop
/// at a quarter of the live queue's byte bound (`DEFAULT_OUTBOUND_QUEUE_BYTES`), so a page
/// never holds up a connection's live frames for long, and a full window of
/// `DEFAULT_WINDOW` pages is one queue's worth. Far below common WebSocket message limits
/// (the device library's 16 MiB, browsers' and proxies' few MiB). A single record larger than
/// the bound goes alone in its frame; one larger than a device's message limit cannot reach it,
/// which tonic's default 4 MiB message limit on Ingest and channel streams rules out today.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 256 * 1024;
/// Smallest `device.max_page_bytes` accepted: room for a page's own fields and a few small
/// records.
pub const MIN_MAX_PAGE_BYTES: usize = 1024;
/// Default in-flight window of unacked catch-up pages: four pages of `DEFAULT_MAX_PAGE_BYTES`
/// fill one live queue's byte bound.
pub const DEFAULT_WINDOW: u32 = 4;
/// Largest in-flight window a device may ask for: bounds the pages one subscription has
/// queued at once.
pub const DEFAULT_MAX_WINDOW: u32 = 16;
/// Most subscriptions one connection may hold.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;
/// Unfinished mutations per device: a week offline at a few hundred edits a day.
pub const DEFAULT_MAX_PENDING_MUTATIONS: u64 = 10_000;
/// Shortest backend token secret: an HS256 key must be at least as long as the hash
/// (256 bits, RFC 7518 section 3.2), or it is guessable offline from one token.
pub const MIN_BACKEND_TOKEN_SECRET_BYTES: usize = 32;
/// Session tokens last 30 days; a device that stays away longer logs in again.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// Password checks at once (`auth.login_concurrency`): 0 means one per core, at most
/// [`syncline_proto::sdk::passwords::MAX_DEFAULT_THREADS`], since each local hashing thread
/// keeps an argon2 buffer (19 MiB with the default parameters) for good.
pub const DEFAULT_LOGIN_CONCURRENCY: usize = 0;
/// Most password checks at once an operator may configure: 64 hashing threads already hold
/// 1.2 GiB of argon2 buffers.
pub const MAX_LOGIN_CONCURRENCY: usize = 64;
/// Logins that may wait for a password check; more are refused (RESOURCE_EXHAUSTED). At
/// ~20-50 ms per check, 64 drain in about a second on two cores.
pub const DEFAULT_LOGIN_QUEUE: usize = syncline_proto::sdk::passwords::DEFAULT_QUEUE;
/// Longest a login waits for a password check before it is refused (RESOURCE_EXHAUSTED): a
/// device is better told to retry than left hanging.
pub const DEFAULT_LOGIN_QUEUE_TIMEOUT_MS: u64 = 2_000;
/// Wrong passwords for one user name within the window that block it: a person mistyping
/// stays far below, an online guesser gets 10 tries per backoff.
pub const DEFAULT_MAX_FAILED_LOGINS_PER_USER: u32 = 10;
/// Wrong passwords from one address (IPv6: one /64) within the window that block it: room
/// for many people behind one NAT, none for credential stuffing from one host.
pub const DEFAULT_MAX_FAILED_LOGINS_PER_ADDRESS: u32 = 100;
/// The window failed logins are counted in.
pub const DEFAULT_FAILED_LOGIN_WINDOW_SECS: u64 = 300;
/// The first block's length; each block of the same key in a row doubles it (up to 32x).
pub const DEFAULT_FAILED_LOGIN_BACKOFF_SECS: u64 = 60;
/// Longest failed-login window or first backoff: a day (a block can double to 32 days).
pub const MAX_FAILED_LOGIN_SECS: u64 = 24 * 3600;
/// Longest a login may be configured to wait for a password check: a device's Hello should
/// be answered within a minute.
pub const MAX_LOGIN_QUEUE_TIMEOUT_MS: u64 = 60_000;
/// Recent log entries kept uncompacted: devices less than this far behind catch up from the
/// log instead of taking a snapshot.
pub const DEFAULT_COMPACT_KEEP_RECENT: u64 = 100_000;
/// How often partitions are checked for compaction.
pub const DEFAULT_COMPACT_INTERVAL_SECS: u64 = 300;
/// A cached bulk file is reused while its partition moved fewer changes than this since
/// it was written: the device then catches up those changes from the log, which takes a
/// few pages, far less than writing the file again.
pub const DEFAULT_BULK_REUSE_CHANGES: u64 = 10_000;
/// Download tokens last 5 minutes: long enough to start (and resume) a download right after
/// BulkReady, short enough that a leaked token is soon worthless.
pub const DEFAULT_BULK_TOKEN_TTL_SECS: u64 = 300;
/// Bulk files are deleted an hour after they were written: they are snapshots for devices
/// syncing now, not backups.
pub const DEFAULT_BULK_FILE_TTL_SECS: u64 = 3600;
/// Bulk files written at once: each write reads the store and fills a SQLite file on one
/// core; two leave the rest of the server room on a small machine.
pub const DEFAULT_BULK_MAX_CONCURRENT_WRITES: usize = 2;
/// Bulk jobs accepted and not finished at once (more get RESOURCE_EXHAUSTED): each holds a
/// manifest on disk and, while it waits, one task.
pub const DEFAULT_BULK_MAX_QUEUED_JOBS: usize = 256;
/// How long a finished mutation's outcome is kept (30 days, as long as a session token
/// lives): a device that resends a mutation id within it gets the outcome back instead of a
/// second dispatch. A device offline longer logs in again anyway.
pub const DEFAULT_MUTATION_OUTCOME_RETENTION_HOURS: u64 = 30 * 24;
/// Largest blob (`blob.max_bytes`): 100 MiB, a phone video or a scanned document; uploads
/// declaring more are refused (413) before a byte is read.
pub const DEFAULT_BLOB_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// How long an unreferenced blob is kept (`blob.gc_grace_secs`): a day, so a device that
/// uploaded a blob and then went offline before sending the mutation referencing it has
/// time to come back.
pub const DEFAULT_BLOB_GC_GRACE_SECS: u64 = 24 * 3600;
/// How often unreferenced blobs are looked for (`blob.gc_interval_secs`): each pass reads
/// every live record, so it runs rarely.
pub const DEFAULT_BLOB_GC_INTERVAL_SECS: u64 = 3600;
/// Directory of blob files under `data_dir` when `blob.dir` is not set.
pub const DEFAULT_BLOB_DIR_NAME: &str = "blobs";
/// Region of `[blob.s3]` when none is set: AWS's default, which most S3-compatible
/// services (MinIO, R2) accept whatever their own location.
pub const DEFAULT_BLOB_S3_REGION: &str = "us-east-1";
/// How often channels are described again to notice schema changes
/// (`grpc.describe_interval_secs`): a schema changes with a backend release, rarely.
pub const DEFAULT_DESCRIBE_INTERVAL_SECS: u64 = 300;
/// How often recorded device cursors are written to the store.
pub const DEFAULT_CURSOR_FLUSH_MILLIS: u64 = 1_000;
/// How long a cluster lease lasts without renewal: the longest a dead node's capture and
/// mutation lanes wait before another node takes them (renewed every third of it).
pub const DEFAULT_LEASE_TTL_MS: u64 = 5_000;
/// How often each cluster node looks for queued mutations no node dispatches.
pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 2_000;
/// Threads of the runtime serving the gRPC endpoint (Ingest) and change capture, by default.
pub const DEFAULT_GRPC_THREADS: usize = 1;
/// At most this many of those threads.
pub const MAX_GRPC_THREADS: usize = 256;
/// Catch-up page reads (store read and frame encoding) a node runs at once, per CPU core, when
/// `device.catch_up_reads` is 0 (the default).
pub const CATCH_UP_READS_PER_CORE: usize = 4;
/// Most catch-up page reads at once (`device.catch_up_reads`): each runs on a blocking
/// thread, and tokio's blocking pool has 512.
pub const MAX_CATCH_UP_READS: usize = 512;
/// Default push interval: every commit is pushed at once (0).
pub const DEFAULT_PUSH_INTERVAL_MS: u64 = 0;
/// The `device.cors_origins` entry that allows any origin (the default; safe because the
/// device listener's HTTP routes take bearer tokens, never cookies).
pub const ANY_ORIGIN: &str = "*";
/// Longest push interval (`device.push_interval_ms`).
pub const MAX_PUSH_INTERVAL_MS: u64 = 1_000;
/// Time allowed for graceful shutdown before the process exits anyway
/// (`shutdown_grace_secs`): devices are told to reconnect and in-flight calls finish well
/// within it.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// redb page cache.
pub const DEFAULT_STORE_CACHE_MB: usize = 256;
/// Default poll interval: frequent enough for interactive data, rare enough for a backend.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 30;
/// Records per source seeded into the demo app's partitions.
pub const DEFAULT_DEMO_RECORDS: u32 = 2_000;
/// Deadline of a device's RPC call that names none: long enough for a business operation
/// over a slow backend, short enough that a device is not left waiting on a hung one.
pub const DEFAULT_RPC_DEADLINE_MS: u64 = 10_000;
/// Longest deadline a device may ask for: bounds how long one call holds its concurrency
/// slots and backend resources.
pub const DEFAULT_RPC_MAX_DEADLINE_MS: u64 = 60_000;
/// Largest RPC request or reply payload: a form or a small document, well inside one
/// device frame (`device.max_frame_bytes`).
pub const DEFAULT_RPC_MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// RPC calls one device may have in flight: enough for an app's parallel screens, few enough
/// that one device cannot take a service's whole capacity.
pub const DEFAULT_RPC_MAX_IN_FLIGHT_PER_DEVICE: usize = 8;
/// RPC calls in flight to one service, from all devices: protects the backend; calls beyond
/// it are refused (RESOURCE_EXHAUSTED) rather than queued.
pub const DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE: usize = 1_000;
