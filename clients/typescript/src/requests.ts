/**
 * Requests answered on the socket by id (RPC calls and searches): each waits for its answer
 * with a deadline and fails with a typed error on timeout, disconnect or stop.
 *
 * @module
 */
import { SynclineError } from "./errors.js";
import type { ErrorCodeName } from "./errors.js";

interface Pending<T> {
  resolve: (value: T) => void;
  reject: (error: SynclineError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Requests in flight of one kind, by id. */
export class PendingRequests<T> {
  private readonly pending = new Map<string, Pending<T>>();

  constructor(private readonly what: string) {}

  /** Registers request `id`; the promise fails with TIMEOUT after `timeoutMs`. */
  wait(id: string, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SynclineError("TIMEOUT", `the ${this.what} was not answered within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  /** Answers request `id`; returns false when it is not in flight (late or unknown). */
  resolve(id: string, value: T): boolean {
    const pending = this.take(id);
    pending?.resolve(value);
    return pending !== undefined;
  }

  /** Fails request `id`; returns false when it is not in flight. */
  reject(id: string, error: SynclineError): boolean {
    const pending = this.take(id);
    pending?.reject(error);
    return pending !== undefined;
  }

  /** Fails every request in flight with `code`. */
  rejectAll(code: ErrorCodeName, message: string): void {
    for (const id of [...this.pending.keys()]) this.reject(id, new SynclineError(code, message));
  }

  private take(id: string): Pending<T> | undefined {
    const pending = this.pending.get(id);
    if (!pending) return undefined;
    clearTimeout(pending.timer);
    this.pending.delete(id);
    return pending;
  }
}
