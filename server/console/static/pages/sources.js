// @ts-check
// Sources and partitions: each source's channel and capture health, its partitions, and one
// partition's records, with a change pushed as JSON, a reset (reload from the channel) and a
// compaction.

import { enc, get, post } from "../api.js";
import { badge, button, duration, errorText, form, h, mount, num, table, time, toast } from "../dom.js";
import { pagedTable } from "../paged.js";

/** @param {HTMLElement} main */
export function renderList(main) {
  const list = h("div", { class: "list" }, h("p", { class: "loading" }, "Loading…"));
  mount(main, h("h1", null, "Sources"), list);
  get("sources")
    .then((answer) => {
      const items = answer.items ?? [];
      mount(
        list,
        table(
          ["Source", "Partitioning", "Channel", "Capture", "Health", "Last batch", "Capture lag", "Last error"],
          items.map((/** @type {any} */ source) => [
            h("a", { href: `#/sources/${enc(source.name)}` }, source.name),
            source.partitioning ?? "–",
            source.channel ?? "none (Ingest only)",
            source.capture ?? "–",
            health(source.health),
            time(source.health?.last_batch_ms),
            duration(typeof source.health?.capture_lag_ms === "number" ? source.health.capture_lag_ms / 1000 : null),
            source.health?.last_error ?? "–",
          ]),
          "No sources configured.",
        ),
      );
    })
    .catch((error) => mount(list, h("p", { class: "error", role: "alert" }, errorText(error))));
}

/** @param {any} health */
function health(health) {
  if (!health) return badge("unknown", "muted");
  if (health.last_error) return badge("failing", "bad");
  if (health.connected === false) return badge("disconnected", "warn");
  return badge("healthy", "ok");
}

/**
 * @param {HTMLElement} main
 * @param {string[]} params
 */
export function renderSource(main, params) {
  const source = /** @type {string} */ (params[0]);
  const list = h("div", { class: "list" });
  mount(main, h("p", null, h("a", { href: "#/sources" }, "← Sources")), h("h1", null, source), h("h2", null, "Partitions"), list);
  void pagedTable(list, {
    path: "partitions",
    params: { source },
    headers: ["Partition", "Head", "Horizon", "Records", "Subscribers"],
    empty: "No partitions yet.",
    row: (/** @type {any} */ partition) => [
      h("a", { href: `#/sources/${enc(source)}/partitions/${enc(partition.key)}` }, partition.key || "(shared)"),
      num(partition.head),
      num(partition.horizon),
      num(partition.records),
      num(partition.subscribers),
    ],
  });
}

/**
 * @param {HTMLElement} main
 * @param {string[]} params
 * @param {{ role: string }} session
 */
export function renderPartition(main, params, session) {
  const [source, key] = /** @type {[string, string]} */ (params);
  const base = `partitions/${enc(source)}/${enc(key)}`;
  const facts = h("dl", { class: "facts" });
  const records = h("div", { class: "list" });
  const admin = session.role === "admin";

  async function refresh() {
    try {
      const partition = await get(base);
      mount(
        facts,
        ...[
          ["Head", num(partition.head)],
          ["Horizon", num(partition.horizon)],
          ["Records", num(partition.records)],
          ["Checksum", String(partition.checksum ?? "–")],
          ["Live subscribers", num(partition.subscribers)],
        ].flatMap(([term, value]) => [h("dt", null, term), h("dd", null, value)]),
      );
    } catch (error) {
      mount(facts, h("p", { class: "error", role: "alert" }, errorText(error)));
    }
    await pagedTable(records, {
      path: `${base}/records`,
      headers: ["Id", "Version", "Fields"],
      empty: "No records.",
      row: (/** @type {any} */ record) => [record.id, num(record.version), h("code", null, JSON.stringify(record.fields))],
    });
  }

  const push = form(
    async (values) => {
      /** @type {unknown} */
      let change;
      try {
        change = JSON.parse(values.change ?? "");
      } catch (error) {
        throw new Error(`not JSON: ${errorText(error)}`);
      }
      const committed = await post(`${base}/changes`, change);
      toast(committed.applied > 0 ? `Committed ${committed.first_seq}–${committed.last_seq}.` : "Nothing changed.");
      await refresh();
    },
    h(
      "label",
      { class: "field wide" },
      h("span", null, "Changes (JSON: upserts and deletes, committed like an Ingest push)"),
      h("textarea", { name: "change", rows: 4, required: true, spellcheck: "false" }, '{"upserts": [{"id": "", "fields": {}}], "deletes": []}'),
    ),
    h("button", { type: "submit" }, "Push"),
  );
  push.id = "push-change";
  const operations = h(
    "div",
    { class: "actions" },
    button("Reset from channel", async () => {
      if (!confirm(`Reload ${source}/${key} from its channel? Devices re-sync it.`)) return;
      const report = await post(`${base}/reset`);
      toast(`Reset: ${num(report?.changes)} changes.`);
      await refresh();
    }),
    button("Compact now", async () => {
      const report = await post(`${base}/compact`);
      toast(`Compacted ${num(report?.changes)} log entries; horizon ${num(report?.partition?.horizon)}.`);
      await refresh();
    }),
  );
  mount(
    main,
    h("p", null, h("a", { href: `#/sources/${enc(source)}` }, `← ${source}`)),
    h("h1", null, `${source} / ${key || "(shared)"}`),
    facts,
    admin ? h("section", null, h("h2", null, "Operations"), operations, push) : null,
    h("h2", null, "Records"),
    records,
  );
  void refresh();
}
