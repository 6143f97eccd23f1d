// @ts-check
// Device mutations: queue depth per device and source, and the failed or parked ones with
// the channel's error, to retry or discard.

import { enc, get, post } from "../api.js";
import { badge, button, errorText, h, mount, num, table, time, toast } from "../dom.js";
import { pagedTable } from "../paged.js";

/**
 * @param {HTMLElement} main
 * @param {string[]} _params
 * @param {{ role: string }} session
 */
export function render(main, _params, session) {
  const depth = h("div", { class: "list" }, h("p", { class: "loading" }, "Loading…"));
  const failed = h("div", { class: "list" });
  const admin = session.role === "admin";

  async function load() {
    try {
      const queues = await get("mutations/queues");
      const bySource = Object.entries(queues.by_source ?? {}).map(([source, count]) => `${source}: ${num(Number(count))}`);
      mount(
        depth,
        h("p", null, `${num(queues.total)} queued`, bySource.length > 0 ? ` (${bySource.join(", ")})` : ""),
        table(
          ["Device", "User", "Queued", "By source"],
          (queues.devices?.items ?? []).map((/** @type {any} */ queue) => [
            h("a", { href: `#/devices/${enc(queue.client_id)}` }, queue.client_id),
            queue.user_id,
            num(queue.pending),
            Object.entries(queue.by_source ?? {})
              .map(([source, count]) => `${source}: ${count}`)
              .join(", "),
          ]),
          "No queued mutations.",
        ),
      );
    } catch (error) {
      mount(depth, h("p", { class: "error", role: "alert" }, errorText(error)));
    }
    await pagedTable(failed, {
      path: "mutations/failed",
      headers: ["Device", "Mutation", "Partition", "Op", "Record", "State", "Error", "At", "Actions"],
      empty: "No failed or parked mutations.",
      row: (/** @type {any} */ mutation) => [
        h("a", { href: `#/devices/${enc(mutation.client_id)}` }, mutation.client_id),
        mutation.mutation_id,
        mutation.partition ?? `${mutation.source}/${mutation.key}`,
        mutation.op,
        mutation.id,
        badge(mutation.state ?? "failed", mutation.state === "parked" ? "warn" : "bad"),
        mutation.error?.message ?? mutation.error ?? "–",
        time(mutation.finished_at_ms ?? mutation.at_ms),
        admin ? actions(mutation, load) : "",
      ],
    });
  }

  mount(main, h("h1", null, "Mutations"), h("h2", null, "Queues"), depth, h("h2", null, "Failed and parked"), failed);
  void load();
}

/**
 * @param {any} mutation
 * @param {() => Promise<void>} reload
 */
function actions(mutation, reload) {
  const path = `mutations/${enc(mutation.client_id)}/${enc(mutation.mutation_id)}`;
  return h(
    "span",
    { class: "actions", "data-mutation": mutation.mutation_id },
    button("Retry", async () => {
      await post(`${path}/retry`);
      toast(`Mutation ${mutation.mutation_id} queued again.`);
      await reload();
    }),
    button(
      "Discard",
      async () => {
        await post(`${path}/discard`);
        await reload();
      },
      { class: "danger" },
    ),
  );
}
