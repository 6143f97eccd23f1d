// The console in headless Chromium (Debian's, driven by playwright-core; never a downloaded
// browser) against a real `syncline serve`: an operator logs in, creates a user, sees that
// user's device appear live when it connects, opens it, locks it and sees it refused; a change
// the demo channel refuses is listed as failed, retried and dismissed. A last test walks every
// page on a desktop and a phone-sized screen and fails on console errors, failed requests and
// sideways scrolling.
// Screenshots go to test-output/ (and, with SYNCLINE_UPDATE_SCREENSHOTS=1, to docs/console/).
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { SynclineClient } from "../../../clients/typescript/src/client.js";
import type { WebSocketLike } from "../../../clients/typescript/src/client.js";
import { MemoryStorage } from "../../../clients/typescript/src/storage.js";
import { CHROMIUM, CHROMIUM_FLAGS, ServerProcess, freePort, serverBinary } from "../../../clients/typescript/test/server-process.js";

const here = dirname(fileURLToPath(import.meta.url));
const OUTPUT = resolve(here, "../test-output");
const DOCS = resolve(here, "../../../docs/console");
const binary = serverBinary();
const available = binary !== undefined && existsSync(CHROMIUM);
if (!available && process.env.SYNCLINE_BROWSER_REQUIRED) throw new Error(`SYNCLINE_BROWSER_REQUIRED is set but ${CHROMIUM} or the server binary is missing`);
const TIMEOUT = 60_000;
const ADMIN_PASSWORD = `console-test-${Math.random().toString(36).slice(2)}`;

let server: ServerProcess;
let adminUrl: string;
let browser: Browser;
const devices: SynclineClient[] = [];

/** Waits for `condition` with a deadline (never a fixed sleep). */
async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = TIMEOUT): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((tick) => setTimeout(tick, 25));
  }
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(OUTPUT, { recursive: true });
  const path = join(OUTPUT, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  if (process.env.SYNCLINE_UPDATE_SCREENSHOTS) {
    mkdirSync(DOCS, { recursive: true });
    copyFileSync(path, join(DOCS, `${name}.png`));
  }
}

async function logIn(page: Page): Promise<void> {
  await page.goto(`${adminUrl}/`);
  await page.fill('input[name="name"]', "admin");
  await page.fill('input[name="password"]', ADMIN_PASSWORD);
  await page.click('button[type="submit"]');
  await page.getByRole("heading", { name: "Dashboard" }).waitFor({ timeout: TIMEOUT });
}

/** A device of `user` on the Contact source, in Node, with its storage (for its client id). */
async function openDevice(user: string, password: string, storage = new MemoryStorage()): Promise<{ client: SynclineClient; storage: MemoryStorage }> {
  const client = await SynclineClient.open({
    url: server.deviceUrl,
    credentials: { username: user, password },
    sources: ["Contact"],
    storage,
    webSocket: (url, protocol) => new WebSocket(url, protocol) as unknown as WebSocketLike,
  });
  devices.push(client);
  return { client, storage };
}

async function clientIdOf(storage: MemoryStorage): Promise<string> {
  let clientId: string | undefined;
  await until(async () => {
    clientId = (await storage.load()).session.clientId;
    return clientId !== undefined;
  }, "the device's Welcome");
  return clientId as string;
}

describe.skipIf(!available)("the console in headless Chromium", () => {
  beforeAll(async () => {
    const adminPort = await freePort();
    server = await ServerProcess.start(binary as string, {
      SYNCLINE_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      SYNCLINE_ADMIN_PASSWORD: ADMIN_PASSWORD,
    });
    adminUrl = `http://127.0.0.1:${adminPort}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  });

  afterAll(async () => {
    for (const device of devices) await device.stop().catch(() => undefined);
    await browser?.close();
    await server?.dispose();
  });

  it("lets an operator create a user, watch their device connect, lock it and see it refused", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    await logIn(page);

    // Create a user; they can log in over the device socket at once.
    await page.click('nav >> text="Users"');
    await page.fill('#create-user input[name="name"]', "alice");
    await page.fill('#create-user input[name="password"]', "alice-password-1");
    await page.click('#create-user button[type="submit"]');
    // (In the demo, users live in the demo app's database: the toast says it worked, and the
    // device login below proves it.)
    await page.locator('.toast:has-text("User alice created.")').waitFor({ timeout: TIMEOUT });
    await screenshot(page, "users");

    // The dashboard shows the device the moment it connects.
    await page.click('nav >> text="Dashboard"');
    await page.getByText("Live.").waitFor({ timeout: TIMEOUT });
    const { client: phone, storage } = await openDevice("alice", "alice-password-1");
    const clientId = await clientIdOf(storage);
    const event = page.locator(`.events li[data-client-id="${clientId}"][data-kind="connected"]`);
    await event.waitFor({ timeout: TIMEOUT });
    await until(async () => (await page.locator(".chart strong").first().textContent()) !== "–", "a stats sample");
    await screenshot(page, "dashboard");

    // Open the device and lock it: the device acts, acknowledges, and is refused afterwards.
    await event.locator("a").click();
    await page.getByRole("heading", { name: clientId }).waitFor({ timeout: TIMEOUT });
    await page.selectOption('#send-command select[name="kind"]', "lock");
    await page.fill('#send-command input[name="reason"]', "lost phone");
    await page.click('#send-command button[type="submit"]');
    await until(() => phone.stopReason?.kind === "lock", "the device to lock");
    await page.locator('.commands td:has-text("acknowledged")').waitFor({ timeout: TIMEOUT });
    await page.locator('.facts .badge:has-text("locked")').waitFor({ timeout: TIMEOUT });
    const { client: again } = await openDevice("alice", "alice-password-1", storage);
    await until(() => again.stopReason !== undefined, "the locked device's next login to end");
    expect(again.stopReason?.kind).toBe("forbidden");
    await screenshot(page, "device");

    await page.close();
  });

  it("lists a change its channel refused as failed and retries it", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    await logIn(page);
    await page.click('nav >> text="Users"');
    await page.fill('#create-user input[name="name"]', "bob");
    await page.fill('#create-user input[name="password"]', "bob-password-1");
    await page.click('#create-user button[type="submit"]');
    await page.locator('.toast:has-text("User bob created.")').waitFor({ timeout: TIMEOUT });

    // The demo channel refuses a Contact without its required name, for good.
    const { client: laptop } = await openDevice("bob", "bob-password-1");
    let refusals = 0;
    laptop.onNotification((notification) => {
      if (notification.type === "mutation" && notification.outcome.status === "error") refusals += 1;
    });
    const change = laptop.create("Contact", { email: "no-name@example.com" });
    await until(() => refusals === 1, "the channel's refusal");

    await page.click('nav >> text="Mutations"');
    const row = page.locator(`[data-failed-mutation="${change.mutationId}"]`);
    await row.waitFor({ timeout: TIMEOUT });
    await page.locator(`td:has-text("Contact.name is required")`).first().waitFor({ timeout: TIMEOUT });
    const firstFailure = Number(await row.getAttribute("data-failed-ms"));
    await screenshot(page, "mutations");

    // Retried: the channel is asked again (and refuses again: the failure is newer).
    await row.locator('button:has-text("Retry")').click();
    await page.locator(`.toast:has-text("Mutation ${change.mutationId} queued again")`).waitFor({ timeout: TIMEOUT });
    await until(async () => {
      await page.reload();
      await page.getByRole("heading", { name: "Failed" }).waitFor({ timeout: TIMEOUT });
      await until(async () => (await page.locator(".loading").count()) === 0, "the mutations page to load");
      const again = page.locator(`[data-failed-mutation="${change.mutationId}"]`);
      return (await again.count()) === 1 && Number(await again.getAttribute("data-failed-ms")) > firstFailure;
    }, "the retried mutation to fail again");

    // Dismissed: no longer listed.
    await page.locator(`[data-failed-mutation="${change.mutationId}"] button:has-text("Dismiss")`).click();
    await page.locator(`.toast:has-text("Mutation ${change.mutationId} dismissed.")`).waitFor({ timeout: TIMEOUT });
    await until(async () => (await page.locator(`[data-failed-mutation="${change.mutationId}"]`).count()) === 0, "the dismissed row to go");
    await page.close();
  });

  it("shows every page with no console error, failed request or sideways scroll, on a desktop and a phone", async () => {
    for (const viewport of [
      { width: 1280, height: 860 },
      { width: 390, height: 844 },
    ]) {
      const page = await browser.newPage({ viewport });
      // Before the login, the console's one probe of its session is answered 401 by design.
      await logIn(page);
      const problems: string[] = [];
      page.on("console", (message) => {
        if (message.type() === "error") problems.push(`console: ${message.text()}`);
      });
      page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
      page.on("requestfailed", (request) => {
        // The live stream is cut when a page is left: that is not a failure.
        if (!request.url().endsWith("/v1/admin/events")) problems.push(`request failed: ${request.url()}`);
      });
      page.on("response", (response) => {
        if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
      });
      for (const hash of ["#/dashboard", "#/users", "#/devices", "#/sources", "#/sources/Account", "#/sources/Account/partitions/*", "#/mutations", "#/rpc"]) {
        await page.goto(`${adminUrl}/${hash}`);
        await page.locator("main h1").first().waitFor({ timeout: TIMEOUT });
        await until(async () => (await page.locator(".loading").count()) === 0, `${hash} to load`);
        const sideways = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        expect(sideways, `${hash} scrolls sideways at ${viewport.width} px`).toBeLessThanOrEqual(1);
        if (viewport.width < 500 && hash === "#/devices") await screenshot(page, "phone-devices");
      }
      expect(problems).toEqual([]);
      await page.close();
    }
  });
});
