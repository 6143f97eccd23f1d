/**
 * Bulk sync files on the device side (docs/BULK.md): downloading one with its bearer token
 * (resuming a cut download with `Range`), and reading and checking it with SQLite compiled to
 * WebAssembly (sql.js). The file's schema is `proto/src/bulk_file.rs`, format version 2: a
 * `meta` table (format version, partition, sequence, checksum, record count) and a `records`
 * table of `(id, version, fields)`, `fields` being the protobuf bytes of a `syncline.v1.Record`
 * with only its `fields` set.
 *
 * A file is accepted only when its format version, partition and sequence are the ones
 * announced, and its records' count and checksum (the library's {@link Checksum}, the
 * server's own function) equal both its `meta` table and the BulkReady.
 *
 * @module
 */
import { fromBinary } from "@bufbuild/protobuf";
import type { Database, SqlJsStatic, Statement } from "sql.js";
import { Backoff } from "./backoff.js";
import type { BackoffOptions } from "./backoff.js";
import { Checksum } from "./checksum.js";
import { SynclineError } from "./errors.js";
import { RecordSchema } from "./gen/syncline/v1/common_pb.js";
import { defaultFetch, delay, HttpError, refusal, retryable } from "./http.js";
import type { FetchLike } from "./http.js";
import { fromValues } from "./values.js";
import type { SyncRecord } from "./values.js";

/** The file format this reader understands (`bulk_file::FORMAT_VERSION`); others are refused. */
export const BULK_FORMAT_VERSION = 2;

/** Reads every record's id and version from the covering index (`bulk_file::SELECT_IDS_AND_VERSIONS`). */
export const SELECT_IDS_AND_VERSIONS = "SELECT id, version FROM records INDEXED BY records_check";

/** Reads every record in id order (`bulk_file::SELECT_RECORDS`). */
export const SELECT_RECORDS = "SELECT id, version, fields FROM records";

/** Download attempts before a bulk download is given up (as the Rust library). */
export const DEFAULT_DOWNLOAD_ATTEMPTS = 20;

/** What BulkReady announced about a file: the file must say the same. */
export interface BulkFileExpectation {
  source: string;
  key: string;
  sequence: bigint;
  recordCount: bigint;
  checksum: bigint;
}

/** A checked bulk file's contents. */
export interface BulkFileContents extends BulkFileExpectation {
  /** When the server wrote the file (Unix milliseconds). */
  createdMs: number;
  /** The records, in id order, their fields decoded. */
  records: SyncRecord[];
}

/** Why a file was refused. */
export type BulkFileProblem = "not_sqlite" | "format_version" | "partition" | "sequence" | "record_count" | "checksum" | "fields";

/** A bulk file that is not the one announced or not intact (code `PROTOCOL`). */
export class BulkFileError extends SynclineError {
  constructor(
    /** What did not match. */
    readonly problem: BulkFileProblem,
    message: string,
  ) {
    super("PROTOCOL", `bulk file refused (${problem}): ${message}`);
    this.name = "BulkFileError";
  }
}

/** Loads SQLite compiled to WebAssembly (sql.js). */
export type SqlJsLoader = () => Promise<SqlJsStatic>;

/** Where sql.js finds its WebAssembly module. */
export interface SqlJsOptions {
  /**
   * URL of `sql-wasm.wasm` (browsers: serve `node_modules/sql.js/dist/sql-wasm-browser.wasm`
   * with the app, or let the bundler emit it; never a CDN). Node finds it in node_modules.
   */
  wasmUrl?: string;
  /** The module's bytes, when the app has them already (no fetch at all). */
  wasmBinary?: ArrayBuffer | Uint8Array;
}

/** Returns a loader of sql.js that loads it once (later calls share the same instance). */
export function sqlJsLoader(options: SqlJsOptions = {}): SqlJsLoader {
  let loaded: Promise<SqlJsStatic> | undefined;
  return () => {
    loaded ??= (async () => {
      const module = (await import("sql.js")) as unknown as { default: (config?: object) => Promise<SqlJsStatic> };
      const config: { locateFile?: (file: string) => string; wasmBinary?: ArrayBuffer } = {};
      if (options.wasmUrl !== undefined) {
        const url = options.wasmUrl;
        config.locateFile = () => url;
      }
      if (options.wasmBinary !== undefined) {
        const binary = options.wasmBinary;
        config.wasmBinary = binary instanceof Uint8Array ? binary.slice().buffer : binary;
      }
      return module.default(config);
    })();
    loaded.catch(() => {
      loaded = undefined;
    });
    return loaded;
  };
}

/** Settings of a download. */
export interface BulkDownloadOptions {
  fetch?: FetchLike;
  /** The file's size as announced (BulkReady), for progress before the first answer. */
  expectedBytes?: number;
  /** Called as bytes arrive: bytes held so far and the file's size. */
  onProgress?: (bytes: number, total: number) => void;
  /** Attempts before giving up (default {@link DEFAULT_DOWNLOAD_ATTEMPTS}). */
  maxAttempts?: number;
  /** Delays between attempts (default 200 ms doubling to 5 s, jittered). */
  backoff?: BackoffOptions;
  /** Aborts the download (it then rejects with `STOPPED`). */
  signal?: AbortSignal;
}

/** A downloaded file and how it got here. */
export interface DownloadedFile {
  bytes: Uint8Array;
  /** Requests that resumed with `Range` and got 206. */
  resumed: number;
  /** Times the server sent the whole file again (200 to a range request) and it restarted. */
  restarted: number;
  /** Requests made. */
  requests: number;
}

/**
 * Downloads a bulk file with `Authorization: Bearer <token>`. A cut download resumes with
 * `Range: bytes=<held>-` (206); a 200 to a range request starts over with its body; 401 and
 * 403 (forged, expired or foreign token) and 404 fail at once with a typed {@link HttpError};
 * network failures, 5xx and 429 are tried again with backoff up to `maxAttempts` times.
 */
export async function downloadBulkFile(url: string, token: string, options: BulkDownloadOptions = {}): Promise<DownloadedFile> {
  const fetchImpl = options.fetch ?? defaultFetch();
  const backoff = new Backoff(options.backoff ?? { initialMs: 200, maxMs: 5000 });
  const maxAttempts = options.maxAttempts ?? DEFAULT_DOWNLOAD_ATTEMPTS;
  let chunks: Uint8Array[] = [];
  let held = 0;
  let total = options.expectedBytes ?? 0;
  const stats = { resumed: 0, restarted: 0, requests: 0 };
  let lastError: unknown;
  for (let attempt = 1; ; attempt += 1) {
    if (options.signal?.aborted) throw new SynclineError("STOPPED", "the bulk download was stopped");
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (held > 0) headers.range = `bytes=${held}-`;
    let response: Response | undefined;
    try {
      stats.requests += 1;
      response = await fetchImpl(url, { headers, cache: "no-store", ...(options.signal ? { signal: options.signal } : {}) });
    } catch (error) {
      if (options.signal?.aborted) throw new SynclineError("STOPPED", "the bulk download was stopped");
      lastError = new HttpError("UNAVAILABLE", `bulk download failed: ${String(error)}`, 0);
    }
    if (response) {
      const range = response.status === 206 ? contentRange(response.headers.get("content-range")) : undefined;
      if (response.status === 206 && range?.first === held) {
        if (held > 0) stats.resumed += 1;
        if (range.total !== undefined) total = range.total;
      } else if (response.status === 200) {
        if (held > 0) stats.restarted += 1;
        chunks = [];
        held = 0;
        const length = Number(response.headers.get("content-length") ?? "");
        if (Number.isFinite(length) && length > 0) total = length;
      } else if (response.status === 206 || response.status === 416) {
        // A range the server could not serve as asked (the file changed?): start over.
        await response.body?.cancel().catch(() => undefined);
        lastError = new HttpError("UNAVAILABLE", `bulk download: HTTP ${response.status} to bytes=${held}-`, response.status);
        chunks = [];
        held = 0;
        response = undefined;
      } else {
        const error = await refusal(response, "bulk download");
        if (!retryable(response.status)) throw error;
        lastError = error;
        response = undefined;
      }
    }
    if (response) {
      const before = held;
      try {
        const reader = response.body?.getReader();
        if (!reader) throw new Error("the answer has no body");
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          chunks.push(value);
          held += value.length;
          options.onProgress?.(held, Math.max(total, held));
        }
        if (total === 0 || held >= total) return { bytes: concat(chunks, held), ...stats };
        lastError = new HttpError("UNAVAILABLE", `bulk download ended at ${held} of ${total} bytes`, response.status);
      } catch (error) {
        if (options.signal?.aborted) throw new SynclineError("STOPPED", "the bulk download was stopped");
        lastError = new HttpError("UNAVAILABLE", `bulk download cut at ${held} bytes: ${String(error)}`, response.status);
      }
      // Bytes arrived: the connection works, so the next attempt comes soon.
      if (held > before) backoff.reset();
    }
    if (attempt >= maxAttempts) throw lastError;
    await delay(backoff.nextDelay(), options.signal);
  }
}

/** Parses `Content-Range: bytes first-last/total`. */
function contentRange(value: string | null): { first: number; total: number | undefined } | undefined {
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(value?.trim() ?? "");
  if (!match) return undefined;
  return { first: Number(match[1]), total: match[2] === "*" ? undefined : Number(match[2]) };
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1 && chunks[0]?.length === length) return chunks[0];
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

/**
 * Reads and checks a bulk file: refuses it ({@link BulkFileError}) unless its format
 * version, partition and sequence are `expected`'s and its records' count and checksum equal
 * its `meta` table's and `expected`'s; returns its records with their fields decoded.
 */
export async function readBulkFile(bytes: Uint8Array, expected: BulkFileExpectation, loadSqlJs: SqlJsLoader = sqlJsLoader()): Promise<BulkFileContents> {
  const SQL = await loadSqlJs();
  let db: Database;
  try {
    db = new SQL.Database(bytes);
  } catch (error) {
    throw new BulkFileError("not_sqlite", String(error));
  }
  try {
    return readOpenFile(db, expected);
  } finally {
    db.close();
  }
}

function readOpenFile(db: Database, expected: BulkFileExpectation): BulkFileContents {
  const meta = new Map<string, string>();
  try {
    for (const row of db.exec("SELECT name, value FROM meta")[0]?.values ?? []) meta.set(String(row[0]), String(row[1]));
  } catch (error) {
    throw new BulkFileError("not_sqlite", `no meta table: ${String(error)}`);
  }
  const format = meta.get("format_version");
  if (format !== String(BULK_FORMAT_VERSION)) {
    throw new BulkFileError("format_version", `format version ${format ?? "(none)"}, this library reads ${BULK_FORMAT_VERSION}`);
  }
  const source = meta.get("source") ?? "";
  const key = meta.get("key") ?? "";
  if (source !== expected.source || key !== expected.key) {
    throw new BulkFileError("partition", `the file holds ${source}/${key}, not ${expected.source}/${expected.key}`);
  }
  const number = (name: string): bigint => {
    const text = meta.get(name) ?? "";
    if (!/^\d+$/.test(text)) throw new BulkFileError(name === "sequence" ? "sequence" : name === "checksum" ? "checksum" : "record_count", `meta ${name} is ${JSON.stringify(text)}`);
    return BigInt(text);
  };
  const sequence = number("sequence");
  if (sequence !== expected.sequence) throw new BulkFileError("sequence", `the file is at sequence ${sequence}, BulkReady said ${expected.sequence}`);
  const metaCount = number("record_count");
  const metaChecksum = number("checksum");

  // The ids and versions from the narrow index first: a file that does not add up is refused
  // before any fields are decoded.
  const indexSum = new Checksum();
  let indexCount = 0n;
  const ids = db.prepare(SELECT_IDS_AND_VERSIONS);
  try {
    while (ids.step()) {
      const [id, version] = rowWithBigInts(ids);
      indexSum.add(String(id), toBigInt(version));
      indexCount += 1n;
    }
  } finally {
    ids.free();
  }
  for (const [what, count, checksum] of [["its meta table", metaCount, metaChecksum], ["BulkReady", expected.recordCount, expected.checksum]] as const) {
    if (indexCount !== count) throw new BulkFileError("record_count", `${indexCount} records, ${what} says ${count}`);
    if (indexSum.value !== checksum) throw new BulkFileError("checksum", `the records' checksum is ${indexSum.value}, ${what} says ${checksum}`);
  }

  const records: SyncRecord[] = [];
  const rowSum = new Checksum();
  const rows = db.prepare(SELECT_RECORDS);
  try {
    while (rows.step()) {
      const [id, version, fields] = rowWithBigInts(rows);
      const record: SyncRecord = { id: String(id), version: toBigInt(version), fields: decodeFields(String(id), fields) };
      rowSum.add(record.id, record.version);
      records.push(record);
    }
  } finally {
    rows.free();
  }
  if (BigInt(records.length) !== indexCount || rowSum.value !== indexSum.value) {
    throw new BulkFileError("checksum", "the records table and its index disagree");
  }
  const createdMs = Number(meta.get("created_ms") ?? "0");
  return { source, key, sequence, recordCount: metaCount, checksum: metaChecksum, createdMs, records };
}

/** The current row with integers as bigints (sql.js reads them as doubles unless asked). */
function rowWithBigInts(statement: Statement): unknown[] {
  const withConfig = statement as unknown as { get(params: null, config: { useBigInt: boolean }): unknown[] };
  return withConfig.get(null, { useBigInt: true });
}

function toBigInt(value: unknown): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isSafeInteger(value)) return BigInt(value);
  throw new BulkFileError("fields", `a version is not an integer: ${String(value)}`);
}

/** Decodes a `fields` column: the protobuf bytes of a Record with only its fields set. */
export function decodeFields(id: string, column: unknown): SyncRecord["fields"] {
  if (!(column instanceof Uint8Array)) throw new BulkFileError("fields", `record ${id}: fields are not a blob`);
  try {
    return fromValues(fromBinary(RecordSchema, column).fields);
  } catch (error) {
    throw new BulkFileError("fields", `record ${id}: ${String(error)}`);
  }
}
