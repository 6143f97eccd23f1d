// @ts-check
// Device mutations: queue depth per device and source, and the queued ones, with the
// channel's error for those parked while their channel is unavailable: retry now, or
// discard one (its device is told it was refused).

import { del, enc, get, post } from "../api.js";
import { badge, button, errorText, h, mount, num, table, toast } from "../dom.js";
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
      path: "mutations/pending",
      headers: ["Device", "Mutation", "Partition", "Op", "Record", "State", "Channel error", "Attempts", "Actions"],
      empty: "No queued mutations.",
      row: (/** @type {any} */ mutation) => [
        h("a", { href: `#/devices/${enc(mutation.client_id)}` }, mutation.client_id),
        mutation.mutation_id,
        `${mutation.source}/${mutation.key}`,
        mutation.op,
        mutation.id,
        mutation.last_error ? badge("parked", "warn") : badge("queued", "muted"),
        mutation.last_error ?? "–",
        num(mutation.attempts),
        admin ? actions(mutation, load) : "",
      ],
    });
  }

  const retry = button("Retry parked now", async () => {
    const answer = await post("mutations/retry");
    toast(`${num(answer?.retried)} parked mutations retried.`);
    await load();
  });
  mount(
    main,
    h("h1", null, "Mutations"),
    h("h2", null, "Queues"),
    depth,
    h("h2", null, "Queued and parked"),
    admin ? h("div", { class: "actions" }, retry) : null,
    failed,
  );
  void load();
}

/**
 * @param {any} mutation
 * @param {() => Promise<void>} reload
 */
function actions(mutation, reload) {
  return h(
    "span",
    { class: "actions", "data-mutation": mutation.mutation_id },
    button(
      "Discard",
      async () => {
        if (!confirm(`Discard mutation ${mutation.mutation_id}? Its device is told it was refused.`)) return;
        await del(`mutations/${enc(mutation.client_id)}/${enc(mutation.mutation_id)}`);
        toast(`Mutation ${mutation.mutation_id} discarded.`);
        await reload();
      },
      { class: "danger" },
    ),
  );
}
