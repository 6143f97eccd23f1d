// @ts-check
// Device mutations: queue depth per device and source; the queued ones, with the channel's
// error for those parked while their channel is unavailable: retry now, or discard one (its
// device is told it was refused); and the failed ones, which their channel refused: retry
// one (queued again, its device told the new outcome) or dismiss it.

import { del, enc, get, post } from "../api.js";
import { badge, button, errorText, h, mount, num, table, time, toast } from "../dom.js";
import { pagedTable } from "../paged.js";

/**
 * @param {HTMLElement} main
 * @param {string[]} _params
 * @param {{ role: string }} session
 */
export function render(main, _params, session) {
  const depth = h("div", { class: "list" }, h("p", { class: "loading" }, "Loading…"));
  const queued = h("div", { class: "list" });
  const failed = h("div", { class: "list", id: "failed-mutations" });
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
    await pagedTable(queued, {
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
    await pagedTable(failed, {
      path: "mutations/failed",
      headers: ["Device and mutation", "Change", "Error", "Failed", "Actions"],
      empty: "No failed mutations.",
      row: (/** @type {any} */ mutation) => [
        h("span", null, h("a", { href: `#/devices/${enc(mutation.client_id)}` }, mutation.client_id), h("br"), h("code", null, mutation.mutation_id)),
        h("span", null, `${mutation.op} ${mutation.source}/${mutation.key} ${mutation.id}`, h("br"), h("code", null, JSON.stringify(mutation.fields))),
        h("span", null, badge(mutation.code, "bad"), " ", mutation.message),
        time(mutation.failed_ms),
        admin ? failedActions(mutation, load) : "",
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
    queued,
    h("h2", null, "Failed"),
    h("p", { class: "hint" }, "Refused by their channel. Retry one once its backend is fixed: its device is told the new outcome."),
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

/**
 * @param {any} mutation
 * @param {() => Promise<void>} reload
 */
function failedActions(mutation, reload) {
  const path = `mutations/failed/${enc(mutation.client_id)}/${enc(mutation.mutation_id)}`;
  return h(
    "span",
    { class: "actions", "data-failed-mutation": mutation.mutation_id, "data-failed-ms": String(mutation.failed_ms) },
    button("Retry", async () => {
      const answer = await post(`${path}/retry`);
      toast(`Mutation ${mutation.mutation_id} queued again (position ${num(answer?.seq)}).`);
      await reload();
    }),
    button("Dismiss", async () => {
      await del(path);
      toast(`Mutation ${mutation.mutation_id} dismissed.`);
      await reload();
    }),
  );
}
