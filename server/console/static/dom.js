// @ts-check
// Small DOM helpers: elements are built from data (never from HTML strings), so nothing a
// record, a user name or an error message contains can run as markup.

/**
 * Creates an element with attributes (`on*` functions become listeners) and children.
 * @param {string} tag
 * @param {Record<string, unknown> | null} [attrs]
 * @param {...(Node | string | number | null | undefined | false | (Node | string)[])} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), /** @type {EventListener} */ (value));
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

/**
 * @param {HTMLElement} parent
 * @param {unknown[]} children
 */
function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.append(child);
    else parent.append(String(child));
  }
}

/**
 * Replaces the content of `parent`.
 * @param {HTMLElement} parent
 * @param {...(Node | string | null | undefined | false)} children
 */
export function mount(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
}

/**
 * A table with a header row; `rows` are arrays of cells.
 * @param {string[]} headers
 * @param {(Node | string | number)[][]} rows
 * @param {string} [empty] shown when there are no rows
 */
export function table(headers, rows, empty = "Nothing here yet.") {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      null,
      h("thead", null, h("tr", null, headers.map((header) => h("th", null, header)))),
      h(
        "tbody",
        null,
        rows.map((cells) => h("tr", null, cells.map((cell, index) => h("td", { "data-label": headers[index] }, cell)))),
      ),
    ),
  );
}

/**
 * A form whose submit handler gets the form's values; errors thrown by it are shown in it.
 * @param {(values: Record<string, string>, form: HTMLFormElement) => Promise<void>} onSubmit
 * @param {...(Node | string)} fields
 */
export function form(onSubmit, ...fields) {
  const status = h("p", { class: "form-status", role: "status" });
  const element = /** @type {HTMLFormElement} */ (h("form", null, ...fields, status));
  element.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries([...new FormData(element).entries()].map(([key, value]) => [key, String(value)]));
    status.textContent = "";
    status.classList.remove("error");
    const buttons = element.querySelectorAll("button");
    buttons.forEach((button) => (button.disabled = true));
    onSubmit(values, element)
      .catch((/** @type {unknown} */ error) => {
        status.textContent = errorText(error);
        status.classList.add("error");
      })
      .finally(() => buttons.forEach((button) => (button.disabled = false)));
  });
  return element;
}

/**
 * A labelled input.
 * @param {string} label
 * @param {Record<string, unknown>} attrs
 */
export function field(label, attrs) {
  return h("label", { class: "field" }, h("span", null, label), h("input", attrs));
}

/**
 * A button that runs `action`, disabled while it runs; a failure shows in `status`.
 * @param {string} label
 * @param {() => Promise<void>} action
 * @param {Record<string, unknown>} [attrs]
 */
export function button(label, action, attrs = {}) {
  const element = /** @type {HTMLButtonElement} */ (h("button", { type: "button", ...attrs }, label));
  element.addEventListener("click", () => {
    element.disabled = true;
    action()
      .catch((/** @type {unknown} */ error) => toast(errorText(error), true))
      .finally(() => (element.disabled = false));
  });
  return element;
}

/** @param {unknown} error */
export function errorText(error) {
  if (error && typeof error === "object" && "message" in error) {
    const code = "code" in error && typeof error.code === "string" ? `${error.code}: ` : "";
    return `${code}${String(error.message)}`;
  }
  return String(error);
}

/**
 * Shows a short message at the bottom of the screen.
 * @param {string} text
 * @param {boolean} [isError]
 */
export function toast(text, isError = false) {
  const element = h("div", { class: isError ? "toast error" : "toast", role: isError ? "alert" : "status" }, text);
  document.body.append(element);
  setTimeout(() => element.remove(), isError ? 6000 : 3000);
}

/**
 * Formats a time in milliseconds since the epoch (0 or missing: "never").
 * @param {number | null | undefined} ms
 */
export function time(ms) {
  if (!ms) return "never";
  return new Date(ms).toLocaleString();
}

/**
 * Formats a duration given in seconds.
 * @param {number | null | undefined} seconds
 */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds === 0) return "0";
  if (seconds < 0.001) return `${Math.round(seconds * 1e6)} µs`;
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/**
 * Formats a byte count.
 * @param {number | null | undefined} bytes
 */
export function bytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/**
 * A number with thousands separators.
 * @param {number | null | undefined} value
 */
export function num(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString();
}

/**
 * A state badge.
 * @param {string} text
 * @param {"ok" | "warn" | "bad" | "muted"} kind
 */
export function badge(text, kind) {
  return h("span", { class: `badge ${kind}` }, text);
}
