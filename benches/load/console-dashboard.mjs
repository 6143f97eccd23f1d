// Holds the web console's dashboard open in headless Chromium (Debian's, driven by
// playwright-core from server/console/node_modules; never a downloaded browser), for the
// admin plane's benchmark (benches/metrics-scrape.sh, arm `console`): logs in as `admin`,
// waits until the live stream is up, prints "live", then keeps the page open (its charts
// updating every second) until SIGTERM or MAX_SECS, whichever comes first.
//
// usage: node benches/load/console-dashboard.mjs ADMIN_URL PASSWORD MAX_SECS
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const [adminUrl, password, maxSecs] = process.argv.slice(2);
if (!adminUrl || !password || !maxSecs) {
  console.error("usage: node console-dashboard.mjs ADMIN_URL PASSWORD MAX_SECS");
  process.exit(2);
}
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(resolve(root, "server/console/package.json"));
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
// What the page asked the server for, by path: printed at the end, so a run shows that the
// dashboard kept polling and streaming throughout.
const requests = new Map();
let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  console.log(`requests by path: ${JSON.stringify(Object.fromEntries(requests))}`);
  await browser.close().catch(() => undefined);
  process.exit(code);
}
process.on("SIGTERM", () => void stop(0));
process.on("SIGINT", () => void stop(0));
const timer = setTimeout(() => void stop(0), Number(maxSecs) * 1000);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    requests.set(path, (requests.get(path) ?? 0) + 1);
  });
  await page.goto(`${adminUrl}/`);
  await page.fill('input[name="name"]', "admin");
  await page.fill('input[name="password"]', password);
  await page.click('button[type="submit"]');
  await page.getByText("Live.").waitFor({ timeout: 60_000 });
  console.log("live");
} catch (error) {
  clearTimeout(timer);
  console.error(`the dashboard did not come up: ${error}`);
  await stop(1);
}
