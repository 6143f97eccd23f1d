// Records as plain JSON for fixtures: every value with its type, so a comparison sees a
// bigint that became a number or bytes that became text.
import { BlobRef } from "../src/values.js";
import type { FieldValue, SyncRecord } from "../src/values.js";

export type TypedValue = [string, string | number | boolean | null];

export interface FixtureRecord {
  id: string;
  version: string;
  fields: { [name: string]: TypedValue };
}

export function typedValue(value: FieldValue): TypedValue {
  if (value === null) return ["null", null];
  if (typeof value === "bigint") return ["int", value.toString()];
  if (typeof value === "number") return ["double", Number.isFinite(value) ? value : String(value)];
  if (typeof value === "string") return ["string", value];
  if (typeof value === "boolean") return ["bool", value];
  if (value instanceof Uint8Array) return ["bytes", [...value].join(",")];
  if (value instanceof BlobRef) return ["blob", JSON.stringify([value.hash, value.size.toString(), value.mediaType, value.name])];
  return ["unknown", String(value)];
}

export function fixtureRecord(record: SyncRecord): FixtureRecord {
  const fields: FixtureRecord["fields"] = {};
  for (const name of Object.keys(record.fields).sort()) fields[name] = typedValue(record.fields[name] ?? null);
  return { id: record.id, version: record.version.toString(), fields };
}
