// @ts-check
// A list endpoint's pages (`{items, next_cursor}`) shown as one table with a "Load more"
// button, shared by every list page of the console.

import { get, query } from "./api.js";
import { button, errorText, h, mount, table } from "./dom.js";

/**
 * @template T
 * @typedef {{
 *   path: string,
 *   params?: Record<string, string | number | boolean | undefined | null>,
 *   headers: string[],
 *   row: (item: T) => (Node | string | number)[],
 *   empty?: string,
 *   limit?: number,
 * }} PagedOptions
 */

/**
 * Loads the first page into `container` and offers the following ones.
 * @template T
 * @param {HTMLElement} container
 * @param {PagedOptions<T>} options
 * @returns {Promise<T[]>} the items of the first page
 */
export async function pagedTable(container, options) {
  /** @type {T[]} */
  const items = [];
  /** @type {string | undefined} */
  let cursor;
  const more = h("div", { class: "more" });

  async function load() {
    const page = await get(`${options.path}${query({ ...(options.params ?? {}), cursor, limit: options.limit ?? 50 })}`);
    items.push(...page.items);
    cursor = page.next_cursor ?? undefined;
    mount(container, table(options.headers, items.map(options.row), options.empty), more);
    mount(more, cursor ? button("Load more", load) : null);
  }

  mount(container, h("p", { class: "loading" }, "Loading…"));
  try {
    await load();
  } catch (error) {
    mount(container, h("p", { class: "error", role: "alert" }, errorText(error)));
  }
  return items;
}
