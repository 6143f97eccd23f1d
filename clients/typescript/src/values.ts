/**
 * Typed field values as an app handles them, and their protocol form (`syncline.v1.Value`).
 *
 * Every protocol value kind has its own JavaScript type, so a value keeps its type end to
 * end: `string` (text), `bigint` (64-bit integer), `number` (64-bit float), `boolean`,
 * `Uint8Array` (bytes), {@link BlobRef} (a file the record references) and `null` (an
 * explicit null).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { BlobSchema, NullValue, RecordSchema, ValueSchema } from "./gen/syncline/v1/common_pb.js";
import type { Record as RecordMessage, Value } from "./gen/syncline/v1/common_pb.js";
import { SynclineError } from "./errors.js";

/**
 * A file a record references (the protocol's `Blob`): the SHA-256 of its bytes as 64
 * lowercase hex digits, its size, media type and optional name. The bytes travel beside the
 * record, over HTTP on the device listener (see "Blobs" in device.proto).
 */
export class BlobRef {
  constructor(
    /** SHA-256 of the bytes, 64 lowercase hex digits. */
    readonly hash: string,
    /** Length in bytes. */
    readonly size: bigint,
    /** Media type, e.g. "image/jpeg". */
    readonly mediaType: string,
    /** The file's name ("" when unknown). */
    readonly name: string = "",
  ) {}

  /** Returns `blob:<hash>` (what logs and snapshots of records show). */
  toString(): string {
    return `blob:${this.hash}`;
  }

  /** Returns true when `other` references the same file the same way. */
  equals(other: BlobRef): boolean {
    return this.hash === other.hash && this.size === other.size && this.mediaType === other.mediaType && this.name === other.name;
  }
}

/** Blob hashes: SHA-256 as 64 lowercase hex digits. */
const BLOB_HASH = /^[0-9a-f]{64}$/;

/** One field value: text, a 64-bit integer, a float, a boolean, bytes, a blob or an explicit null. */
export type FieldValue = string | bigint | number | boolean | Uint8Array | BlobRef | null;

/** A record's fields by name. */
export type Fields = { [name: string]: FieldValue };

/** A record as the device holds it. */
export interface SyncRecord {
  /** The record's id, unique within its partition. */
  id: string;
  /** The record's fields by name. */
  fields: Fields;
  /** The partition sequence of the record's last change (0 for a change not yet synced). */
  version: bigint;
}

/** Throws a {@link SynclineError} `INVALID` unless every field is a {@link FieldValue} (integers within 64 bits). */
export function checkFields(fields: Fields): void {
  if (typeof fields !== "object" || fields === null) throw new SynclineError("INVALID", "fields must be an object");
  for (const [name, value] of Object.entries(fields)) {
    if (name === "") throw new SynclineError("INVALID", "a field name is empty");
    const ok =
      value === null ||
      value instanceof Uint8Array ||
      (value instanceof BlobRef && BLOB_HASH.test(value.hash) && value.mediaType !== "" && value.size >= 0n) ||
      ["string", "number", "boolean"].includes(typeof value) ||
      (typeof value === "bigint" && BigInt.asIntN(64, value) === value);
    if (!ok) throw new SynclineError("INVALID", `field ${name}: not a string, 64-bit bigint, number, boolean, Uint8Array, valid BlobRef or null`);
  }
}

/** Returns the protocol form of a field value. Integers must fit a signed 64-bit integer. */
export function toValue(value: FieldValue): Value {
  if (value === null) return create(ValueSchema, { kind: { case: "nullValue", value: NullValue.NULL_VALUE } });
  switch (typeof value) {
    case "string":
      return create(ValueSchema, { kind: { case: "stringValue", value } });
    case "bigint":
      if (BigInt.asIntN(64, value) !== value) throw new SynclineError("INVALID", `integer ${value} does not fit 64 bits`);
      return create(ValueSchema, { kind: { case: "intValue", value } });
    case "number":
      return create(ValueSchema, { kind: { case: "doubleValue", value } });
    case "boolean":
      return create(ValueSchema, { kind: { case: "boolValue", value } });
    default:
      if (value instanceof Uint8Array) return create(ValueSchema, { kind: { case: "bytesValue", value } });
      if (value instanceof BlobRef) {
        const blob = create(BlobSchema, { hash: value.hash, size: value.size, mediaType: value.mediaType, name: value.name });
        return create(ValueSchema, { kind: { case: "blobValue", value: blob } });
      }
      throw new SynclineError("INVALID", `not a field value: ${String(value)}`);
  }
}

/** Returns the app form of a protocol value; a value with no kind set reads as `null`. */
export function fromValue(value: Value): FieldValue {
  switch (value.kind.case) {
    case "stringValue":
    case "intValue":
    case "doubleValue":
    case "boolValue":
    case "bytesValue":
      return value.kind.value;
    case "blobValue": {
      const blob = value.kind.value;
      return new BlobRef(blob.hash, blob.size, blob.mediaType, blob.name);
    }
    default:
      return null;
  }
}

/** Returns the protocol form of a field map. */
export function toValues(fields: Fields): { [name: string]: Value } {
  const values: { [name: string]: Value } = {};
  for (const [name, value] of Object.entries(fields)) values[name] = toValue(value);
  return values;
}

/** Returns the app form of a protocol field map. */
export function fromValues(values: { [name: string]: Value }): Fields {
  const fields: Fields = {};
  for (const [name, value] of Object.entries(values)) fields[name] = fromValue(value);
  return fields;
}

/** Returns the app form of a protocol record. */
export function fromRecord(record: RecordMessage): SyncRecord {
  return { id: record.id, fields: fromValues(record.fields), version: record.version };
}

/** Returns the protocol form of a record. */
export function toRecord(record: SyncRecord): RecordMessage {
  return create(RecordSchema, { id: record.id, fields: toValues(record.fields), version: record.version });
}

/**
 * Returns `fields` with every {@link BlobRef} that lost its class on the way through a
 * structured clone (IndexedDB, `postMessage`: what comes back is a plain object with the same
 * properties) made a `BlobRef` again. Other values are kept as they are; `fields` is changed
 * in place and returned.
 */
export function reviveFields(fields: Fields): Fields {
  for (const [name, value] of Object.entries(fields)) {
    if (value === null || typeof value !== "object" || value instanceof Uint8Array || value instanceof BlobRef) continue;
    const plain = value as { hash?: unknown; size?: unknown; mediaType?: unknown; name?: unknown };
    if (typeof plain.hash === "string" && typeof plain.size === "bigint" && typeof plain.mediaType === "string") {
      fields[name] = new BlobRef(plain.hash, plain.size, plain.mediaType, typeof plain.name === "string" ? plain.name : "");
    }
  }
  return fields;
}

/** Returns a copy of a record whose field map can be changed without touching the original. */
export function copyRecord(record: SyncRecord): SyncRecord {
  return { id: record.id, fields: { ...record.fields }, version: record.version };
}
