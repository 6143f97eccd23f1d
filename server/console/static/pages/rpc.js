// @ts-check
// Mobile RPC: calls, errors by kind and latency per service and method.

import { get } from "../api.js";
import { duration, errorText, h, mount, num, table } from "../dom.js";

/** @param {HTMLElement} main */
export function render(main) {
  const list = h("div", { class: "list" }, h("p", { class: "loading" }, "Loading…"));
  mount(main, h("h1", null, "RPC"), list);
  get("rpc")
    .then((answer) => {
      const methods = answer.items ?? [];
      mount(
        list,
        table(
          ["Service", "Method", "Calls", "Errors", "By kind", "Mean", "p50", "p99"],
          methods.map((/** @type {any} */ method) => [
            method.service,
            method.method,
            num(method.calls),
            num(method.errors),
            Object.entries(method.errors_by_kind ?? {})
              .map(([kind, count]) => `${kind}: ${count}`)
              .join(", ") || "–",
            duration(method.latency_mean_ms / 1000),
            duration(method.latency_p50_ms / 1000),
            duration(method.latency_p99_ms / 1000),
          ]),
          "No RPC calls yet.",
        ),
      );
    })
    .catch((error) => mount(list, h("p", { class: "error", role: "alert" }, errorText(error))));
}
