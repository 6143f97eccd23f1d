/**
 * Reconnect delays: jittered exponential backoff, reset after a healthy session. The n-th
 * delay of a failing streak is drawn uniformly from `[d/2, d]` with
 * `d = min(max, initial * 2^n)`.
 *
 * @module
 */

/** Settings of {@link Backoff}. */
export interface BackoffOptions {
  /** First delay ceiling in milliseconds (default 500). */
  initialMs?: number;
  /** Largest delay in milliseconds (default 30,000). */
  maxMs?: number;
  /** A random source in [0, 1) (default `Math.random`); tests pass a seeded one. */
  random?: () => number;
}

/** Jittered exponential backoff. */
export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 500;
    this.maxMs = options.maxMs ?? 30_000;
    this.random = options.random ?? Math.random;
  }

  /** Returns the next delay of the current failing streak, in milliseconds. */
  nextDelay(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 52));
    this.attempt += 1;
    return this.jitter(ceiling / 2, ceiling);
  }

  /** Returns a short random delay for "reconnect now" closes: up to the initial delay. */
  restartDelay(): number {
    return this.jitter(0, this.initialMs);
  }

  /** Starts a new streak (after a healthy session). */
  reset(): void {
    this.attempt = 0;
  }

  private jitter(low: number, high: number): number {
    return high <= low ? high : low + this.random() * (high - low);
  }
}
