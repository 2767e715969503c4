// The API key and the JSON API. The key is typed once per browser tab and kept in sessionStorage only:
// it goes out in the X-API-Key header, never in a URL, a cookie or a log line.

const KEY = "facebridge.console.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body === "object" ? body.detail || body.title : String(body || "");
    super(`${status}: ${detail}`);
    this.status = status;
    this.problem = body && typeof body === "object" ? body : null;
    this.detail = detail;
  }

  get code() {
    return this.problem && this.problem.type ? this.problem.type.split(":").pop() : "";
  }
}

let unauthorized = () => {};

/** Called with the problem when the service refuses the key (401). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** GET (or `method`) `path` with the key; JSON bodies in and out; ApiError for any non-2xx answer. */
export async function api(path, { method = "GET", body, auth = true } = {}) {
  const headers = { Accept: "application/json, application/problem+json, text/plain" };
  const key = getKey();
  if (auth && key) {
    headers["X-API-Key"] = key;
  }
  const init = { method, headers, credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && auth) {
      unauthorized(error);
    }
    throw error;
  }
  return data;
}
