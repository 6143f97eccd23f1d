/**
 * The order-independent checksum of a partition's live set, exactly as the server computes
 * it (`syncline_proto::checksum`): each live record contributes FNV-1a 64 over the id's
 * UTF-8 bytes, a zero byte and the version as 8 little-endian bytes; the checksum is the
 * wrapping 64-bit sum of the contributions.
 *
 * @module
 */

const encoder = new TextEncoder();
const MASK_64 = (1n << 64n) - 1n;

/** Returns one record's contribution to its partition's checksum (an unsigned 64-bit value). */
export function recordHash(id: string, version: bigint): bigint {
  // FNV-1a 64 in four 16-bit limbs (least significant first), so that each step is exact in
  // doubles. The prime is 2^40 + 0x1b3.
  let h0 = 0x2325;
  let h1 = 0x8422;
  let h2 = 0x9ce4;
  let h3 = 0xcbf2;
  const step = (byte: number): void => {
    h0 ^= byte;
    const t0 = h0 * 0x1b3;
    let t1 = h1 * 0x1b3;
    let t2 = h2 * 0x1b3;
    let t3 = h3 * 0x1b3;
    t2 += h0 << 8;
    t3 += h1 << 8;
    t1 += t0 >>> 16;
    h0 = t0 & 0xffff;
    t2 += t1 >>> 16;
    h1 = t1 & 0xffff;
    h3 = (t3 + (t2 >>> 16)) & 0xffff;
    h2 = t2 & 0xffff;
  };
  for (const byte of encoder.encode(id)) step(byte);
  step(0);
  const low = Number(BigInt.asUintN(32, version));
  const high = Number(BigInt.asUintN(32, version >> 32n));
  for (let shift = 0; shift < 32; shift += 8) step((low >>> shift) & 0xff);
  for (let shift = 0; shift < 32; shift += 8) step((high >>> shift) & 0xff);
  return (BigInt(h3 * 0x10000 + h2) << 32n) | BigInt(h1 * 0x10000 + h0);
}

/** An order-independent checksum being accumulated. */
export class Checksum {
  /** The checksum so far (unsigned 64-bit). */
  value = 0n;

  /** Adds a live record. */
  add(id: string, version: bigint): void {
    this.value = (this.value + recordHash(id, version)) & MASK_64;
  }

  /** Removes a record that was live at `version`. */
  remove(id: string, version: bigint): void {
    this.value = (this.value - recordHash(id, version)) & MASK_64;
  }
}
