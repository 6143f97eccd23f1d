// @ts-check
// Devices: a filtered list, and one device with its connections, cursors and lag, pending
// mutations, and its commands (send lock / unlock / wipe / logout / resync and watch each one
// go from pending to delivered to acknowledged).

import { enc, get, post } from "../api.js";
import { badge, duration, errorText, field, form, h, mount, num, table, time, toast } from "../dom.js";
import { pagedTable } from "../paged.js";

/** How often an open device page refreshes, in milliseconds. */
const REFRESH_MS = 2000;

/** @type {Record<string, "ok" | "warn" | "bad" | "muted">} */
const STATE_BADGES = { active: "ok", locked: "bad", pending: "warn", delivered: "muted", acknowledged: "ok" };

/** @param {HTMLElement} main */
export function renderList(main) {
  const list = h("div", { class: "list" });
  const filters = form(
    async (values) => void (await load(values)),
    field("User", { name: "user", placeholder: "user id" }),
    h(
      "label",
      { class: "field" },
      h("span", null, "State"),
      h("select", { name: "state" }, h("option", { value: "" }, "any"), h("option", { value: "active" }, "active"), h("option", { value: "locked" }, "locked")),
    ),
    field("Platform", { name: "platform", placeholder: "ios, android, web…" }),
    h("button", { type: "submit" }, "Filter"),
  );
  filters.classList.add("inline");

  /** @param {Record<string, string>} values */
  async function load(values) {
    await pagedTable(list, {
      path: "devices",
      params: { user: values.user, state: values.state, platform: values.platform },
      headers: ["Device", "User", "Platform", "App", "State", "Last seen"],
      empty: "No devices match.",
      row: (/** @type {any} */ device) => [
        h("a", { href: `#/devices/${enc(device.client_id)}` }, device.client_id),
        device.user_id,
        device.platform || "–",
        device.app_version || "–",
        badge(device.state, STATE_BADGES[device.state] ?? "muted"),
        time(device.last_seen_ms),
      ],
    });
  }

  mount(main, h("h1", null, "Devices"), filters, list);
  void load({});
}

/**
 * @param {HTMLElement} main
 * @param {string[]} params
 * @param {{ role: string }} session
 */
export function renderDevice(main, params, session) {
  const clientId = /** @type {string} */ (params[0]);
  const details = h("div", { class: "device" }, h("p", { class: "loading" }, "Loading…"));
  const commands = h("div", { class: "commands" });
  const send = form(
    async (values) => {
      const kind = values.kind ?? "";
      await post(`devices/${enc(clientId)}/commands`, { kind, reason: values.reason ?? "" });
      toast(`${kind} sent to ${clientId}.`);
      await refresh();
    },
    h(
      "label",
      { class: "field" },
      h("span", null, "Command"),
      h("select", { name: "kind" }, ["lock", "unlock", "wipe", "logout", "resync"].map((kind) => h("option", { value: kind }, kind))),
    ),
    field("Reason", { name: "reason", placeholder: "shown to the user" }),
    h("button", { type: "submit" }, "Send"),
  );
  send.classList.add("inline");
  send.id = "send-command";
  mount(
    main,
    h("p", null, h("a", { href: "#/devices" }, "← Devices")),
    h("h1", null, clientId),
    details,
    h("section", null, h("h2", null, "Commands"), session.role === "admin" ? send : null, commands),
  );

  async function refresh() {
    try {
      const [device, history] = await Promise.all([get(`devices/${enc(clientId)}`), get(`devices/${enc(clientId)}/commands`)]);
      showDevice(details, device);
      mount(
        commands,
        table(
          ["Sent", "Command", "Reason", "State", "Delivered", "Acknowledged"],
          history.items.map((/** @type {any} */ command) => [
            time(command.created_ms),
            command.kind,
            command.reason || "–",
            badge(command.state, STATE_BADGES[command.state] ?? "muted"),
            time(command.delivered_ms),
            time(command.acknowledged_ms),
          ]),
          "No commands sent.",
        ),
      );
    } catch (error) {
      mount(details, h("p", { class: "error", role: "alert" }, errorText(error)));
    }
  }

  void refresh();
  const timer = setInterval(() => void refresh(), REFRESH_MS);
  return () => clearInterval(timer);
}

/**
 * @param {HTMLElement} container
 * @param {any} detail
 */
function showDevice(container, detail) {
  const device = detail;
  const facts = h(
    "dl",
    { class: "facts" },
    ...[
      ["User", device.user_id],
      ["State", badge(device.state, STATE_BADGES[device.state] ?? "muted")],
      ["Platform", device.platform || "–"],
      ["App version", device.app_version || "–"],
      ["Model", device.model || "–"],
      ["Live connections", num(detail.live_connections)],
      ["First seen", time(device.first_seen_ms)],
      ["Last seen", time(device.last_seen_ms)],
      ["Pending mutations", num(detail.pending_mutations)],
    ].flatMap(([term, value]) => [h("dt", null, term), h("dd", null, value)]),
  );
  const partitions = table(
    ["Partition", "Cursor", "Head", "Behind", "Lag", "Pending mutations"],
    (detail.partitions ?? []).map((/** @type {any} */ partition) => [
      `${partition.source}/${partition.key}`,
      num(partition.cursor),
      num(partition.head),
      num(partition.lag_changes),
      partition.lag_ms === null || partition.lag_ms === undefined
        ? "–"
        : `${partition.lag_ms_at_least ? "≥ " : ""}${duration(partition.lag_ms / 1000)}`,
      num(partition.pending_mutations),
    ]),
    "Not subscribed to anything.",
  );
  mount(container, facts, h("h2", null, "Partitions"), partitions);
}
