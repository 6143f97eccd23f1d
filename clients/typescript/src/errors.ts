/**
 * Typed errors of the library: every failure an app can see carries an {@link ErrorCodeName}
 * (the protocol's `ErrorCode`, or one of the library's own for local conditions).
 *
 * @module
 */
import { ErrorCode } from "./gen/syncline/v1/device_pb.js";

/** The protocol's error codes by name (`CONFLICT`, `NOT_FOUND`, ...). */
export type ProtocolErrorCode = keyof typeof ErrorCode;

/**
 * Why something failed: a protocol error code, or one of the library's own:
 * `OFFLINE` (no connection), `DISCONNECTED` (the connection ended before the answer),
 * `STOPPED` (the client was stopped), `INVALID` (a bad argument), `STORAGE` (the local store
 * failed), `PROTOCOL` (the server sent something this library does not understand).
 */
export type ErrorCodeName = ProtocolErrorCode | "OFFLINE" | "DISCONNECTED" | "STOPPED" | "INVALID" | "STORAGE" | "PROTOCOL";

/** An error with a typed code. */
export class SynclineError extends Error {
  /** What kind of failure this is. */
  readonly code: ErrorCodeName;

  /** Returns an error with `code` and a human-readable `message`. */
  constructor(code: ErrorCodeName, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SynclineError";
    this.code = code;
  }
}

/** Returns the name of a protocol error code (`UNSPECIFIED` for numbers this version does not know). */
export function errorCodeName(code: number): ProtocolErrorCode {
  const name = ErrorCode[code] as ProtocolErrorCode | undefined;
  return name ?? "UNSPECIFIED";
}
