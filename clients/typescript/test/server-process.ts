// `syncline serve` as a child process for the end-to-end tests: started on free loopback
// ports with a temporary data directory, found ready by its log line, stopped by its PID.
import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { SynclineClient } from "../src/client.js";
import type { WebSocketLike } from "../src/client.js";

const here = dirname(fileURLToPath(import.meta.url));

/** Debian's Chromium (`CHROMIUM_PATH` to use another) and the flags the browser tests launch it with. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** The server binary: `SYNCLINE_BIN`, or the workspace's debug build. */
export function serverBinary(): string | undefined {
  const path = process.env.SYNCLINE_BIN ?? resolve(here, "../../../target/debug/syncline");
  return existsSync(path) ? path : undefined;
}

/** Returns a loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolvePort(port));
    });
  });
}

/** A running `syncline serve`. */
export class ServerProcess {
  private child: ChildProcess | undefined;

  private constructor(
    readonly binary: string,
    readonly dataDir: string,
    readonly devicePort: number,
    readonly grpcPort: number,
    private readonly env: Record<string, string>,
  ) {}

  /** Starts a server on fresh ports and a fresh data directory. */
  static async start(binary: string, env: Record<string, string> = {}): Promise<ServerProcess> {
    const dataDir = mkdtempSync(join(tmpdir(), "syncline-ts-e2e-"));
    const server = new ServerProcess(binary, dataDir, await freePort(), await freePort(), env);
    await server.restart();
    return server;
  }

  get deviceUrl(): string {
    return `ws://127.0.0.1:${this.devicePort}/v1/sync`;
  }

  get grpcUrl(): string {
    return `http://127.0.0.1:${this.grpcPort}`;
  }

  /** (Re)starts the process on the same ports and data; resolves once both listeners are up. */
  async restart(): Promise<void> {
    const child = spawn(this.binary, ["serve"], {
      env: {
        // The server refuses SYNCLINE_* variables it does not know: pass none of the tests' own.
        ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("SYNCLINE_"))),
        SYNCLINE_DATA_DIR: this.dataDir,
        SYNCLINE_DEVICE_ADDR: `127.0.0.1:${this.devicePort}`,
        SYNCLINE_GRPC_ADDR: `127.0.0.1:${this.grpcPort}`,
        // Any free port: these tests do not use the admin API, and servers run side by side.
        SYNCLINE_ADMIN_ADDR: "127.0.0.1:0",
        SYNCLINE_LOG_FORMAT: "json",
        RUST_LOG: "info",
        ...this.env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    const lines = createInterface({ input: child.stderr });
    const log: string[] = [];
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => fail(new Error("the server did not start within 60 s")), 60_000);
      child.once("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`the server exited with ${code} before listening:\n${log.join("\n")}`));
      });
      lines.on("line", (line) => {
        log.push(line);
        if (log.length > 20) log.shift();
        if (line.includes("gRPC endpoint listening")) {
          clearTimeout(timer);
          ready();
        }
      });
    });
    // Keep reading the log so the child never blocks on a full pipe.
    lines.on("line", () => undefined);
  }

  /** Stops the process (SIGTERM, then SIGKILL after 10 s) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((exited) => {
      const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
      child.once("exit", () => {
        clearTimeout(kill);
        exited();
      });
      child.kill("SIGTERM");
    });
  }

  /** Pushes records into a partition over gRPC (Ingest.Push) with the `syncline ingest` CLI. */
  ingest(source: string, key: string, records: { id: string; fields?: Record<string, unknown>; delete?: boolean }[]): void {
    const input = records.map((record) => JSON.stringify(record)).join("\n");
    const args = ["ingest", "--source", source, "--grpc-url", this.grpcUrl, ...(key ? ["--key", key] : [])];
    const result = spawnSync(this.binary, args, { input, encoding: "utf8", timeout: 30_000 });
    if (result.status !== 0) throw new Error(`syncline ingest failed: ${result.stderr}`);
  }

  /** Stops the process and deletes its data directory. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * Waits until the server's log holds `count` demo accounts: `syncline serve` listens before
 * it has imported the demo channel's records (it follows the channel's change feed).
 */
export async function waitForDemoAccounts(server: ServerProcess, count: number): Promise<void> {
  const client = await SynclineClient.open({
    url: server.deviceUrl,
    credentials: { username: "demo", password: "demo" },
    sources: ["Account"],
    webSocket: (url, protocol) => new WebSocket(url, protocol) as unknown as WebSocketLike,
  });
  try {
    await client.waitFor(() => client.source("Account").size >= count, 300_000);
  } finally {
    await client.stop();
  }
}
