/**
 * Plain HTTP beside the socket: the device listener serves bulk files (`/v1/bulk/{file}`) and
 * blobs (`/v1/blobs/{hash}`) on the socket's host and port (docs/BULK.md, "Blobs" in
 * device.proto). What both need: where those routes are, `fetch` with a bearer token, and
 * the server's JSON refusals as typed errors.
 *
 * @module
 */
import { SynclineError } from "./errors.js";
import type { ErrorCodeName } from "./errors.js";

/** The part of `fetch` the library uses (the global one by default; tests pass their own). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Returns the global `fetch`, bound (calling it unbound throws in browsers). */
export function defaultFetch(): FetchLike {
  return (input, init) => globalThis.fetch(input, init);
}

/**
 * Returns the HTTP(S) origin of the device listener a socket URL names: `ws://h:p/v1/sync`
 * is `http://h:p`, `wss://` is `https://`.
 */
export function httpBase(socketUrl: string): string {
  const url = new URL(socketUrl);
  const scheme = url.protocol === "wss:" || url.protocol === "https:" ? "https:" : "http:";
  return `${scheme}//${url.host}`;
}

/** Returns an absolute URL for `url`: kept when absolute, else a path on the device listener. */
export function resolveUrl(socketUrl: string, url: string): string {
  return /^https?:\/\//i.test(url) ? url : `${httpBase(socketUrl)}${url.startsWith("/") ? "" : "/"}${url}`;
}

/** The error code an HTTP refusal means. */
export function statusCode(status: number): ErrorCodeName {
  switch (status) {
    case 400:
    case 422:
      return "BAD_REQUEST";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "FORBIDDEN";
    case 404:
      return "NOT_FOUND";
    case 409:
      return "CONFLICT";
    case 413:
    case 429:
      return "RESOURCE_EXHAUSTED";
    case 408:
    case 504:
      return "TIMEOUT";
    default:
      return status >= 500 ? "UNAVAILABLE" : "PROTOCOL";
  }
}

/** Statuses a request may be tried again after (the server or the network, not the request). */
export function retryable(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** An HTTP refusal as a typed error: its code, the server's message and the HTTP status. */
export class HttpError extends SynclineError {
  constructor(
    code: ErrorCodeName,
    message: string,
    /** The HTTP status (0: no answer, the network failed). */
    readonly status: number,
    /** The server's own code from its JSON body (e.g. `hash_mismatch`), when it sent one. */
    readonly serverCode = "",
  ) {
    super(code, message);
    this.name = "HttpError";
  }
}

/** Returns the typed error of a refused response, reading its JSON `{code, message}` if any. */
export async function refusal(response: Response, what: string): Promise<HttpError> {
  let serverCode = "";
  let message = `${what}: HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { code?: unknown; message?: unknown };
    if (typeof body.code === "string") serverCode = body.code;
    if (typeof body.message === "string" && body.message !== "") message = `${what}: ${body.message} (HTTP ${response.status})`;
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  return new HttpError(statusCode(response.status), message, response.status, serverCode);
}

/** Waits `ms` or until `signal` aborts (then rejects with STOPPED). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new SynclineError("STOPPED", "aborted"));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new SynclineError("STOPPED", "aborted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
