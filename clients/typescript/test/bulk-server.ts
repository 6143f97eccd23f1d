// Asks a real `syncline serve` for a bulk file over a raw socket (Hello, BulkRequest,
// BulkReady) and downloads it: what the bulk tests and the fixture script share.
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { WebSocket } from "ws";
import { ClientFrameSchema } from "../src/gen/syncline/v1/device_pb.js";
import type { BulkReady, ClientFrame } from "../src/gen/syncline/v1/device_pb.js";
import { decodeServerFrame, encodeClientFrame, SUBPROTOCOL } from "../src/wire.js";
import { PROTOCOL_VERSION } from "../src/engine.js";

function frame(msg: MessageInitShape<typeof ClientFrameSchema>["msg"]): ClientFrame {
  return create(ClientFrameSchema, { msg });
}

/** Logs in as demo/demo, asks for `source`'s natural partition as a file and returns the BulkReady. */
export async function requestBulk(deviceUrl: string, source: string, minRecords = 0n, timeoutMs = 120_000): Promise<BulkReady> {
  const socket = new WebSocket(deviceUrl, SUBPROTOCOL);
  socket.binaryType = "arraybuffer";
  try {
    return await new Promise<BulkReady>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no BulkReady in time")), timeoutMs);
      socket.on("open", () => {
        const credentials = { case: "login" as const, value: { username: "demo", password: "demo" } };
        socket.send(encodeClientFrame(frame({ case: "hello", value: { protocolVersion: PROTOCOL_VERSION, credentials, device: { platform: "test" } } })));
      });
      socket.on("message", (data: ArrayBuffer) => {
        const message = decodeServerFrame(new Uint8Array(data)).msg;
        if (message.case === "welcome") {
          socket.send(encodeClientFrame(frame({ case: "bulkRequest", value: { requestId: "fixture", sources: [source], minRecords } })));
        } else if (message.case === "bulkReady") {
          clearTimeout(timer);
          resolve(message.value);
        } else if (message.case === "error" && message.value.fatal) {
          clearTimeout(timer);
          reject(new Error(`refused: ${message.value.message}`));
        }
      });
      socket.on("error", (error) => reject(error));
    });
  } finally {
    socket.close();
  }
}
