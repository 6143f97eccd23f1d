/**
 * Blob uploads and downloads against the device listener (`/v1/blobs/{hash}`, "Blobs" in
 * device.proto), authenticated with the session token of the device's last Welcome.
 *
 * - {@link uploadBlob} hashes the bytes (SHA-256, Web Crypto), asks how much the server holds
 *   (`HEAD`: `Upload-Length` when stored, else `Upload-Offset`), and sends the rest in pieces
 *   (`PUT` with `Content-Range: bytes first-last/total`), resuming after a cut piece from
 *   the offset the server reports; returns the {@link BlobRef} to put in a record's fields.
 * - {@link downloadBlob} downloads a blob's bytes, resuming a cut download with
 *   `Range: bytes=<held>-` (206), naming the record that references it when the device did
 *   not upload it itself.
 *
 * Refusals are typed {@link HttpError}s: 401 `UNAUTHENTICATED`, 403 `FORBIDDEN`, 404
 * `NOT_FOUND`, 413 `RESOURCE_EXHAUSTED` (`blob_too_large`), 422 `BAD_REQUEST`
 * (`hash_mismatch`).
 *
 * @module
 */
import { Backoff } from "./backoff.js";
import type { BackoffOptions } from "./backoff.js";
import { defaultFetch, delay, HttpError, refusal, retryable } from "./http.js";
import type { FetchLike } from "./http.js";
import { BlobRef } from "./values.js";

/** Path prefix of the blob routes (`syncline_proto::BLOBS_PATH`). */
export const BLOBS_PATH = "/v1/blobs";

/** Bytes sent per upload request (default): a cut piece costs at most this much again. */
export const DEFAULT_PIECE_BYTES = 4 * 1024 * 1024;

/** Attempts of one transfer before it is given up. */
export const DEFAULT_BLOB_ATTEMPTS = 10;

/** Settings of a blob transfer. */
export interface BlobTransferOptions {
  fetch?: FetchLike;
  /** Bytes per upload request (default {@link DEFAULT_PIECE_BYTES}). */
  pieceBytes?: number;
  /** Attempts before giving up (default {@link DEFAULT_BLOB_ATTEMPTS}). */
  maxAttempts?: number;
  backoff?: BackoffOptions;
  signal?: AbortSignal;
  /** Called as bytes go or arrive: bytes done and the blob's size. */
  onProgress?: (bytes: number, total: number) => void;
}

/** Returns the SHA-256 of `bytes` as 64 lowercase hex digits (a blob's name). */
export async function blobHash(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return [...digest].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Runs `attempt` until it returns, retrying network failures and retryable statuses. */
async function withRetries<T>(options: BlobTransferOptions, attempt: () => Promise<T>): Promise<T> {
  const backoff = new Backoff(options.backoff ?? { initialMs: 200, maxMs: 5000 });
  const maxAttempts = options.maxAttempts ?? DEFAULT_BLOB_ATTEMPTS;
  for (let tries = 1; ; tries += 1) {
    try {
      return await attempt();
    } catch (error) {
      const again = !(error instanceof HttpError) || error.status === 0 || retryable(error.status);
      if (!again || tries >= maxAttempts || options.signal?.aborted) throw error;
    }
    await delay(backoff.nextDelay(), options.signal);
  }
}

async function send(fetchImpl: FetchLike, url: string, init: RequestInit, what: string): Promise<Response> {
  try {
    return await fetchImpl(url, init);
  } catch (error) {
    throw new HttpError("UNAVAILABLE", `${what} failed: ${String(error)}`, 0);
  }
}

/**
 * Uploads `bytes` as a blob (resumable, hash checked by the server) to the device listener
 * at `base` (`http(s)://host:port`) with the session token; returns its reference.
 */
export async function uploadBlob(
  base: string,
  sessionToken: string,
  bytes: Uint8Array,
  mediaType: string,
  name = "",
  options: BlobTransferOptions = {},
): Promise<BlobRef> {
  const fetchImpl = options.fetch ?? defaultFetch();
  const hash = await blobHash(bytes);
  const url = `${base}${BLOBS_PATH}/${hash}`;
  const authorization = `Bearer ${sessionToken}`;
  const total = bytes.length;
  const pieceBytes = Math.max(1, options.pieceBytes ?? DEFAULT_PIECE_BYTES);
  await withRetries(options, async () => {
    const held = await send(fetchImpl, url, { method: "HEAD", headers: { authorization } }, "blob upload");
    if (!held.ok) throw await refusal(held, "blob upload");
    if (held.headers.get("upload-length") !== null) return;
    let offset = Number(held.headers.get("upload-offset") ?? "0");
    while (offset < total || total === 0) {
      const end = Math.min(total, offset + pieceBytes);
      const headers: Record<string, string> = { authorization, "content-type": mediaType };
      if (total > 0) headers["content-range"] = `bytes ${offset}-${end - 1}/${total}`;
      const body = bytes.slice(offset, end);
      const response = await send(fetchImpl, url, { method: "PUT", headers, body, ...(options.signal ? { signal: options.signal } : {}) }, "blob upload");
      if (response.status === 409) {
        // The server holds another amount (a piece cut earlier): continue from there.
        const at = Number(response.headers.get("upload-offset") ?? "NaN");
        await response.body?.cancel().catch(() => undefined);
        if (!Number.isFinite(at)) throw new HttpError("CONFLICT", "blob upload: 409 without Upload-Offset", 409);
        offset = at;
        continue;
      }
      if (!response.ok) throw await refusal(response, "blob upload");
      await response.body?.cancel().catch(() => undefined);
      offset = Number(response.headers.get("upload-offset") ?? String(end));
      options.onProgress?.(offset, total);
      if (response.status === 200 || response.status === 201 || total === 0) return;
    }
  });
  return new BlobRef(hash, BigInt(total), mediaType, name);
}

/** Names the record that references a blob (the device may read its partition). */
export interface BlobRecordHint {
  source: string;
  key: string;
  id: string;
}

/**
 * Downloads blob `ref` (or a hash) from the device listener at `base` with the session
 * token, resuming a cut download with `Range`; checks its size and SHA-256.
 */
export async function downloadBlob(
  base: string,
  sessionToken: string,
  ref: BlobRef | string,
  record?: BlobRecordHint,
  options: BlobTransferOptions = {},
): Promise<Uint8Array> {
  const fetchImpl = options.fetch ?? defaultFetch();
  const hash = typeof ref === "string" ? ref : ref.hash;
  const query = record ? `?${new URLSearchParams({ source: record.source, key: record.key, id: record.id }).toString()}` : "";
  const url = `${base}${BLOBS_PATH}/${hash}${query}`;
  const chunks: Uint8Array[] = [];
  let held = 0;
  let total = typeof ref === "string" ? 0 : Number(ref.size);
  await withRetries(options, async () => {
    const headers: Record<string, string> = { authorization: `Bearer ${sessionToken}` };
    if (held > 0) headers.range = `bytes=${held}-`;
    const response = await send(fetchImpl, url, { headers, cache: "no-store", ...(options.signal ? { signal: options.signal } : {}) }, "blob download");
    if (response.status === 200) {
      chunks.length = 0;
      held = 0;
    } else if (response.status !== 206) {
      throw await refusal(response, "blob download");
    }
    const length = Number(response.headers.get("content-length") ?? "NaN");
    if (Number.isFinite(length)) total = held + length;
    const reader = response.body?.getReader();
    if (!reader) throw new HttpError("PROTOCOL", "blob download: no body", response.status);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        held += value.length;
        options.onProgress?.(held, Math.max(held, total));
      }
    } catch (error) {
      throw new HttpError("UNAVAILABLE", `blob download cut at ${held} bytes: ${String(error)}`, 0);
    }
    if (held < total) throw new HttpError("UNAVAILABLE", `blob download ended at ${held} of ${total} bytes`, 0);
  });
  const bytes = new Uint8Array(held);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  if ((await blobHash(bytes)) !== hash) throw new HttpError("PROTOCOL", `blob ${hash}: the bytes do not hash to its name`, 200);
  return bytes;
}
