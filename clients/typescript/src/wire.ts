/**
 * Frames on the wire: `ClientFrame`s out and `ServerFrame`s in, as protobuf binary frames
 * (the default) or, with {@link jsonFrames}, as the canonical protobuf JSON mapping in text
 * frames (the server answers in the format of the device's first frame). The JSON codec is a
 * value of its own so that apps using binary frames do not bundle the JSON mapping.
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

/** Encodes and decodes frames of one format. */
export interface FrameCodec {
  /** Encodes a device frame for the socket. */
  encodeClient(frame: ClientFrame): Uint8Array | string;
  /** Decodes a frame from the socket: a binary frame's bytes or a text frame's string. */
  decodeServer(data: Uint8Array | string): ServerFrame;
}

/** How frames are encoded: protobuf binary (`"binary"`, the default) or a codec such as {@link jsonFrames}. */
export type FrameFormat = "binary" | FrameCodec;

function decodeError(what: string, error: unknown): SynclineError {
  return new SynclineError("PROTOCOL", `undecodable ${what} frame: ${String(error)}`, { cause: error });
}

/** Encodes a device frame as protobuf binary. */
export function encodeClientFrame(frame: ClientFrame): Uint8Array {
  return toBinary(ClientFrameSchema, frame);
}

/** Encodes a server frame as protobuf binary (for tests and tools that play the server). */
export function encodeServerFrame(frame: ServerFrame): Uint8Array {
  return toBinary(ServerFrameSchema, frame);
}

/** Decodes a binary server frame; throws a {@link SynclineError} `PROTOCOL` when it is not one. */
export function decodeServerFrame(data: Uint8Array): ServerFrame {
  try {
    return fromBinary(ServerFrameSchema, data);
  } catch (error) {
    throw decodeError("server", error);
  }
}

/** Decodes a binary device frame (for tests and tools that play the server). */
export function decodeClientFrame(data: Uint8Array): ClientFrame {
  try {
    return fromBinary(ClientFrameSchema, data);
  } catch (error) {
    throw decodeError("device", error);
  }
}

/** Protobuf binary frames; a text frame is a protocol error. */
export const binaryFrames: FrameCodec = {
  encodeClient: encodeClientFrame,
  decodeServer(data) {
    if (typeof data === "string") throw new SynclineError("PROTOCOL", "a text frame on a binary connection");
    return decodeServerFrame(data);
  },
};

/** Canonical-JSON text frames (binary frames are read too). */
export const jsonFrames: FrameCodec = {
  encodeClient: (frame) => toJsonString(ClientFrameSchema, frame),
  decodeServer(data) {
    if (typeof data !== "string") return decodeServerFrame(data);
    try {
      return fromJsonString(ServerFrameSchema, data, { ignoreUnknownFields: true });
    } catch (error) {
      throw decodeError("server", error);
    }
  },
};
