// @ts-check
// Users of the app: search, create, disable or enable, reset a password, delete.

import { del, enc, post, put } from "../api.js";
import { badge, button, field, form, h, mount, num, toast } from "../dom.js";
import { pagedTable } from "../paged.js";

/**
 * @typedef {{ name: string, local: boolean, disabled: boolean, connected_devices: number }} User
 */

/**
 * @param {HTMLElement} main
 * @param {string[]} _params
 * @param {{ role: string }} session
 */
export function render(main, _params, session) {
  const admin = session.role === "admin";
  const list = h("div", { class: "list" });
  const search = form(
    async (values) => void (await load(values.search ?? "")),
    field("Search", { name: "search", type: "search", placeholder: "name starts with…" }),
    h("button", { type: "submit" }, "Search"),
  );
  search.classList.add("inline");
  const create = form(
    async (values, element) => {
      await post("users", { name: values.name, password: values.password });
      toast(`User ${values.name} created.`);
      element.reset();
      await load("");
    },
    field("Name", { name: "name", required: true, autocomplete: "off" }),
    field("Password", { name: "password", type: "password", required: true, autocomplete: "new-password" }),
    h("button", { type: "submit" }, "Create user"),
  );
  create.classList.add("inline");
  create.id = "create-user";

  /** @param {string} term */
  async function load(term) {
    await pagedTable(list, {
      path: "users",
      params: { prefix: term },
      headers: ["User", "State", "Kind", "Connected devices", "Actions"],
      empty: "No users.",
      row: (/** @type {User} */ user) => [
        user.name,
        user.disabled ? badge("disabled", "bad") : badge("active", "ok"),
        user.local ? "local" : "external",
        num(user.connected_devices),
        admin ? actions(user, () => load(term)) : "",
      ],
    });
  }

  mount(main, h("h1", null, "Users"), admin ? h("section", null, h("h2", null, "New user"), create) : null, search, list);
  void load("");
}

/**
 * The buttons of one user's row.
 * @param {User} user
 * @param {() => Promise<void>} reload
 */
function actions(user, reload) {
  const name = enc(user.name);
  const toggle = user.disabled
    ? button("Enable", async () => {
        await post(`users/${name}/enable`);
        await reload();
      })
    : button("Disable", async () => {
        await post(`users/${name}/disable`);
        toast(`${user.name} disabled: their devices were disconnected.`);
        await reload();
      });
  const reset = button("Reset password", async () => {
    const password = prompt(`New password for ${user.name}`);
    if (!password) return;
    await put(`users/${name}/password`, { password });
    toast(`Password of ${user.name} changed; their sessions were revoked.`);
  });
  const remove = button(
    "Delete",
    async () => {
      if (!confirm(`Delete ${user.name}? Their sessions end at once.`)) return;
      await del(`users/${name}`);
      await reload();
    },
    { class: "danger" },
  );
  return h("span", { class: "actions", "data-user": user.name }, toggle, reset, remove);
}
