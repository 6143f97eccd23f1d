// The shared conformance vectors (proto/vectors/device-v1.json, generated and checked by the
// Rust test proto/tests/vectors.rs): this library must encode, decode and hash exactly as
// the Rust crate does.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
import type { DescMessage, JsonValue } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Checksum, recordHash } from "../src/checksum.js";
import { ClientFrameSchema, ServerFrameSchema } from "../src/gen/syncline/v1/device_pb.js";
import { encodeClientFrame, jsonFrames } from "../src/wire.js";
import { BlobRef, fromValues, toValues } from "../src/values.js";

interface FrameVector {
  name: string;
  binary: string;
  json: JsonValue;
}

interface Vectors {
  client_frames: FrameVector[];
  server_frames: FrameVector[];
  checksums: {
    records: { id: string; version: string; hash: string }[];
    partition: { records: { id: string; version: string }[]; checksum: string };
  };
}

const path = resolve(dirname(fileURLToPath(import.meta.url)), "../../../proto/vectors/device-v1.json");
const vectors = JSON.parse(readFileSync(path, "utf8")) as Vectors;

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function unhex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

/**
 * Frames whose bytes may legitimately differ: prost writes a oneof member at the place of the
 * oneof's declaration (Hello.backend_token, field 6, before fields 4 and 5), protobuf-es in
 * field-number order. Both are valid encodings of the same message; decoders accept either.
 */
const FIELD_ORDER_DIFFERS = new Set(["hello_backend_token"]);

function checkFrames(schema: DescMessage, frames: FrameVector[]): void {
  for (const frame of frames) {
    const decoded = fromBinary(schema, unhex(frame.binary));
    expect(toJson(schema, decoded), `${frame.name}: canonical JSON`).toEqual(frame.json);
    const encoded = toBinary(schema, decoded);
    expect(toJson(schema, fromBinary(schema, encoded)), `${frame.name}: re-encoded`).toEqual(frame.json);
    expect(hex(toBinary(schema, fromJson(schema, frame.json))), `${frame.name}: JSON and binary agree`).toBe(hex(encoded));
    if (!FIELD_ORDER_DIFFERS.has(frame.name)) expect(hex(encoded), `${frame.name}: the same bytes as Rust`).toBe(frame.binary);
  }
}

describe("shared conformance vectors", () => {
  it("covers every frame kind", () => {
    const kinds = (frames: FrameVector[]) => new Set(frames.map((frame) => Object.keys(frame.json as object)[0]));
    expect(kinds(vectors.client_frames)).toEqual(new Set(["hello", "subscribe", "ack", "pull", "mutate", "search", "rpcCall", "logout", "commandAck"]));
    expect(kinds(vectors.server_frames)).toEqual(
      new Set(["welcome", "changes", "syncState", "mutationAck", "mutationResult", "searchResult", "rpcReply", "command", "error"]),
    );
  });

  it("encodes and decodes device frames as the Rust crate does, in binary and canonical JSON", () => {
    checkFrames(ClientFrameSchema, vectors.client_frames);
  });

  it("encodes and decodes server frames as the Rust crate does, in binary and canonical JSON", () => {
    checkFrames(ServerFrameSchema, vectors.server_frames);
    for (const frame of vectors.server_frames) {
      // The library's own decoder reads both forms.
      const fromText = jsonFrames.decodeServer(JSON.stringify(frame.json));
      expect(hex(toBinary(ServerFrameSchema, fromText))).toBe(frame.binary);
    }
  });

  it("keeps every value type through the app's field representation", () => {
    const create = vectors.client_frames.find((frame) => frame.name === "mutate_create");
    const decoded = fromBinary(ClientFrameSchema, unhex(create?.binary ?? ""));
    if (decoded.msg.case !== "mutate") throw new Error("mutate_create is a Mutate");
    const fields = fromValues(decoded.msg.value.fields);
    expect(typeof fields.c_int).toBe("bigint");
    expect(typeof fields.g_double).toBe("number");
    expect(Number.isNaN(fields.j_nan)).toBe(true);
    expect(fields.o_bytes).toBeInstanceOf(Uint8Array);
    expect(fields.q_null).toBeNull();
    expect(fields.r_blob).toBeInstanceOf(BlobRef);
    expect(fields.r_blob).toEqual(new BlobRef("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", 4n, "text/plain", "test.txt"));
    decoded.msg.value.fields = toValues(fields);
    expect(hex(encodeClientFrame(decoded))).toBe(create?.binary);
  });

  it("hashes records and partitions as the Rust crate does", () => {
    for (const item of vectors.checksums.records) {
      expect(recordHash(item.id, BigInt(item.version)).toString(), item.id).toBe(item.hash);
    }
    const sum = new Checksum();
    for (const item of vectors.checksums.partition.records) sum.add(item.id, BigInt(item.version));
    expect(sum.value.toString()).toBe(vectors.checksums.partition.checksum);
  });
});
