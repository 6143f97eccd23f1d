// End to end in Node against a real `syncline serve` (the demo CRM: 2,000 Accounts, user
// demo/demo) with the in-memory store: initial sync with the checksum verified (binary and
// JSON frames), a change ingested over gRPC arriving live, crm.CloseDeal over the socket,
// offline changes across a reload and a server restart applied exactly once with links, and
// a sync cut 20 times that still ends equal to a fresh device's.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket as NodeWebSocket } from "ws";
import { SynclineClient } from "../src/client.js";
import { jsonFrames } from "../src/wire.js";
import type { ClientOptions, WebSocketLike } from "../src/client.js";
import type { Notification } from "../src/notifications.js";
import { MemoryStorage } from "../src/storage.js";
import { checkOfflineEffects, makeOfflineChanges, snapshot } from "./scenario.js";
import { ServerProcess, serverBinary, waitForDemoAccounts } from "./server-process.js";

const binary = serverBinary();
if (!binary && process.env.SYNCLINE_E2E_REQUIRED) {
  throw new Error("SYNCLINE_E2E_REQUIRED is set but the server binary is missing (build target/debug/syncline or set SYNCLINE_BIN)");
}

const webSocket = (url: string, protocol: string): WebSocketLike => new NodeWebSocket(url, protocol) as unknown as WebSocketLike;
const SYNC_TIMEOUT = 90_000;

let server: ServerProcess;
const clients: SynclineClient[] = [];

async function device(options: Partial<ClientOptions> = {}): Promise<SynclineClient> {
  const client = await SynclineClient.open({
    url: server.deviceUrl,
    credentials: { username: "demo", password: "demo" },
    sources: ["Account", "Contact"],
    webSocket,
    backoff: { initialMs: 50, maxMs: 500 },
    ...options,
  });
  clients.push(client);
  return client;
}

function caughtUp(client: SynclineClient): boolean {
  const partitions = client.partitions();
  return partitions.length > 0 && partitions.every((partition) => partition.phase === "caught_up");
}

async function fresh(): Promise<SynclineClient> {
  const client = await device();
  await client.waitFor(() => caughtUp(client), SYNC_TIMEOUT);
  return client;
}

describe.skipIf(!binary)("end to end against syncline serve", () => {
  beforeAll(async () => {
    server = await ServerProcess.start(binary ?? "");
    await waitForDemoAccounts(server, 2000);
  });

  afterAll(async () => {
    for (const client of clients.splice(0)) await client.stop();
    await server?.dispose();
  });

  for (const [name, format] of [["binary", "binary"], ["json", jsonFrames]] as const) {
    it(`syncs the 2,000 demo accounts with the checksum verified (${name} frames)`, async () => {
      const client = await device({ format, sources: [{ source: "Account", pageSize: 500 }, "Contact"] });
      const notifications: Notification[] = [];
      client.onNotification((notification) => notifications.push(notification));
      await client.waitFor(() => notifications.some((n) => n.type === "sync" && n.status === "complete"), SYNC_TIMEOUT);
      expect(client.source("Account").size).toBe(2000);
      expect(client.stats.verified).toBeGreaterThanOrEqual(2);
      expect(client.stats.checksumMismatches).toBe(0);
      expect(client.source("Account").get("acc-1")?.fields).toMatchObject({ name: expect.any(String) });
      const progress = notifications.filter((n) => n.type === "sync" && n.status === "in_progress");
      expect(progress.length).toBeGreaterThanOrEqual(4);
      await client.stop();
    });
  }

  it("shows a change ingested over gRPC live", async () => {
    const client = await fresh();
    const before = client.stats.livePushes;
    server.ingest("Account", "", [{ id: "acc-ingested", fields: { name: "From gRPC", employees: 7, active: true } }]);
    await client.waitFor(() => client.source("Account").get("acc-ingested") !== undefined, SYNC_TIMEOUT);
    expect(client.source("Account").get("acc-ingested")?.fields).toEqual({ name: "From gRPC", employees: 7n, active: true });
    expect(client.stats.livePushes).toBeGreaterThan(before);
    await client.stop();
  });

  it("calls crm.CloseDeal over the socket, sees its change live, and gets typed errors", async () => {
    const client = await fresh();
    const before = client.source("Account").get("acc-2")?.fields.annual_revenue;
    const reply = await client.call("crm", "CloseDeal", JSON.stringify({ account_id: "acc-2", amount: 5000 }), { timeoutMs: 10_000 });
    const body = JSON.parse(new TextDecoder().decode(reply)) as { account_id: string; annual_revenue: number };
    expect(body.account_id).toBe("acc-2");
    expect(body.annual_revenue).toBe(Number(before) + 5000);
    await client.waitFor(() => client.source("Account").get("acc-2")?.fields.annual_revenue === body.annual_revenue, SYNC_TIMEOUT);
    await expect(client.call("crm", "NoSuchMethod", "{}")).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(client.call("crm", "CloseDeal", "not json")).rejects.toMatchObject({ code: "BAD_REQUEST" });
    await client.stop();
  });

  it("applies 100 offline changes exactly once after a reload and a server restart, links included", async () => {
    const storage = new MemoryStorage();
    const writer = await device({ storage });
    const watcher = await fresh();
    await writer.waitFor(() => caughtUp(writer), SYNC_TIMEOUT);
    const seeded = writer.source("Account").records().filter((record) => /^acc-\d+$/.test(record.id)).slice(0, 30);
    await server.stop();
    await writer.waitFor(() => writer.connection !== "connected", 10_000);

    const plan = makeOfflineChanges(writer, seeded.map((record) => record.id));
    expect(writer.pendingMutations).toHaveLength(100);
    const offlineView = writer.source("Account");
    expect(offlineView.query({ name: "offline-0-edited" })).toHaveLength(1);
    expect(offlineView.get(seeded[25]?.id ?? "")).toBeUndefined();

    // The page reloads: a new client on the same store, then the server comes back.
    await writer.stop();
    const reloaded = await device({ storage });
    expect(reloaded.pendingMutations).toHaveLength(100);
    await server.restart();
    await reloaded.waitFor(() => reloaded.pendingMutations.length === 0 && caughtUp(reloaded), SYNC_TIMEOUT);

    const check = await fresh();
    const accounts = check.source("Account");
    const contacts = check.source("Contact");
    checkOfflineEffects(plan, accounts, contacts);
    // Every device converges on the backend's state.
    for (const other of [reloaded, watcher]) {
      await other.waitFor(
        () => caughtUp(other) && snapshot(other.source("Account").records()).join() === snapshot(accounts.records()).join(),
        SYNC_TIMEOUT,
      );
      expect(snapshot(other.source("Contact").records())).toEqual(snapshot(contacts.records()));
    }
    expect(reloaded.source("Account").records().some((record) => record.id.startsWith("tmp-"))).toBe(false);
  });

  it("ends equal to a fresh device after its connection is cut 20 times mid-sync", async () => {
    const client = await device({ sources: [{ source: "Account", pageSize: 50, window: 2 }, "Contact"] });
    let cuts = 0;
    let pagesSinceCut = 0;
    client.onNotification((notification) => {
      if (notification.type !== "sync" || notification.status !== "in_progress" || cuts >= 20) return;
      pagesSinceCut += 1;
      if (pagesSinceCut >= 3) {
        pagesSinceCut = 0;
        cuts += 1;
        client.cut();
      }
    });
    await client.waitFor(() => cuts >= 20 && caughtUp(client), SYNC_TIMEOUT * 2);
    const check = await fresh();
    expect(snapshot(client.source("Account").records())).toEqual(snapshot(check.source("Account").records()));
    expect(snapshot(client.source("Contact").records())).toEqual(snapshot(check.source("Contact").records()));
    expect(client.stats.checksumMismatches).toBe(0);
  });
});
