// NanoImg Studio: a page over the HTTP API, served from the binary. The API key lives in this
// tab's session storage and goes out in the Authorization header, never in a URL. Images are
// fetched with the key and shown from blob: URLs; nothing is loaded from anywhere else.
'use strict';

const KEY = 'nanoimg.key';
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `the server answered ${status}`);
    this.status = status;
    this.code = e.code;
    this.categories = e.categories;
  }
}

/** A request to the API with the signed-in key; JSON back unless `raw`. */
async function api(path, { method = 'GET', json, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  const res = await fetch(path, { method, headers, body });
  if (!res.ok) {
    let payload = null;
    try { payload = await res.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(res.status, payload);
  }
  return raw ? res : res.json();
}

/** What to tell a person about a failure: plain words, the category for a refusal. */
function explain(err) {
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

function show(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

// ---- signing in ----

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    const me = await api('/v1/me');
    enterStudio(me);
  } catch (e) {
    sessionStorage.removeItem(KEY);
    throw e;
  }
}

function signOut() {
  sessionStorage.removeItem(KEY);
  $('studio').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  $('gallery').replaceChildren();
  $('gallery-empty').hidden = false;
  $('key').value = '';
  $('key').focus();
}

async function enterStudio(me) {
  $('signin').hidden = true;
  $('studio').hidden = false;
  $('who').hidden = false;
  $('tenant-name').textContent = me.tenant ? `Signed in to ${me.tenant.name}` : 'Signed in';
  const max = me.limits && me.limits.request && me.limits.request.max_images;
  if (max) $('count').max = String(max);
  await Promise.all([loadModels(), loadCharacters()]);
  $('prompt').focus();
}

async function loadModels() {
  const list = await api('/v1/models');
  const select = $('model');
  select.replaceChildren();
  for (const m of list.data) {
    const o = document.createElement('option');
    o.value = m.id;
    const size = m.defaults && m.defaults.size;
    const sz = typeof size === 'string' ? size : size ? `${size.width}x${size.height}` : '';
    o.textContent = sz ? `${m.id} (${sz})` : m.id;
    o.selected = !!m.default;
    select.append(o);
  }
}

async function loadCharacters() {
  try {
    const list = await api('/v1/characters');
    const select = $('character');
    select.replaceChildren(new Option('None', ''));
    for (const c of list.data) select.append(new Option(c.name, c.id));
    $('character-field').hidden = list.data.length === 0;
  } catch (_) {
    $('character-field').hidden = true; // this key may not read characters
  }
}

// ---- generating ----

let running = null;

function request() {
  const body = { prompt: $('prompt').value.trim(), n: Number($('count').value) || 1 };
  const num = (id) => ($(id).value === '' ? undefined : Number($(id).value));
  const opt = {
    negative_prompt: $('negative').value.trim() || undefined,
    model: $('model').value || undefined,
    size: $('size').value || undefined,
    steps: num('steps'),
    seed: num('seed'),
    character_id: $('character').value || undefined,
  };
  for (const [k, v] of Object.entries(opt)) if (v !== undefined) body[k] = v;
  return body;
}

/** Reads a job's server-sent events (fetch, so the key goes in a header) until it ends. */
async function follow(id, onEvent) {
  const res = await api(`/v1/jobs/${encodeURIComponent(id)}/events`, { raw: true });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

function setProgress(p) {
  const box = $('progress');
  box.dataset.events = String(Number(box.dataset.events || 0) + 1);
  const total = p.images * p.steps;
  $('progress-bar').max = total;
  $('progress-bar').value = p.image * p.steps + p.step;
  $('progress-label').textContent = `Image ${p.image + 1} of ${p.images} · step ${p.step} of ${p.steps}`;
  if (p.preview_png_b64) {
    $('preview').src = `data:image/png;base64,${p.preview_png_b64}`;
    $('preview').hidden = false;
  }
}

async function generate() {
  const body = request();
  show($('generate-error'), '');
  if (!body.prompt) {
    show($('generate-error'), 'Write a prompt first.');
    $('prompt').focus();
    return;
  }
  $('generate').disabled = true;
  const box = $('progress');
  box.hidden = false;
  box.dataset.events = '0';
  $('preview').hidden = true;
  $('progress-bar').removeAttribute('value');
  $('progress-label').textContent = 'Waiting for a worker…';
  try {
    const job = await api('/v1/jobs', { method: 'POST', json: body });
    running = job.id;
    $('cancel').hidden = false;
    let outcome = null;
    await follow(job.id, (name, data) => {
      if (name === 'started') $('progress-label').textContent = 'Started…';
      else if (name === 'progress') setProgress(data);
      else if (['succeeded', 'failed', 'cancelled'].includes(name)) outcome = { name, data };
      else if (name === 'status' && ['succeeded', 'failed', 'cancelled'].includes(data.status)) {
        outcome = { name: data.status, data: { ...data, images: data.result && data.result.images } };
      }
    });
    if (!outcome) throw new Error('the event stream ended before the job did; see Images later');
    if (outcome.name === 'failed') {
      throw new ApiError(400, { error: { message: outcome.data.error, code: outcome.data.code } });
    }
    if (outcome.name === 'cancelled') {
      show($('generate-error'), 'Cancelled.');
      return;
    }
    // Newest first: the batch's first image ends up on top.
    for (const img of [...(outcome.data.images || [])].reverse()) await addImage(img, body);
    box.dataset.done = 'true';
    $('preview').hidden = true;
    $('progress-label').textContent = 'Done.';
  } catch (e) {
    show($('generate-error'), explain(e));
    box.hidden = true;
  } finally {
    running = null;
    $('generate').disabled = false;
    $('cancel').hidden = true;
  }
}

async function addImage(img, body) {
  const [asset, blob] = await Promise.all([
    api(`/v1/assets/${encodeURIComponent(img.id)}`),
    api(`/v1/assets/${encodeURIComponent(img.id)}/content`, { raw: true }).then((r) => r.blob()),
  ]);
  const url = URL.createObjectURL(blob);
  const card = $('card-template').content.firstElementChild.cloneNode(true);
  const pic = card.querySelector('img');
  pic.src = url;
  pic.alt = `Generated: ${body.prompt}`;
  card.querySelector('.prompt').textContent = body.prompt;
  const params = {
    seed: img.seed,
    size: `${asset.width}×${asset.height}`,
    steps: body.steps || 'model default',
    model: body.model || 'default',
    negative: body.negative_prompt,
    id: img.id,
  };
  const dl = card.querySelector('.params');
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
  const a = card.querySelector('.download');
  a.href = url;
  a.download = `nanoimg-${img.id}.${(asset.media_type || 'image/png').split('/')[1]}`;
  card.querySelector('.reuse').addEventListener('click', () => {
    $('seed').value = String(img.seed);
    $('seed').focus();
  });
  $('gallery-empty').hidden = true;
  $('gallery').prepend(card);
}

// ---- wiring ----

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    show($('signin-error'), '');
    try {
      await signIn($('key').value.trim());
    } catch (e) {
      show($('signin-error'), explain(e));
    }
  });
  $('sign-out').addEventListener('click', signOut);
  $('generate-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    generate();
  });
  $('prompt').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      generate();
    }
  });
  $('cancel').addEventListener('click', () => {
    if (running) api(`/v1/jobs/${encodeURIComponent(running)}`, { method: 'DELETE' }).catch(() => {});
  });
  if (sessionStorage.getItem(KEY)) {
    api('/v1/me').then(enterStudio).catch(signOut);
  } else {
    $('key').focus();
  }
});
