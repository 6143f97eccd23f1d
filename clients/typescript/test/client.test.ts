import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WebSocket as NodeWebSocket } from "ws";
import { SynclineClient } from "../src/client.js";
import type { ClientOptions, WebSocketLike } from "../src/client.js";
import { ErrorCode } from "../src/gen/syncline/v1/device_pb.js";
import type { Notification } from "../src/notifications.js";
import { MemoryStorage } from "../src/storage.js";
import { FakeServer } from "./fake-server.js";
import { record, server } from "./helpers.js";

const webSocket = (url: string, protocol: string): WebSocketLike => new NodeWebSocket(url, protocol) as unknown as WebSocketLike;

let fake: FakeServer;
const clients: SynclineClient[] = [];

async function open(options: Partial<ClientOptions> = {}): Promise<SynclineClient> {
  const client = await SynclineClient.open({
    url: fake.url,
    credentials: { username: "demo", password: "demo" },
    sources: ["Account"],
    webSocket,
    backoff: { initialMs: 20, maxMs: 100 },
    ...options,
  });
  clients.push(client);
  return client;
}

function caughtUp(client: SynclineClient): boolean {
  return client.partitions().some((partition) => partition.phase === "caught_up");
}

beforeEach(async () => {
  fake = await FakeServer.start();
  fake.upsert("acc-1", { name: "Acme" });
  fake.upsert("acc-2", { name: "Globex" });
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.stop();
  await fake.stop();
});

describe("client over a real socket", () => {
  it("syncs, tells the app, and renders from a reactive source view", async () => {
    const client = await open();
    const notifications: Notification[] = [];
    client.onNotification((notification) => notifications.push(notification));
    const accounts = client.source("Account");
    let renders = 0;
    accounts.subscribe(() => (renders += 1));
    await client.waitFor(() => caughtUp(client), 5000);
    expect(accounts.records().map((account) => account.fields.name)).toEqual(["Acme", "Globex"]);
    expect(accounts.get("acc-2")?.version).toBe(2n);
    expect(accounts.query({ name: "Acme" }).map((account) => account.id)).toEqual(["acc-1"]);
    expect(accounts.query((account) => account.version > 1n)).toHaveLength(1);
    expect(renders).toBeGreaterThan(0);
    expect(notifications.filter((n) => n.type === "sync").map((n) => n.type === "sync" && n.status)).toEqual(["in_progress", "ok", "complete"]);
    expect(client.connection).toBe("connected");
  });

  it("reconnects after a network loss and resumes from its cursor with the session token", async () => {
    const storage = new MemoryStorage();
    const client = await open({ storage });
    await client.waitFor(() => caughtUp(client), 5000);
    fake.upsert("acc-3", { name: "Initech" });
    fake.dropAll();
    await client.waitFor(() => fake.connections >= 2 && caughtUp(client) && client.source("Account").size === 3, 5000);
    const hellos = fake.framesOf("hello").map((frame) => frame.msg.case === "hello" && frame.msg.value.credentials.case);
    expect(hellos).toEqual(["login", "sessionToken"]);
    const cursors = fake.framesOf("subscribe").map((frame) => frame.msg.case === "subscribe" && frame.msg.value.cursor);
    expect(cursors).toEqual([0n, 2n]);
    // A client opened later on the same store resumes from the stored cursor.
    await client.stop();
    const again = await open({ storage });
    await again.waitFor(() => caughtUp(again), 5000);
    expect(fake.framesOf("subscribe").at(-1)?.msg.value).toMatchObject({ cursor: 3n });
    expect(again.source("Account").size).toBe(3);
  });

  it("keeps changes made offline and sends each once when back", async () => {
    const client = await open();
    await client.waitFor(() => caughtUp(client), 5000);
    await fake.stop();
    await client.waitFor(() => client.connection !== "connected", 5000);
    const created = client.create("Account", { name: "Offline", employees: 5n });
    expect(created.record?.id.startsWith("tmp-")).toBe(true);
    expect(created.record?.fields).toEqual({ name: "Offline", employees: 5n });
    await created.stored;
    const renamed = client.update("Account", created.record?.id ?? "", { name: "Offline 2" });
    expect(renamed.record?.fields.name).toBe("Offline 2");
    expect(client.source("Account").size).toBe(3);
    expect(client.pendingMutations).toHaveLength(2);
    await expect(client.call("crm", "CloseDeal", "{}")).rejects.toMatchObject({ code: "OFFLINE" });
  });

  it("answers RPC calls, fails them with typed errors and times out", async () => {
    fake.hook = (frame, socket) => {
      if (frame.msg.case !== "rpcCall") return false;
      const call = frame.msg.value;
      if (call.method === "Echo") fake.send(socket, server({ case: "rpcReply", value: { callId: call.callId, result: { case: "payload", value: call.payload } } }));
      if (call.method === "Nope") {
        fake.send(socket, server({ case: "rpcReply", value: { callId: call.callId, result: { case: "error", value: { code: ErrorCode.NOT_FOUND, message: "no method Nope" } } } }));
      }
      return true;
    };
    const client = await open();
    await client.waitFor(() => client.connection === "connected", 5000);
    const reply = await client.call("crm", "Echo", "hi");
    expect(new TextDecoder().decode(reply)).toBe("hi");
    await expect(client.call("crm", "Nope", "")).rejects.toMatchObject({ code: "NOT_FOUND", message: "no method Nope" });
    await expect(client.call("crm", "Silent", "", { timeoutMs: 50 })).rejects.toMatchObject({ code: "TIMEOUT" });
    const pending = client.call("crm", "Silent", "", { timeoutMs: 5000 });
    fake.dropAll();
    await expect(pending).rejects.toMatchObject({ code: "DISCONNECTED" });
  });

  it("merges search results into the view when the channel asks", async () => {
    fake.hook = (frame, socket) => {
      if (frame.msg.case !== "search") return false;
      const search = frame.msg.value;
      fake.send(socket, server({ case: "searchResult", value: { searchId: search.searchId, records: [record("acc-77", 9, { name: "Found" })], total: 1n, mergeKey: "*" } }));
      return true;
    };
    const client = await open({ sources: [] });
    await client.waitFor(() => client.connection === "connected", 5000);
    const results = await client.search("Account", { name: "Fo" }, { limit: 10 });
    expect(results).toMatchObject({ total: 1n, mergedInto: "*" });
    expect(client.source("Account").get("acc-77")?.fields).toEqual({ name: "Found" });
  });

  it("reports an undecodable frame as a typed error and reconnects instead of hanging", async () => {
    let broken = true;
    fake.hook = (frame, socket) => {
      if (frame.msg.case === "hello" && broken) {
        broken = false;
        socket.send(new Uint8Array([0xff, 0xff, 0xff]));
        return true;
      }
      return false;
    };
    const client = await open();
    const errors: string[] = [];
    client.onNotification((n) => {
      if (n.type === "sync" && n.error) errors.push(n.error.code);
    });
    await client.waitFor(() => caughtUp(client), 5000);
    expect(errors).toContain("PROTOCOL");
    expect(fake.connections).toBe(2);
  });

  it("stops for good on a refused password and on a lock command", async () => {
    fake.hook = (frame, socket) => {
      if (frame.msg.case !== "hello") return false;
      fake.send(socket, server({ case: "error", value: { code: ErrorCode.UNAUTHENTICATED, message: "wrong username or password", fatal: true } }));
      socket.close(4001, "wrong username or password");
      return true;
    };
    const refused = await open();
    await refused.waitFor(() => refused.connection === "stopped", 5000);
    expect(refused.stopReason).toEqual({ kind: "unauthenticated", reason: "wrong username or password" });
    fake.hook = () => false;
    const locked = await open();
    await locked.waitFor(() => caughtUp(locked), 5000);
    fake.broadcast(server({ case: "command", value: { kind: 1, reason: "stolen" } }));
    await locked.waitFor(() => locked.connection === "stopped", 5000);
    expect(locked.stopReason).toEqual({ kind: "lock", reason: "stolen" });
  });
});
