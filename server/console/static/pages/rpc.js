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
      const methods = answer.items ?? answer.methods ?? [];
      mount(
        list,
        table(
          ["Service", "Method", "Calls", "Errors", "By kind", "p50", "p99"],
          methods.map((/** @type {any} */ method) => [
            method.service,
            method.method,
            num(method.calls),
            num(method.errors),
            Object.entries(method.outcomes ?? method.errors_by_kind ?? {})
              .filter(([kind]) => kind !== "ok")
              .map(([kind, count]) => `${kind}: ${count}`)
              .join(", ") || "–",
            duration(method.p50_seconds),
            duration(method.p99_seconds),
          ]),
          "No RPC calls yet.",
        ),
      );
    })
    .catch((error) => mount(list, h("p", { class: "error", role: "alert" }, errorText(error))));
}
