import { describe, expect, it } from "vitest";
import { Backoff } from "../src/backoff.js";

function seeded(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

describe("backoff", () => {
  it("grows within its jitter bounds up to the cap and resets", () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 2000, random: seeded(7) });
    for (const ceiling of [100, 200, 400, 800, 1600, 2000, 2000]) {
      const delay = backoff.nextDelay();
      expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
      expect(delay).toBeLessThanOrEqual(ceiling);
    }
    for (let n = 0; n < 100; n += 1) expect(backoff.nextDelay()).toBeLessThanOrEqual(2000);
    backoff.reset();
    expect(backoff.nextDelay()).toBeLessThanOrEqual(100);
    expect(backoff.restartDelay()).toBeLessThanOrEqual(100);
  });

  it("gives equal delays for equal random sources", () => {
    const a = new Backoff({ random: seeded(42) });
    const b = new Backoff({ random: seeded(42) });
    for (let n = 0; n < 10; n += 1) expect(a.nextDelay()).toBe(b.nextDelay());
  });
});
