//! Bulk sync on the device: downloading a partition's SQLite file (resuming with `Range`
//! after a cut), checking it, and reading it into a [`PartitionView`] the engine swaps in
//! as the partition's replica in one step (`docs/BULK.md`).
//!
//! The engine decides when (a first sync, or a reset, of a subscription configured with
//! [`crate::SubscriptionConfig::with_bulk`]); the device task runs `fetch_and_load` off its
//! socket loop and reports progress and the outcome back through `BulkEvent`s.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use syncline_proto::bulk_file::{self, meta};
use syncline_proto::checksum::Checksum;
use syncline_proto::v1::{self, Record};

use crate::replica::{PartitionId, PartitionView};

/// Attempts at one download before it fails: each cut resumes where the last one stopped.
pub const MAX_DOWNLOAD_ATTEMPTS: u32 = 20;

/// Longest pause between two attempts (they back off from 50 ms).
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Bytes buffered before a write to the downloaded file.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Most bytes of a downloaded file SQLite maps into memory to read it.
const READ_MMAP_BYTES: i64 = 1 << 30;

/// Most records a load reserves room for before reading them (a file's count is its own
/// claim until checked).
const MAX_PREALLOCATED: usize = 1 << 20;

/// Bytes between two download progress reports.
pub const PROGRESS_EVERY_BYTES: u64 = 4 * 1024 * 1024;

/// Why a bulk file could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BulkLoadError {
    /// The server refused the download (401, 403, 404): ask again or page instead.
    #[error("the server refused the download ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's JSON error body.
        message: String,
    },
    /// The download kept failing.
    #[error("the download failed after {attempts} attempts: {message}")]
    Download {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// The local file could not be written or read.
    #[error("local file: {0}")]
    Io(String),
    /// The file is not a bulk file of this format, or not the one announced.
    #[error("the bulk file is not what BulkReady announced: {0}")]
    Format(String),
    /// The file's records do not add up to its checksum and count.
    #[error("the bulk file's records hold {got:?} (records, checksum), it announced {expected:?}")]
    Checksum {
        /// Record count and checksum announced (meta table and BulkReady).
        expected: (u64, u64),
        /// Record count and checksum of the records read.
        got: (u64, u64),
    },
}

impl From<rusqlite::types::FromSqlError> for BulkLoadError {
    fn from(error: rusqlite::types::FromSqlError) -> Self {
        BulkLoadError::Format(error.to_string())
    }
}

impl From<rusqlite::Error> for BulkLoadError {
    fn from(error: rusqlite::Error) -> Self {
        BulkLoadError::Format(error.to_string())
    }
}

impl From<std::io::Error> for BulkLoadError {
    fn from(error: std::io::Error) -> Self {
        BulkLoadError::Io(error.to_string())
    }
}

/// A file to download for a partition, as BulkReady announced it.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkDownload {
    /// The partition.
    pub partition: PartitionId,
    /// The file's URL, token, sequence, count, checksum and size.
    pub file: v1::BulkFile,
}

/// What a download reports to the device task.
#[derive(Debug)]
pub(crate) enum BulkEvent {
    /// `bytes` of `total` are on disk.
    Progress { partition: PartitionId, bytes: u64, total: u64 },
    /// The file is downloaded and checked (the view), or failed.
    Loaded { partition: PartitionId, outcome: Result<PartitionView, BulkLoadError> },
}

/// Returns the absolute URL of a file whose BulkReady URL is `url`, for a device connected
/// to `sync_url`: a path is on the device endpoint's host (`ws` read as `http`, `wss` as
/// `https`).
pub fn resolve_url(sync_url: &str, url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        return url.to_owned();
    }
    let (scheme, rest) = match sync_url.split_once("://") {
        Some(("wss" | "https", rest)) => ("https", rest),
        Some((_, rest)) => ("http", rest),
        None => ("http", sync_url),
    };
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}{url}")
}

/// Downloads `url` with the bearer `token` into `path`, resuming with `Range` from what
/// `path` already holds (after a cut, or from an earlier attempt) until it holds `size`
/// bytes; `progress` hears the bytes on disk as they grow. A 401, 403 or 404 fails at once;
/// other failures are retried up to [`MAX_DOWNLOAD_ATTEMPTS`] times.
pub async fn download_file(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &Path,
    size: u64,
    mut progress: impl FnMut(u64),
) -> Result<u64, BulkLoadError> {
    let mut pause = Duration::from_millis(50);
    let mut last_failure = String::new();
    for _ in 0..MAX_DOWNLOAD_ATTEMPTS {
        let have = std::fs::metadata(path).map(|metadata| metadata.len()).unwrap_or(0);
        if size > 0 && have == size {
            return Ok(have);
        }
        match download_attempt(client, url, token, path, have, &mut progress).await {
            Ok(total) if size == 0 || total == size => return Ok(total),
            Ok(total) => last_failure = format!("the response ended at {total} of {size} bytes"),
            Err(Attempt::Refused(refused)) => return Err(refused),
            Err(Attempt::Failed(message)) => last_failure = message,
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
    Err(BulkLoadError::Download { attempts: MAX_DOWNLOAD_ATTEMPTS, message: last_failure })
}

/// How one attempt failed.
enum Attempt {
    /// Do not retry.
    Refused(BulkLoadError),
    /// Retry from what is on disk.
    Failed(String),
}

/// One request: from byte `have` on (a `Range` request when above 0); returns the bytes
/// on disk when the response ended.
async fn download_attempt(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &Path,
    have: u64,
    progress: &mut impl FnMut(u64),
) -> Result<u64, Attempt> {
    let mut request = client.get(url).bearer_auth(token);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().await.map_err(|error| Attempt::Failed(error.to_string()))?;
    let status = response.status().as_u16();
    let mut on_disk = match status {
        206 => have,
        200 => 0,
        // The file on disk is longer than the server's: start over.
        416 => {
            std::fs::remove_file(path).map_err(|error| Attempt::Failed(error.to_string()))?;
            return Err(Attempt::Failed("the range asked for is past the file's end".to_owned()));
        }
        401 | 403 | 404 => {
            let message = response.text().await.unwrap_or_default();
            return Err(Attempt::Refused(BulkLoadError::Refused { status, message }));
        }
        other => return Err(Attempt::Failed(format!("HTTP status {other}"))),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(on_disk > 0)
        .truncate(on_disk == 0)
        .open(path)
        .map_err(|error| Attempt::Refused(BulkLoadError::Io(error.to_string())))?;
    // Chunks arrive a few KiB at a time: write them in larger pieces.
    let mut file = std::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut reported = on_disk;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                file.write_all(&chunk).map_err(|error| Attempt::Refused(BulkLoadError::Io(error.to_string())))?;
                on_disk += chunk.len() as u64;
                if on_disk - reported >= PROGRESS_EVERY_BYTES {
                    reported = on_disk;
                    progress(on_disk);
                }
            }
            Ok(None) => break,
            Err(error) => {
                file.flush().map_err(|error| Attempt::Refused(BulkLoadError::Io(error.to_string())))?;
                return Err(Attempt::Failed(format!("cut after {on_disk} bytes: {error}")));
            }
        }
    }
    file.flush().map_err(|error| Attempt::Refused(BulkLoadError::Io(error.to_string())))?;
    progress(on_disk);
    Ok(on_disk)
}

/// Reads a downloaded bulk file into a view of its partition at the file's sequence, after
/// checking that it is the file `expected` announced (format, partition, sequence) and that
/// its records add up to the count and checksum announced.
pub fn load_file(
    path: &Path,
    partition: &PartitionId,
    expected: &v1::BulkFile,
) -> Result<PartitionView, BulkLoadError> {
    let mut records = Vec::with_capacity(usize::try_from(expected.record_count).unwrap_or(0).min(MAX_PREALLOCATED));
    let checked = scan_file(path, partition, expected, true, |id, version, fields| {
        let fields = bulk_file::decode_fields(fields.unwrap_or_default())
            .map_err(|error| BulkLoadError::Format(format!("record {id}: fields: {error}")))?;
        records.push((id.to_owned(), Record { id: id.to_owned(), fields, version }));
        Ok(())
    })?;
    // In id order already: the map is built in one pass.
    let records = records.into_iter().collect();
    Ok(PartitionView { cursor: checked.sequence, total: checked.record_count, checksum: checked.checksum, records })
}

/// What a checked file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedFile {
    /// The sequence it holds the partition at.
    pub sequence: u64,
    /// Its records, counted.
    pub record_count: u64,
    /// Their checksum, computed.
    pub checksum: u64,
}

/// Checks a downloaded bulk file as [`load_file`] does and hands each record's id, version
/// and (when `with_fields`) encoded fields ([`bulk_file::decode_fields`]) to `each`, in id
/// order. Without fields only the file's `(id, version)` index is read: a device that keeps
/// the file itself as its local store checks it without reading the records' fields.
pub fn scan_file(
    path: &Path,
    partition: &PartitionId,
    expected: &v1::BulkFile,
    with_fields: bool,
    mut each: impl FnMut(&str, u64, Option<&[u8]>) -> Result<(), BulkLoadError>,
) -> Result<CheckedFile, BulkLoadError> {
    let connection = open_read_only(path)?;
    let sequence = check_meta(&connection, partition, expected)?;
    let mut checksum = Checksum::default();
    let mut count = 0u64;
    let query = if with_fields { bulk_file::SELECT_RECORDS } else { bulk_file::SELECT_IDS_AND_VERSIONS };
    let mut statement = connection.prepare(query)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id = row.get_ref(0)?.as_str()?;
        let version = u64::try_from(row.get::<_, i64>(1)?)
            .map_err(|_| BulkLoadError::Format(format!("record {id} has a negative version")))?;
        checksum.add(id, version);
        count += 1;
        let fields = if with_fields { Some(row.get_ref(2)?.as_blob()?) } else { None };
        each(id, version, fields)?;
    }
    let got = (count, checksum.0);
    if got != (expected.record_count, expected.checksum) {
        return Err(BulkLoadError::Checksum { expected: (expected.record_count, expected.checksum), got });
    }
    Ok(CheckedFile { sequence, record_count: count, checksum: checksum.0 })
}

/// Opens a downloaded file read-only, mapped into memory (its pages are read straight from
/// the OS's cache, not copied into SQLite's).
fn open_read_only(path: &Path) -> Result<Connection, BulkLoadError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.pragma_update_and_check(None, "mmap_size", READ_MMAP_BYTES, |row| row.get::<_, i64>(0))?;
    Ok(connection)
}

/// Checks the file's `meta` table against the partition and `expected` (BulkReady's
/// announcement) and returns the file's sequence.
fn check_meta(connection: &Connection, partition: &PartitionId, expected: &v1::BulkFile) -> Result<u64, BulkLoadError> {
    let values: BTreeMap<String, String> = connection
        .prepare("SELECT name, value FROM meta")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let text = |name: &str| values.get(name).ok_or_else(|| BulkLoadError::Format(format!("no meta {name}")));
    let number = |name: &str| {
        text(name)?.parse::<u64>().map_err(|_| BulkLoadError::Format(format!("meta {name} is not a number")))
    };
    if number(meta::FORMAT_VERSION)? != u64::from(bulk_file::FORMAT_VERSION) {
        return Err(BulkLoadError::Format(format!("format version {}", text(meta::FORMAT_VERSION)?)));
    }
    if text(meta::SOURCE)? != &partition.source || text(meta::KEY)? != &partition.key {
        return Err(BulkLoadError::Format(format!("the file holds {}/{}", text(meta::SOURCE)?, text(meta::KEY)?)));
    }
    let sequence = number(meta::SEQUENCE)?;
    if sequence != expected.sequence {
        return Err(BulkLoadError::Format(format!("sequence {sequence}, announced {}", expected.sequence)));
    }
    let announced = (number(meta::RECORD_COUNT)?, number(meta::CHECKSUM)?);
    if announced != (expected.record_count, expected.checksum) {
        return Err(BulkLoadError::Format(format!(
            "the file states {announced:?} (records, checksum), BulkReady {:?}",
            (expected.record_count, expected.checksum)
        )));
    }
    Ok(sequence)
}

/// Downloads a partition's file into `dir` and loads it, reporting progress and the
/// outcome through `events`; the file is deleted once read (or failed).
pub(crate) async fn fetch_and_load(
    client: reqwest::Client,
    sync_url: String,
    download: BulkDownload,
    dir: PathBuf,
    events: tokio::sync::mpsc::UnboundedSender<BulkEvent>,
) {
    let outcome = fetch_and_check(&client, &sync_url, &download, &dir, &events).await;
    let _ = events.send(BulkEvent::Loaded { partition: download.partition, outcome });
}

async fn fetch_and_check(
    client: &reqwest::Client,
    sync_url: &str,
    download: &BulkDownload,
    dir: &Path,
    events: &tokio::sync::mpsc::UnboundedSender<BulkEvent>,
) -> Result<PartitionView, BulkLoadError> {
    let BulkDownload { partition, file } = download;
    std::fs::create_dir_all(dir)?;
    let name: String =
        file.url.rsplit('/').next().unwrap_or("bulk").chars().filter(char::is_ascii_alphanumeric).collect();
    let path = dir.join(format!("{name}.sqlite"));
    let url = resolve_url(sync_url, &file.url);
    let total = file.bytes;
    let downloaded = download_file(client, &url, &file.token, &path, total, |bytes| {
        let _ = events.send(BulkEvent::Progress { partition: partition.clone(), bytes, total });
    })
    .await;
    let loaded = match downloaded {
        Ok(_) => {
            let (path, partition, file) = (path.clone(), partition.clone(), file.clone());
            tokio::task::spawn_blocking(move || load_file(&path, &partition, &file))
                .await
                .unwrap_or_else(|error| Err(BulkLoadError::Io(error.to_string())))
        }
        Err(error) => Err(error),
    };
    let _ = std::fs::remove_file(&path);
    loaded
}

/// The device task's downloads: each runs as a task of its own (aborted when the device
/// stops) and reports through one channel the task reads beside its socket.
pub(crate) struct BulkRunner {
    sync_url: String,
    ca_cert_pem: Option<Vec<u8>>,
    dir: PathBuf,
    /// The runner made `dir` (a temporary folder) and deletes it when dropped.
    owns_dir: bool,
    client: Option<reqwest::Client>,
    sender: tokio::sync::mpsc::UnboundedSender<BulkEvent>,
    events: tokio::sync::mpsc::UnboundedReceiver<BulkEvent>,
    tasks: tokio::task::JoinSet<()>,
}

impl BulkRunner {
    /// Returns a runner for a device connected to `sync_url` (trusting `ca_cert_pem` for
    /// https), downloading into `dir` (or a folder of the temporary directory).
    pub(crate) fn new(sync_url: &str, ca_cert_pem: Option<Vec<u8>>, dir: Option<PathBuf>) -> Self {
        let owns_dir = dir.is_none();
        let dir = dir.unwrap_or_else(|| {
            use rand::Rng as _;
            std::env::temp_dir().join(format!("syncline-bulk-{:016x}", rand::rng().random::<u64>()))
        });
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        Self {
            sync_url: sync_url.to_owned(),
            ca_cert_pem,
            dir,
            owns_dir,
            client: None,
            sender,
            events,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Starts downloading each of `downloads`; a client that cannot be built reports each
    /// as failed at once.
    pub(crate) fn start(&mut self, downloads: Vec<BulkDownload>) {
        for download in downloads {
            let client = match self.client() {
                Ok(client) => client,
                Err(error) => {
                    let outcome = Err(BulkLoadError::Io(error));
                    let _ = self.sender.send(BulkEvent::Loaded { partition: download.partition, outcome });
                    continue;
                }
            };
            let (url, dir, sender) = (self.sync_url.clone(), self.dir.clone(), self.sender.clone());
            self.tasks.spawn(fetch_and_load(client, url, download, dir, sender));
        }
    }

    /// Waits for the next progress report or outcome.
    pub(crate) async fn next_event(&mut self) -> BulkEvent {
        loop {
            tokio::select! {
                event = self.events.recv() => {
                    // The runner holds a sender itself: the channel never closes.
                    if let Some(event) = event {
                        return event;
                    }
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
    }

    fn client(&mut self) -> Result<reqwest::Client, String> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(pem) = &self.ca_cert_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem).map_err(|error| error.to_string())? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build().map_err(|error| error.to_string())?;
        self.client = Some(client.clone());
        Ok(client)
    }
}

impl Drop for BulkRunner {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use syncline_proto::v1::Value;

    /// Writes a file of `records` (id, version, n) as the server's writer lays it out, with
    /// the meta values given; returns what BulkReady would announce for it.
    fn write_file(path: &Path, records: &[(&str, u64, i64)], format_version: u32) -> v1::BulkFile {
        let connection = Connection::open(path).expect("open");
        connection.execute_batch(bulk_file::SCHEMA).expect("schema");
        let mut checksum = Checksum::default();
        for (id, version, n) in records {
            let mut fields = Vec::new();
            bulk_file::encode_fields(&BTreeMap::from([("n".to_owned(), Value::int(*n))]), &mut fields);
            connection
                .execute(bulk_file::UPSERT_RECORD, rusqlite::params![id, *version as i64, fields])
                .expect("insert");
            checksum.add(id, *version);
        }
        let file = v1::BulkFile {
            source: "Account".into(),
            key: "*".into(),
            sequence: 9,
            record_count: records.len() as u64,
            checksum: checksum.0,
            ..v1::BulkFile::default()
        };
        let meta = [
            (meta::FORMAT_VERSION, format_version.to_string()),
            (meta::SOURCE, file.source.clone()),
            (meta::KEY, file.key.clone()),
            (meta::SEQUENCE, file.sequence.to_string()),
            (meta::CHECKSUM, file.checksum.to_string()),
            (meta::RECORD_COUNT, file.record_count.to_string()),
            (meta::CREATED_MS, "1".to_owned()),
        ];
        for (name, value) in meta {
            connection.execute("INSERT INTO meta (name, value) VALUES (?1, ?2)", [name, value.as_str()]).expect("meta");
        }
        file
    }

    const RECORDS: [(&str, u64, i64); 3] = [("a", 3, 1), ("b", 9, -2), ("c", 5, 3)];

    #[test]
    fn a_file_loads_with_its_fields_and_scans_ids_and_versions_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f.sqlite");
        let file = write_file(&path, &RECORDS, bulk_file::FORMAT_VERSION);
        let partition = PartitionId::new("Account", "*");
        let view = load_file(&path, &partition, &file).expect("loads");
        assert_eq!((view.cursor, view.total, view.checksum), (9, 3, file.checksum));
        assert_eq!(view.records["b"].fields["n"], Value::int(-2));
        assert_eq!(view.records["b"].version, 9);
        let mut seen = Vec::new();
        scan_file(&path, &partition, &file, false, |id, version, fields| {
            assert!(fields.is_none());
            seen.push((id.to_owned(), version));
            Ok(())
        })
        .expect("checks");
        assert_eq!(seen, [("a".to_owned(), 3), ("b".to_owned(), 9), ("c".to_owned(), 5)]);
    }

    #[test]
    fn another_format_partition_count_or_checksum_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let partition = PartitionId::new("Account", "*");
        let old = dir.path().join("old.sqlite");
        let file = write_file(&old, &RECORDS, 1);
        assert!(
            matches!(load_file(&old, &partition, &file), Err(BulkLoadError::Format(message)) if message.contains("format version 1"))
        );

        let path = dir.path().join("f.sqlite");
        let file = write_file(&path, &RECORDS, bulk_file::FORMAT_VERSION);
        let other = PartitionId::new("Account", "u1");
        assert!(matches!(scan_file(&path, &other, &file, false, |_, _, _| Ok(())), Err(BulkLoadError::Format(_))));
        let announced_otherwise = v1::BulkFile { checksum: file.checksum ^ 1, ..file.clone() };
        assert!(matches!(load_file(&path, &partition, &announced_otherwise), Err(BulkLoadError::Format(_))));
        // A record changed after the file was written: its meta no longer adds up.
        Connection::open(&path)
            .expect("open")
            .execute("UPDATE records SET version = 4 WHERE id = 'a'", [])
            .expect("tamper");
        for with_fields in [false, true] {
            let scanned = scan_file(&path, &partition, &file, with_fields, |_, _, _| Ok(()));
            assert!(matches!(scanned, Err(BulkLoadError::Checksum { .. })), "{with_fields}: {scanned:?}");
        }
    }

    #[test]
    fn relative_urls_resolve_against_the_socket() {
        assert_eq!(resolve_url("ws://127.0.0.1:7700/v1/sync", "/v1/bulk/ab"), "http://127.0.0.1:7700/v1/bulk/ab");
        assert_eq!(resolve_url("wss://sync.example.com/v1/sync", "/v1/bulk/ab"), "https://sync.example.com/v1/bulk/ab");
        assert_eq!(resolve_url("ws://a/v1/sync", "https://cdn.example.com/x"), "https://cdn.example.com/x");
    }
}
