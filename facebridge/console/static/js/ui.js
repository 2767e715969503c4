// Small DOM helpers and the page life cycle (sign-in, then the page's own render function).

import { api, ApiError, clearKey, getKey, onUnauthorized, setKey } from "./api.js";

/** An element: el("td", {class: "num"}, "3.2"); attributes only, never inline styles. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function fill(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren();
  append(node, children);
  return node;
}

export function notice(text, kind = "") {
  return el("p", { class: `notice ${kind}`.trim() }, text);
}

export function badge(text, kind) {
  return el("span", { class: `badge ${kind}` }, text);
}

/** A table: columns [{label, num}] and rows of cells (strings, numbers or nodes). */
export function table(columns, rows, caption) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.map((row) =>
    el("tr", {}, row.map((cell, i) => el("td", { class: columns[i] && columns[i].num ? "num" : null }, cell ?? "–"))),
  );
  return el(
    "div",
    { class: "table-wrap" },
    el("table", {}, caption ? el("caption", {}, caption) : null, el("thead", {}, head), el("tbody", {}, body)),
  );
}

export function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
}

export function pct(value, digits = 2) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(digits)}%`;
}

export function num(value, digits = 4) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

export function sci(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  return value === 0 ? "0" : Number(value).toExponential(digits);
}

export function short(hash, length = 12) {
  return hash ? el("code", { title: hash }, `${hash.slice(0, length)}…`) : "–";
}

export function when(text) {
  if (!text) return "–";
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function status(text, isError = false) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = isError ? "status error" : "status";
}

/** Sign in (once per tab), then `render()`; a refused key brings the sign-in form back. */
export function start(render) {
  const panel = document.getElementById("signin-panel");
  const form = document.getElementById("signin");
  const input = document.getElementById("api-key");
  const error = document.getElementById("signin-error");
  const content = document.getElementById("content");
  const session = document.getElementById("session");

  function signedOut(message) {
    clearKey();
    content.hidden = true;
    session.hidden = true;
    panel.hidden = false;
    error.textContent = message || "";
    status("Sign in to see this page.");
    input.focus();
  }

  onUnauthorized((problem) => signedOut(`The service refused that key (401): ${problem.detail}`));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      error.textContent = "Type an API key first.";
      input.focus();
      return;
    }
    setKey(key);
    input.value = "";
    try {
      await api("/calibration/history"); // any protected route: does the service take this key?
    } catch (failure) {
      if (!(failure instanceof ApiError && failure.status === 401)) {
        error.textContent = `Could not check the key: ${failure.message}`;
      }
      return;
    }
    run();
  });

  document.getElementById("signout").addEventListener("click", () => signedOut("Signed out."));

  async function run() {
    panel.hidden = true;
    session.hidden = false;
    content.hidden = false;
    status("Loading…");
    try {
      await render();
      status("");
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 401) return; // signedOut has run
      status(`Could not load this page: ${failure.message}`, true);
      throw failure;
    }
  }

  if (getKey()) run();
  else signedOut("");
}

/** Run one section's loader; a key without the route's scope (403) gets a notice in that section
 * instead of failing the whole page. */
export async function section(id, load) {
  try {
    await load();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 403) {
      fill(id, notice(`This key may not read this: ${failure.detail}`, "warn"));
      return;
    }
    throw failure;
  }
}

/** Read a file as base64 (without the data: prefix). */
export function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
