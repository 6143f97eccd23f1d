import { describe, expect, it } from "vitest";
import { Checksum, recordHash } from "../src/checksum.js";

/** FNV-1a 64 written the obvious way with bigints, to check the limb arithmetic against. */
function reference(id: string, version: bigint): bigint {
  let hash = 0xcbf29ce484222325n;
  const bytes = [...new TextEncoder().encode(id), 0];
  for (let shift = 0n; shift < 64n; shift += 8n) bytes.push(Number((version >> shift) & 0xffn));
  for (const byte of bytes) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash;
}

describe("checksum", () => {
  it("hashes records as FNV-1a 64 over id, a zero byte and the little-endian version", () => {
    const ids = ["", "x", "acc-1", "Ünïcode ✓ 🦀", "a\u0000b", "z".repeat(600)];
    const versions = [0n, 1n, 2n, 255n, 256n, 1n << 40n, 0xffffffffffffffffn];
    for (const id of ids) for (const version of versions) expect(recordHash(id, version)).toBe(reference(id, version));
  });

  it("is order independent, reversible and wraps around 2^64", () => {
    const a = new Checksum();
    a.add("x", 1n);
    a.add("y", 2n);
    const b = new Checksum();
    b.add("y", 2n);
    b.add("x", 1n);
    expect(a.value).toBe(b.value);
    a.remove("x", 1n);
    const c = new Checksum();
    c.add("y", 2n);
    expect(a.value).toBe(c.value);
    expect(recordHash("x", 1n)).not.toBe(recordHash("x", 2n));
    const many = new Checksum();
    for (let n = 0; n < 100; n += 1) many.add(`r${n}`, BigInt(n));
    expect(many.value).toBeLessThan(1n << 64n);
    expect(many.value).toBeGreaterThanOrEqual(0n);
  });
});
