// @ts-check
// The Syncline console: a login, then pages over the admin API, routed by the URL's hash.
// Every page is a module exporting `render(main, params, session)`, which may return a
// function that stops what the page started (a live stream, a timer).

import { ApiError, del, get, post, setCsrfToken, whenUnauthorized } from "./api.js";
import { field, form, h, mount } from "./dom.js";
import * as dashboard from "./pages/dashboard.js";
import * as devices from "./pages/devices.js";
import * as mutations from "./pages/mutations.js";
import * as rpc from "./pages/rpc.js";
import * as sources from "./pages/sources.js";
import * as users from "./pages/users.js";

/**
 * @typedef {{ name: string, role: "admin" | "viewer" }} Session
 * @typedef {(main: HTMLElement, params: string[], session: Session) => (void | (() => void))} Render
 */

/** Routes: a hash pattern (segments, `:name` for a parameter), the nav label, the page. */
/** @type {{ pattern: string, nav?: string, render: Render }[]} */
const ROUTES = [
  { pattern: "dashboard", nav: "Dashboard", render: dashboard.render },
  { pattern: "users", nav: "Users", render: users.render },
  { pattern: "devices", nav: "Devices", render: devices.renderList },
  { pattern: "devices/:id", render: devices.renderDevice },
  { pattern: "sources", nav: "Sources", render: sources.renderList },
  { pattern: "sources/:source", render: sources.renderSource },
  { pattern: "sources/:source/partitions/:key", render: sources.renderPartition },
  { pattern: "mutations", nav: "Mutations", render: mutations.render },
  { pattern: "rpc", nav: "RPC", render: rpc.render },
];

const root = /** @type {HTMLElement} */ (document.getElementById("app"));
/** @type {Session | null} */
let session = null;
/** @type {(() => void) | void} */
let stopPage;

/**
 * Finds the route of a hash and its parameters.
 * @param {string} hash
 */
function resolve(hash) {
  const segments = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (segments.length === 0) return { route: ROUTES[0], params: [] };
  for (const route of ROUTES) {
    const pattern = route.pattern.split("/");
    if (pattern.length !== segments.length) continue;
    /** @type {string[]} */
    const params = [];
    const matches = pattern.every((part, index) => {
      const segment = /** @type {string} */ (segments[index]);
      if (part.startsWith(":")) {
        params.push(segment);
        return true;
      }
      return part === segment;
    });
    if (matches) return { route, params };
  }
  return null;
}

function renderShell() {
  if (!session) return renderLogin();
  if (typeof stopPage === "function") stopPage();
  stopPage = undefined;
  const resolved = resolve(location.hash);
  const current = resolved?.route.pattern.split("/")[0];
  const main = h("main", { id: "main" });
  const nav = h(
    "nav",
    { "aria-label": "Sections" },
    ROUTES.filter((route) => route.nav).map((route) =>
      h("a", { href: `#/${route.pattern}`, "aria-current": route.pattern === current ? "page" : false }, route.nav),
    ),
  );
  const logout = h("button", { type: "button", class: "link", onclick: () => void logOut() }, "Log out");
  mount(
    root,
    h(
      "header",
      null,
      h("a", { class: "brand", href: "#/dashboard" }, "Syncline"),
      nav,
      h("span", { class: "who" }, `${session.name} (${session.role})`, " ", logout),
    ),
    main,
  );
  if (!resolved) {
    mount(main, h("h1", null, "Not found"), h("p", null, "No page here. ", h("a", { href: "#/dashboard" }, "Back to the dashboard.")));
    return;
  }
  stopPage = resolved.route.render(main, resolved.params, session);
}

function renderLogin() {
  if (typeof stopPage === "function") stopPage();
  stopPage = undefined;
  const login = form(
    async (values) => {
      const answer = await post("session", { name: values.name, password: values.password });
      setCsrfToken(answer?.csrf_token ?? null);
      session = { name: answer?.name ?? values.name ?? "", role: answer?.role ?? "viewer" };
      renderShell();
    },
    field("User", { name: "name", autocomplete: "username", required: true, autofocus: true }),
    field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true }),
    h("button", { type: "submit" }, "Log in"),
  );
  mount(root, h("main", { class: "login" }, h("h1", null, "Syncline console"), login));
}

async function logOut() {
  try {
    await del("session");
  } finally {
    setCsrfToken(null);
    session = null;
    renderLogin();
  }
}

async function start() {
  whenUnauthorized(() => {
    session = null;
    setCsrfToken(null);
    renderLogin();
  });
  try {
    const current = await get("session");
    session = { name: current.name, role: current.role };
    if (current.csrf_token) setCsrfToken(current.csrf_token);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    session = null;
  }
  window.addEventListener("hashchange", renderShell);
  renderShell();
}

void start();
