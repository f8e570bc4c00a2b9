// The Generate screen: the form, live progress from the job's event stream, and the gallery,
// whose cards lead on to editing, variations, download and a provenance check.
import { $, ApiError, api, can, emit, explain, fillList, imageUrl, on, show } from './api.js';
import { checkInto } from './provenance.js';

let running = null;
/** The preview shown: which image it belongs to and its width in pixels. */
let shown = { image: -1, width: 0 };

export function wire() {
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
  on('characters-changed', loadCharacters);
  on('use-character', async (id) => {
    await loadCharacters();
    $('character').value = id;
    emit('open-tab', 'generate');
    $('prompt').focus();
  });
  on('image-made', ({ img, meta }) => addImage(img, meta));
}

export function enter(me) {
  const max = me.limits && me.limits.request && me.limits.request.max_images;
  if (max) $('count').max = String(max);
  loadModels().catch(() => {});
  loadCharacters();
}

export function open() {}

export function reset() {
  $('gallery').replaceChildren();
  $('gallery-empty').hidden = false;
  $('progress').hidden = true;
}

async function loadModels() {
  const list = await api('/v1/models');
  const select = $('model');
  select.replaceChildren();
  for (const m of list.data) {
    const size = m.defaults && m.defaults.size;
    const sz = typeof size === 'string' ? size : size ? `${size.width}x${size.height}` : '';
    const o = new Option(sz ? `${m.id} (${sz})` : m.id, m.id);
    o.selected = !!m.default;
    select.append(o);
  }
}

async function loadCharacters() {
  if (!can('characters')) {
    $('character-field').hidden = true;
    return;
  }
  try {
    const list = await api('/v1/characters');
    const select = $('character');
    const chosen = select.value;
    select.replaceChildren(new Option('None', ''));
    for (const c of list.data) select.append(new Option(c.name, c.id));
    select.value = list.data.some((c) => c.id === chosen) ? chosen : '';
    $('character-field').hidden = list.data.length === 0;
  } catch (_) {
    $('character-field').hidden = true;
  }
}

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
  $('progress-bar').max = p.images * p.steps;
  $('progress-bar').value = p.image * p.steps + p.step;
  $('progress-label').textContent = `Image ${p.image + 1} of ${p.images} · step ${p.step} of ${p.steps}`;
  if (p.preview_png_b64) {
    box.dataset.previews = String(Number(box.dataset.previews || 0) + 1);
    showPreview(p.image, `data:image/png;base64,${p.preview_png_b64}`);
  }
}

/** Shows a step's preview, unless it is a latent-sized sketch of the image whose full-size
 *  preview (decoded by the model's tiny autoencoder) is already shown: that stays until the
 *  next decoded one. */
function showPreview(image, url) {
  const img = new Image();
  img.onload = () => {
    if (image === shown.image && img.naturalWidth < shown.width) return;
    shown = { image, width: img.naturalWidth };
    $('progress').dataset.previewWidth = String(img.naturalWidth);
    $('preview').src = url;
    $('preview').hidden = false;
  };
  img.src = url;
}

const FINAL = ['succeeded', 'failed', 'cancelled'];

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
  box.dataset.previews = '0';
  delete box.dataset.previewWidth;
  shown = { image: -1, width: 0 };
  delete box.dataset.done;
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
      else if (FINAL.includes(name)) outcome = { name, data };
      else if (name === 'status' && FINAL.includes(data.status)) {
        outcome = { name: data.status, data: { ...data, images: data.result && data.result.images } };
      }
    });
    if (!outcome) throw new Error('the event stream ended before the job did; see Images later');
    if (outcome.name === 'failed') {
      throw new ApiError(400, { error: { message: outcome.data.error, code: outcome.data.code } });
    }
    if (outcome.name === 'cancelled') {
      show($('generate-error'), 'Cancelled.');
      box.hidden = true;
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

/** Adds an image to the top of the gallery; `meta` is what made it (prompt, steps, model…). */
async function addImage(img, meta) {
  const [asset, { url, blob }] = await Promise.all([
    api(`/v1/assets/${encodeURIComponent(img.id)}`),
    imageUrl(img.id),
  ]);
  const card = $('card-template').content.firstElementChild.cloneNode(true);
  card.dataset.id = img.id;
  const pic = card.querySelector('img');
  pic.src = url;
  pic.alt = `Generated: ${meta.prompt}`;
  card.querySelector('.prompt').textContent = meta.prompt;
  fillList(card.querySelector('.params'), [
    ['seed', img.seed],
    ['size', `${asset.width}×${asset.height}`],
    ['steps', meta.steps || 'model default'],
    ['model', meta.model || 'default'],
    ['negative', meta.negative_prompt],
    ['character', meta.character_id],
    ['id', img.id],
  ]);
  const a = card.querySelector('.download');
  a.href = url;
  a.download = `nanoimg-${img.id}.${(asset.media_type || 'image/png').split('/')[1]}`;
  card.querySelector('.reuse').addEventListener('click', () => {
    $('seed').value = String(img.seed);
    $('seed').focus();
  });
  const editThis = card.querySelector('.edit-this');
  const vary = card.querySelector('.variations');
  editThis.hidden = vary.hidden = !can('images:edit');
  editThis.addEventListener('click', () => emit('edit-image', img.id));
  vary.addEventListener('click', () => variations(img.id, blob, vary));
  const check = card.querySelector('.check');
  check.addEventListener('click', () => checkInto(blob, card.querySelector('.report'), check));
  $('gallery-empty').hidden = true;
  $('gallery').prepend(card);
}

/** Two variations of an image, added to the gallery. */
async function variations(id, blob, button) {
  show($('gallery-error'), '');
  button.disabled = true;
  try {
    const form = new FormData();
    form.append('image', blob, `${id}.png`);
    form.append('n', '2');
    if ($('steps').value) form.append('steps', $('steps').value);
    const r = await api('/v1/images/variations', { method: 'POST', form });
    const meta = { prompt: `Variation of ${id}`, steps: $('steps').value || undefined };
    for (const img of [...r.data].reverse()) await addImage(img, meta);
  } catch (e) {
    show($('gallery-error'), explain(e));
  } finally {
    button.disabled = false;
  }
}
