/**
 * Typed field values as an app handles them, and their protocol form (`syncline.v1.Value`).
 *
 * Every protocol value kind has its own JavaScript type, so a value keeps its type end to
 * end: `string` (text), `bigint` (64-bit integer), `number` (64-bit float), `boolean`,
 * `Uint8Array` (bytes) and `null` (an explicit null).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { NullValue, RecordSchema, ValueSchema } from "./gen/syncline/v1/common_pb.js";
import type { Record as RecordMessage, Value } from "./gen/syncline/v1/common_pb.js";
import { SynclineError } from "./errors.js";

/** One field value: text, a 64-bit integer, a float, a boolean, bytes or an explicit null. */
export type FieldValue = string | bigint | number | boolean | Uint8Array | null;

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
      ["string", "number", "boolean"].includes(typeof value) ||
      (typeof value === "bigint" && BigInt.asIntN(64, value) === value);
    if (!ok) throw new SynclineError("INVALID", `field ${name}: not a string, 64-bit bigint, number, boolean, Uint8Array or null`);
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

/** Returns a copy of a record whose field map can be changed without touching the original. */
export function copyRecord(record: SyncRecord): SyncRecord {
  return { id: record.id, fields: { ...record.fields }, version: record.version };
}
