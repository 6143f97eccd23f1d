// Builders of protocol messages for the tests.
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ChangesSchema, ServerFrameSchema } from "../src/gen/syncline/v1/device_pb.js";
import type { Changes, ClientFrame, ServerFrame } from "../src/gen/syncline/v1/device_pb.js";
import { RecordSchema } from "../src/gen/syncline/v1/common_pb.js";
import type { Record as RecordMessage } from "../src/gen/syncline/v1/common_pb.js";
import { Checksum } from "../src/checksum.js";
import { toValues } from "../src/values.js";
import type { Fields } from "../src/values.js";

export function record(id: string, version: number | bigint, fields: Fields = {}): RecordMessage {
  return create(RecordSchema, { id, version: BigInt(version), fields: toValues(fields) });
}

export function changes(init: MessageInitShape<typeof ChangesSchema>): Changes {
  return create(ChangesSchema, { source: "Account", key: "*", ...init });
}

export function server(msg: MessageInitShape<typeof ServerFrameSchema>["msg"]): ServerFrame {
  return create(ServerFrameSchema, { msg });
}

export function checksumOf(records: { id: string; version: bigint }[]): bigint {
  const sum = new Checksum();
  for (const item of records) sum.add(item.id, item.version);
  return sum.value;
}

/** Returns the frames of one kind from a list of client frames. */
export function framesOf(frames: ClientFrame[], kind: NonNullable<ClientFrame["msg"]["case"]>): unknown[] {
  return frames.filter((frame) => frame.msg.case === kind).map((frame) => frame.msg.value);
}

/** Waits until `condition()` holds, polling each few milliseconds, up to `timeoutMs`. */
export async function eventually(condition: () => boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
