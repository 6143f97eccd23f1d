/**
 * Frames on the wire: `ClientFrame`s out and `ServerFrame`s in, as protobuf binary frames
 * or as the canonical protobuf JSON mapping in text frames (the server answers in the format
 * of the device's first frame).
 *
 * @module
 */
import { fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import type { ClientFrame, ServerFrame } from "./gen/syncline/v1/device_pb.js";
import { ClientFrameSchema, ServerFrameSchema } from "./gen/syncline/v1/device_pb.js";
import { SynclineError } from "./errors.js";

/** The WebSocket subprotocol of the device protocol. */
export const SUBPROTOCOL = "syncline.v1";

/** The HTTP path of the device endpoint. */
export const SYNC_PATH = "/v1/sync";

/** How frames are encoded: protobuf binary (the default) or canonical JSON text. */
export type FrameFormat = "binary" | "json";

/** Encodes a device frame. */
export function encodeClientFrame(frame: ClientFrame, format: FrameFormat = "binary"): Uint8Array | string {
  return format === "binary" ? toBinary(ClientFrameSchema, frame) : toJsonString(ClientFrameSchema, frame);
}

/** Encodes a server frame (for tests and tools that play the server's side). */
export function encodeServerFrame(frame: ServerFrame, format: FrameFormat = "binary"): Uint8Array | string {
  return format === "binary" ? toBinary(ServerFrameSchema, frame) : toJsonString(ServerFrameSchema, frame);
}

/**
 * Decodes a server frame from a binary frame's bytes or a text frame's string; throws a
 * {@link SynclineError} with code `PROTOCOL` when it is not a valid ServerFrame.
 */
export function decodeServerFrame(data: Uint8Array | string): ServerFrame {
  try {
    return typeof data === "string"
      ? fromJsonString(ServerFrameSchema, data, { ignoreUnknownFields: true })
      : fromBinary(ServerFrameSchema, data);
  } catch (error) {
    throw new SynclineError("PROTOCOL", `undecodable server frame: ${String(error)}`, { cause: error });
  }
}

/** Decodes a device frame (for tests and tools that play the server's side). */
export function decodeClientFrame(data: Uint8Array | string): ClientFrame {
  try {
    return typeof data === "string"
      ? fromJsonString(ClientFrameSchema, data, { ignoreUnknownFields: true })
      : fromBinary(ClientFrameSchema, data);
  } catch (error) {
    throw new SynclineError("PROTOCOL", `undecodable device frame: ${String(error)}`, { cause: error });
  }
}
