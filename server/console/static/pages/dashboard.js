// @ts-check
// The live dashboard: one stats sample a second from the server's event stream (Server-Sent
// Events), drawn as small charts, and devices as they connect and disconnect.

import { Sparkline } from "../chart.js";
import { bytes, duration, h, mount, num, time } from "../dom.js";

/**
 * One sample of the stream's `stats` event.
 * @typedef {{
 *   connections: number, subscriptions: number, deliveries_per_second: number,
 *   commit_p50_seconds: number | null, commit_p99_seconds: number | null,
 *   push_lag_p50_seconds: number | null, push_lag_p99_seconds: number | null,
 *   errors_per_second: number, store_bytes: number, uptime_seconds: number, version: string
 * }} Stats
 */

/** Most recent device events listed. */
const DEVICE_EVENTS = 20;

/** @param {HTMLElement} main */
export function render(main) {
  const charts = {
    connections: new Sparkline("Connections", (value) => num(value)),
    deliveries: new Sparkline("Deliveries/s", (value) => num(Math.round(value))),
    commit: new Sparkline("Commit p99", (value) => duration(value)),
    pushLag: new Sparkline("Push lag p99", (value) => duration(value)),
    errors: new Sparkline("Errors/s", (value) => num(Math.round(value * 10) / 10)),
  };
  const facts = h("dl", { class: "facts" });
  const events = h("ol", { class: "events", "aria-live": "polite" });
  const state = h("p", { class: "stream-state" }, "Connecting to the live stream…");
  mount(
    main,
    h("h1", null, "Dashboard"),
    state,
    h("section", { class: "charts" }, Object.values(charts).map((chart) => chart.element)),
    h("section", null, h("h2", null, "Server"), facts),
    h("section", null, h("h2", null, "Devices, live"), events),
  );

  const stream = new EventSource("/v1/admin/events");
  stream.addEventListener("open", () => (state.textContent = "Live."));
  stream.addEventListener("error", () => (state.textContent = "Live stream interrupted; reconnecting…"));
  stream.addEventListener("stats", (event) => {
    /** @type {Stats} */
    const stats = JSON.parse(/** @type {MessageEvent} */ (event).data);
    charts.connections.push(stats.connections);
    charts.deliveries.push(stats.deliveries_per_second);
    charts.commit.push(stats.commit_p99_seconds ?? 0);
    charts.pushLag.push(stats.push_lag_p99_seconds ?? 0);
    charts.errors.push(stats.errors_per_second);
    mount(
      facts,
      ...fact("Version", stats.version),
      ...fact("Uptime", duration(stats.uptime_seconds)),
      ...fact("Subscriptions", num(stats.subscriptions)),
      ...fact("Commit p50 / p99", `${duration(stats.commit_p50_seconds)} / ${duration(stats.commit_p99_seconds)}`),
      ...fact("Push lag p50 / p99", `${duration(stats.push_lag_p50_seconds)} / ${duration(stats.push_lag_p99_seconds)}`),
      ...fact("Store size", bytes(stats.store_bytes)),
    );
  });
  stream.addEventListener("device", (event) => {
    /** @type {{ kind: string, client_id: string, user_id: string, at_ms: number }} */
    const device = JSON.parse(/** @type {MessageEvent} */ (event).data);
    const link = h("a", { href: `#/devices/${encodeURIComponent(device.client_id)}` }, device.client_id);
    events.prepend(h("li", { "data-client-id": device.client_id, "data-kind": device.kind }, time(device.at_ms), " ", device.kind, " ", link, ` (${device.user_id})`));
    while (events.children.length > DEVICE_EVENTS) events.lastElementChild?.remove();
  });
  return () => stream.close();
}

/**
 * @param {string} term
 * @param {string} value
 */
function fact(term, value) {
  return [h("dt", null, term), h("dd", null, value)];
}
