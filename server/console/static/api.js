// @ts-check
// The admin API as the console uses it: JSON in and out, the session cookie sent by the
// browser, the CSRF token echoed on every state-changing request, typed errors.

/** An error the admin API answered with (its `{code, message}` body and HTTP status). */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const CSRF_KEY = "syncline.csrf";

/** The CSRF token of this tab's console session (kept for reloads, dropped at logout). */
export function csrfToken() {
  return sessionStorage.getItem(CSRF_KEY) ?? "";
}

/** @param {string | null} token */
export function setCsrfToken(token) {
  if (token) sessionStorage.setItem(CSRF_KEY, token);
  else sessionStorage.removeItem(CSRF_KEY);
}

/** Called when a request finds the session gone (401): the console shows its login. */
let onUnauthorized = () => {};

/** @param {() => void} handler */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/**
 * Sends one request to the admin API and returns its JSON body (undefined for 204).
 * @param {string} method
 * @param {string} path  below `/v1/admin/`
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function request(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  const response = await fetch(`/v1/admin/${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return undefined;
  const text = await response.text();
  /** @type {any} */
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!response.ok) {
    if (response.status === 401 && path !== "session") onUnauthorized();
    const code = typeof json?.code === "string" ? json.code : `http_${response.status}`;
    const message = typeof json?.message === "string" ? json.message : response.statusText;
    throw new ApiError(response.status, code, message);
  }
  return json;
}

export const get = (/** @type {string} */ path) => request("GET", path);
export const post = (/** @type {string} */ path, /** @type {unknown} */ body = {}) => request("POST", path, body);
export const put = (/** @type {string} */ path, /** @type {unknown} */ body = {}) => request("PUT", path, body);
export const patch = (/** @type {string} */ path, /** @type {unknown} */ body = {}) => request("PATCH", path, body);
export const del = (/** @type {string} */ path) => request("DELETE", path);

/**
 * Builds a query string from the parameters that are set.
 * @param {Record<string, string | number | boolean | undefined | null>} params
 */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** @param {string} segment */
export const enc = (segment) => encodeURIComponent(segment);
