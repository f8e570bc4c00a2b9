// The studio's one way to the server: the HTTP API with the signed-in key. The key lives in this
// tab's session storage and goes out in the Authorization header, never in a URL. Images are
// fetched with the key and shown from blob: URLs; nothing is loaded from anywhere else.

export const KEY = 'nanoimg.key';
export const $ = (id) => document.getElementById(id);

/** Who is signed in (`GET /v1/me`), and a bus the screens talk over. */
export const session = { me: null };
export const bus = new EventTarget();
export const emit = (name, detail) => bus.dispatchEvent(new CustomEvent(name, { detail }));
export const on = (name, fn) => bus.addEventListener(name, (e) => fn(e.detail));

/** Whether the signed-in key may use `scope` (`admin` only on the operator's tenant). */
export function can(scope) {
  const me = session.me;
  if (!me || !me.key || !me.key.scopes.includes(scope)) return false;
  return scope !== 'admin' || me.tenant.is_admin;
}

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `the server answered ${status}`);
    this.status = status;
    this.code = e.code;
    this.param = e.param;
    this.categories = e.categories;
  }
}

/**
 * A request to the API with the signed-in key: `json` sends JSON, `form` a FormData; answers
 * JSON unless `raw`, which answers the Response.
 */
export async function api(path, { method = 'GET', json, form, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const res = await fetch(path, { method, headers, body });
  if (!res.ok) {
    let payload = null;
    try { payload = await res.json(); } catch (_) { /* not JSON */ }
    const err = new ApiError(res.status, payload);
    if (res.status === 401) emit('unauthorized', err);
    throw err;
  }
  return raw ? res : res.json();
}

/** What to tell a person about a failure: plain words, the category for a refusal. */
export function explain(err) {
  if (err.code === 'moderation_blocked') {
    const cats = (err.categories || []).join(', ') || 'content policy';
    return `This image was not made: the request matched NanoImg's content policy (${cats}). ` +
      'Nothing was stored. You can rephrase the prompt and try again.';
  }
  if (err.status === 401) return 'This key was not accepted (it may have been revoked or have expired). Sign in again.';
  if (err.status === 403) return `This key may not do that: ${err.message}`;
  if (err.status === 429 || err.status === 503) return `${err.message} (the server is busy; try again in a moment)`;
  return err.message;
}

/** Sets an element's text and hides it when there is none. */
export function show(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

/** Builds an element: `h('li', {class: 'x', title: 't'}, 'text', child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

/** A definition list's rows from `[term, value]` pairs (undefined values skipped). */
export function fillList(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === '') continue;
    dl.append(h('dt', {}, k), h('dd', {}, String(v)));
  }
}

const blobs = new Map();

/** A blob: URL of one of the tenant's images, fetched once with the key. */
export async function imageUrl(id) {
  if (!blobs.has(id)) {
    blobs.set(id, api(`/v1/assets/${encodeURIComponent(id)}/content`, { raw: true })
      .then((r) => r.blob())
      .then((b) => ({ url: URL.createObjectURL(b), blob: b }))
      .catch((e) => { blobs.delete(id); throw e; }));
  }
  return blobs.get(id);
}

/** Forgets every fetched image (on sign-out). */
export function forgetImages() {
  for (const p of blobs.values()) p.then((x) => URL.revokeObjectURL(x.url)).catch(() => {});
  blobs.clear();
}

export const when = (ms) => (ms ? new Date(ms).toLocaleString() : '—');

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
