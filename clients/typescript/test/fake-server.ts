// A scripted fake of the server's side of the device protocol on 127.0.0.1 (real sockets),
// for socket-level tests of the client: one app partition `Account/*` served as a single
// snapshot page, mutations applied at once, and hooks to script the rest.
import { WebSocketServer } from "ws";
import type { WebSocket } from "ws";
import type { AddressInfo } from "node:net";
import { SyncStatus } from "../src/gen/syncline/v1/device_pb.js";
import type { ClientFrame, ServerFrame } from "../src/gen/syncline/v1/device_pb.js";
import { decodeClientFrame, encodeServerFrame } from "../src/wire.js";
import { changes, checksumOf, record, server } from "./helpers.js";
import type { Fields } from "../src/values.js";

export class FakeServer {
  readonly received: ClientFrame[] = [];
  readonly records = new Map<string, { fields: Fields; version: bigint }>();
  head = 0n;
  connections = 0;
  /** Called for each frame before the default handling; return true to skip the default. */
  hook: (frame: ClientFrame, socket: WebSocket) => boolean = () => false;
  private readonly wss: WebSocketServer;
  private readonly sockets = new Set<WebSocket>();

  private constructor(wss: WebSocketServer) {
    this.wss = wss;
    wss.on("connection", (socket) => {
      this.connections += 1;
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("message", (data) => this.onMessage(socket, new Uint8Array(data as Buffer)));
    });
  }

  static async start(): Promise<FakeServer> {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "syncline.v1" });
    await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
    return new FakeServer(wss);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/v1/sync`;
  }

  /** Writes a record as the backend would: a new sequence. */
  upsert(id: string, fields: Fields): bigint {
    this.head += 1n;
    this.records.set(id, { fields, version: this.head });
    return this.head;
  }

  send(socket: WebSocket, frame: ServerFrame): void {
    socket.send(encodeServerFrame(frame));
  }

  /** Sends a frame to every open connection. */
  broadcast(frame: ServerFrame): void {
    for (const socket of this.sockets) this.send(socket, frame);
  }

  /** Drops every connection without a close frame (a network loss). */
  dropAll(): void {
    for (const socket of this.sockets) socket.terminate();
  }

  framesOf(kind: string): ClientFrame[] {
    return this.received.filter((frame) => frame.msg.case === kind);
  }

  async stop(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private liveSet(): { id: string; version: bigint }[] {
    return [...this.records].map(([id, held]) => ({ id, version: held.version }));
  }

  private onMessage(socket: WebSocket, data: Uint8Array): void {
    const frame = decodeClientFrame(data);
    this.received.push(frame);
    if (this.hook(frame, socket)) return;
    const msg = frame.msg;
    switch (msg.case) {
      case "hello":
        this.send(socket, server({ case: "welcome", value: { clientId: "c-1", sessionToken: "st-1", userId: "demo", sources: [{ name: "Account", partitioning: "app", keys: ["*"] }] } }));
        return;
      case "subscribe": {
        const live = this.liveSet();
        if (msg.value.cursor !== this.head) {
          const upserts = [...this.records].map(([id, held]) => record(id, held.version, held.fields));
          this.send(socket, server({ case: "changes", value: changes({ snapshot: true, reset: true, snapshotDone: true, to: this.head, page: 1n, upserts, total: BigInt(live.length) }) }));
        }
        this.send(socket, server({ case: "syncState", value: { source: "Account", key: "*", status: SyncStatus.CAUGHT_UP, cursor: this.head, total: BigInt(live.length), checksum: checksumOf(live) } }));
        return;
      }
      case "mutate": {
        const mutate = msg.value;
        this.send(socket, server({ case: "mutationAck", value: { mutationId: mutate.mutationId, queued: 1n } }));
        const id = mutate.id.startsWith("tmp-") ? `acc-${this.records.size + 1}` : mutate.id;
        const link = id === mutate.id ? undefined : { tempId: mutate.id, id };
        this.send(socket, server({ case: "mutationResult", value: { mutationId: mutate.mutationId, ok: true, record: { id, fields: mutate.fields }, ...(link ? { link } : {}) } }));
        return;
      }
      default:
        return;
    }
  }
}
