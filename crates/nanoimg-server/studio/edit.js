// The Edit screen: an edit session (`/v1/edit-sessions`). Instructions go in a chat-like panel;
// "Preview plan" shows the plan a dry run would run, "Apply" runs it and adds a version. The
// versions form a strip: undo, redo, and picking any version (the next instruction branches
// from it). A rectangle drawn on the image is an inpainting area.
import { $, api, emit, explain, h, imageUrl, on, show } from './api.js';

let current = null; // the session, as the API answers it
let area = null; // the selected rectangle, in fractions of the image
let preview = null; // the shown plan: { text, plan, from } (the words, the plan, the version it was made on)
let mode = null; // 'area' (a rectangle) or 'brush' while choosing where to paint
let painted = false; // whether the brush has touched the mask

export function wire() {
  on('edit-image', async (imageId) => {
    emit('open-tab', 'edit');
    await start(imageId);
  });
  $('edit-upload').addEventListener('change', async () => {
    const file = $('edit-upload').files[0];
    if (!file) return;
    await guarded(async () => {
      const form = new FormData();
      form.append('file', file, file.name);
      const asset = await api('/v1/assets', { method: 'POST', form });
      await start(asset.id);
    });
    $('edit-upload').value = '';
  });
  $('instruct-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    planPreview();
  });
  $('instruction').addEventListener('keydown', (ev) => {
    if (ev.key !== 'Enter' || ev.shiftKey) return;
    ev.preventDefault();
    if (ev.ctrlKey || ev.metaKey) apply();
    else planPreview();
  });
  $('instruction').addEventListener('input', () => {
    if ($('instruction').value.trim() !== (preview && preview.text)) $('plan').hidden = true;
  });
  $('apply').addEventListener('click', () => apply());
  $('undo').addEventListener('click', () => move('undo'));
  $('redo').addEventListener('click', () => move('redo'));
  $('show-before').addEventListener('change', render);
  $('edit-close').addEventListener('click', () => {
    reset();
    open();
  });
  $('select-area').addEventListener('click', () => setMode(mode === 'area' ? null : 'area'));
  $('brush').addEventListener('click', () => setMode(mode === 'brush' ? null : 'brush'));
  $('brush-clear').addEventListener('click', () => {
    const c = $('edit-brush');
    c.getContext('2d').clearRect(0, 0, c.width, c.height);
    painted = false;
  });
  wireArea();
  wireBrush();
  $('area-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    fillArea();
  });
}

/** Opening the screen with no session lists recent ones to resume. */
export async function open() {
  loadModels().catch(() => {});
  if (current) return;
  const list = await api('/v1/edit-sessions?limit=8');
  const ul = $('edit-sessions');
  ul.replaceChildren();
  for (const s of list.data) {
    const n = s.versions.length;
    ul.append(h('li', {},
      h('button', { type: 'button', class: 'quiet', onclick: () => resume(s.id) },
        `Resume the session of ${new Date(s.updated_at).toLocaleString()} (${n} version${n === 1 ? '' : 's'})`)));
  }
}

/** The models the generative changes may run on; one that follows edit instructions (FLUX.1
 * Kontext) gets them in the user's words, and says so. */
async function loadModels() {
  const list = await api('/v1/models');
  const select = $('edit-model');
  const chosen = select.value;
  select.replaceChildren();
  for (const m of list.data) {
    const o = new Option(m.kontext ? `${m.id} (follows instructions)` : m.id, m.id);
    o.selected = chosen ? m.id === chosen : !!m.default;
    select.append(o);
  }
}

/** `body` with the model chosen for the generative changes. */
function withModel(body) {
  const model = $('edit-model').value;
  return model ? { ...body, model } : body;
}

export function reset() {
  current = null;
  preview = null;
  setMode(null);
  $('edit-work').hidden = true;
  $('chat-card').hidden = true;
  $('edit-start').hidden = false;
  $('chat-log').replaceChildren();
  $('versions').replaceChildren();
  $('plan').hidden = true;
  show($('edit-error'), '');
  $('edit-status').textContent = '';
}

/** Runs `fn`, showing a failure in the panel; the buttons are off meanwhile. */
async function guarded(fn, busy = '') {
  show($('edit-error'), '');
  $('edit-status').textContent = busy;
  const buttons = document.querySelectorAll('#view-edit button');
  for (const b of buttons) b.disabled = true;
  try {
    await fn();
    $('edit-status').textContent = '';
  } catch (e) {
    $('edit-status').textContent = '';
    show($('edit-error'), explain(e));
  } finally {
    for (const b of buttons) b.disabled = false;
    if (current) {
      $('undo').disabled = !current.can_undo;
      $('redo').disabled = !current.can_redo;
    }
  }
}

async function start(imageId) {
  await guarded(async () => {
    reset();
    current = await api('/v1/edit-sessions', { method: 'POST', json: { image_id: imageId } });
    await render();
  });
  $('instruction').focus();
}

async function resume(id) {
  await guarded(async () => {
    current = await api(`/v1/edit-sessions/${encodeURIComponent(id)}`);
    await render();
  });
}

const version = (id) => current.versions.find((v) => v.id === id);

/** The versions from the root to `id`. */
function lineage(id) {
  const out = [];
  for (let v = version(id); v; v = v.parent_id ? version(v.parent_id) : null) out.unshift(v);
  return out;
}

/** One line per operation, in words a person can check. */
function describe(op) {
  const { op: name, ...args } = op;
  const parts = Object.entries(args).map(([k, v]) => {
    if (v && typeof v === 'object') {
      return `${k} ${Object.entries(v).map(([a, b]) => `${a} ${typeof b === 'number' ? +b.toFixed(3) : b}`).join(', ')}`;
    }
    return `${k} ${typeof v === 'number' ? +v.toFixed(3) : JSON.stringify(v)}`;
  });
  return parts.length ? `${name}: ${parts.join('; ')}` : name;
}

async function render() {
  if (!current) return;
  $('edit-start').hidden = true;
  $('edit-work').hidden = false;
  $('chat-card').hidden = false;
  const head = version(current.head);
  const seq = (v) => `v${v.seq}`;
  $('edit-image').src = (await imageUrl(head.image_id)).url;
  $('edit-head-label').textContent = `Current: ${seq(head)}`;
  $('edit-stage').dataset.head = head.id;
  $('edit-stage').dataset.seq = String(head.seq);
  const parent = head.parent_id && version(head.parent_id);
  $('edit-before').hidden = !($('show-before').checked && parent);
  if (parent && $('show-before').checked) {
    $('edit-before-img').src = (await imageUrl(parent.image_id)).url;
    $('edit-before').querySelector('figcaption').textContent = `Before: ${seq(parent)}`;
  }
  $('undo').disabled = !current.can_undo;
  $('redo').disabled = !current.can_redo;

  // The strip: every version, oldest first; the head is marked.
  const strip = $('versions');
  strip.replaceChildren();
  for (const v of [...current.versions].sort((a, b) => a.seq - b.seq)) {
    const from = v.parent_id ? version(v.parent_id) : null;
    const label = v.parent_id ? (v.instruction || 'edit') : 'original';
    const pic = h('img', { alt: '' });
    imageUrl(v.image_id).then((x) => { pic.src = x.url; }).catch(() => {});
    const b = h('button', {
      type: 'button', class: 'version', 'aria-current': v.id === current.head ? 'true' : null,
      'aria-label': `${seq(v)}: ${label}${v.id === current.head ? ' (current)' : ''}`,
      title: label, onclick: () => checkout(v.id),
    }, pic, h('span', {}, seq(v)),
    from && from.seq !== v.seq - 1 ? h('small', {}, `from ${seq(from)}`) : null);
    strip.append(h('li', {}, b));
  }

  // The conversation that led to the head.
  const log = $('chat-log');
  log.replaceChildren();
  for (const v of lineage(head.id)) {
    if (!v.parent_id) {
      log.append(h('li', { class: 'system' }, `Started from the original (${seq(v)}).`));
      continue;
    }
    log.append(h('li', { class: 'you' }, v.instruction === '(plan)' ? planWords(v.plan) : v.instruction));
    const ops = (v.plan && v.plan.ops) || [];
    log.append(h('li', { class: 'system' }, `${ops.map(describe).join(' → ')} ⇒ ${seq(v)}`));
  }
}

/** What a plan sent from the studio (not typed) asked for, in words. */
function planWords(plan) {
  const prompts = ((plan && plan.ops) || []).map((o) => o.prompt).filter(Boolean);
  return prompts.length ? `Paint “${prompts.join('”, “')}” into an area` : 'A plan';
}

async function planPreview() {
  const text = $('instruction').value.trim();
  if (!text || !current) return;
  await guarded(async () => {
    const r = await api(`/v1/edit-sessions/${encodeURIComponent(current.id)}/instructions`, {
      method: 'POST', json: withModel({ instruction: text, dry_run: true }),
    });
    const ol = $('plan-ops');
    ol.replaceChildren();
    if (r.action) {
      ol.append(h('li', {}, r.action === 'undo' ? 'Undo: go back one version' : 'Redo: go forward again'));
      $('plan-by').textContent = '';
    } else {
      for (const op of r.plan.ops) ol.append(h('li', {}, describe(op)));
      const by = r.planner && r.planner.source;
      $('plan-by').textContent = by ? `Planned by the ${by} planner.` : '';
    }
    preview = { text, plan: r.plan || null, from: r.from_version || null };
    $('plan').hidden = false;
  }, 'Planning…');
}

/** Runs the instruction. When its plan was previewed on the version still checked out, that
 * plan is sent with the words, so what runs is what was shown (an LLM planner could plan the
 * same words differently a second time). */
async function apply() {
  const text = $('instruction').value.trim();
  if (!text || !current) return;
  const shown = preview && preview.text === text && preview.plan && preview.from === current.head;
  await instruct(shown ? { instruction: text, plan: preview.plan } : { instruction: text }, 'Applying…');
}

/** Sends an instruction or plan; on success the instruction box is emptied. */
async function instruct(body, busy) {
  let done = false;
  await guarded(async () => {
    const r = await api(`/v1/edit-sessions/${encodeURIComponent(current.id)}/instructions`, {
      method: 'POST', json: withModel(body),
    });
    current = r;
    done = true;
    await render();
  }, busy);
  if (done) {
    $('instruction').value = '';
    $('plan').hidden = true;
    preview = null;
  }
  return done;
}

async function move(action) {
  await guarded(async () => {
    current = await api(`/v1/edit-sessions/${encodeURIComponent(current.id)}/${action}`, { method: 'POST' });
    await render();
  });
}

async function checkout(id) {
  if (id === current.head) return;
  await guarded(async () => {
    current = await api(`/v1/edit-sessions/${encodeURIComponent(current.id)}/checkout`, {
      method: 'POST', json: { version: id },
    });
    await render();
  });
}

// ---- where to paint: a rectangle or a brush ----

/** Enters `next` ('area', 'brush' or null), leaving the other. */
function setMode(next) {
  mode = next;
  area = null;
  $('edit-area').hidden = true;
  $('edit-stage').removeAttribute('tabindex');
  $('select-area').setAttribute('aria-pressed', String(next === 'area'));
  $('brush').setAttribute('aria-pressed', String(next === 'brush'));
  $('edit-stage').classList.toggle('selecting', next === 'area');
  $('edit-stage').classList.toggle('brushing', next === 'brush');
  $('brush-tools').hidden = next !== 'brush';
  $('area-form').hidden = !next;
  const c = $('edit-brush');
  c.hidden = next !== 'brush';
  painted = false;
  if (next === 'brush') {
    // The mask has the picture's own pixels.
    c.width = $('edit-image').naturalWidth;
    c.height = $('edit-image').naturalHeight;
  }
  if (next === 'area') {
    // A first area in the middle: drag to draw another, or move it from the keyboard.
    area = { x: 0.25, y: 0.25, width: 0.5, height: 0.5 };
    drawArea();
    $('edit-stage').tabIndex = 0;
    $('edit-stage').focus();
  }
}

function drawArea() {
  const box = $('edit-area');
  box.style.left = `${area.x * 100}%`;
  box.style.top = `${area.y * 100}%`;
  box.style.width = `${area.width * 100}%`;
  box.style.height = `${area.height * 100}%`;
  box.hidden = false;
}

/** Where a pointer is on the picture, in fractions of it. */
function at(ev) {
  const r = $('edit-image').getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return { x: clamp((ev.clientX - r.left) / r.width), y: clamp((ev.clientY - r.top) / r.height) };
}

function wireArea() {
  const stage = $('edit-stage');
  let from = null;
  const update = (ev) => {
    const p = at(ev);
    area = {
      x: Math.min(from.x, p.x), y: Math.min(from.y, p.y),
      width: Math.abs(p.x - from.x), height: Math.abs(p.y - from.y),
    };
    drawArea();
  };
  stage.addEventListener('pointerdown', (ev) => {
    if (mode !== 'area') return;
    ev.preventDefault();
    stage.setPointerCapture(ev.pointerId);
    from = at(ev);
  });
  stage.addEventListener('pointermove', (ev) => { if (from) update(ev); });
  // Arrow keys move the area by 5% of the image; with Shift they resize it.
  stage.addEventListener('keydown', (ev) => {
    const step = { ArrowLeft: [-0.05, 0], ArrowRight: [0.05, 0], ArrowUp: [0, -0.05], ArrowDown: [0, 0.05] }[ev.key];
    if (mode !== 'area' || !area || !step) return;
    ev.preventDefault();
    const [dx, dy] = step;
    if (ev.shiftKey) {
      area.width = Math.min(1 - area.x, Math.max(0.05, area.width + dx));
      area.height = Math.min(1 - area.y, Math.max(0.05, area.height + dy));
    } else {
      area.x = Math.min(1 - area.width, Math.max(0, area.x + dx));
      area.y = Math.min(1 - area.height, Math.max(0, area.y + dy));
    }
    drawArea();
  });
  stage.addEventListener('pointerup', (ev) => {
    if (!from) return;
    update(ev);
    from = null;
    if (area.width < 0.02 || area.height < 0.02) {
      area = null;
      $('edit-area').hidden = true;
      return;
    }
    $('area-prompt').focus();
  });
}

function wireBrush() {
  const c = $('edit-brush');
  let last = null;
  const dab = (ev) => {
    const p = at(ev);
    const pt = { x: p.x * c.width, y: p.y * c.height };
    const g = c.getContext('2d');
    g.strokeStyle = g.fillStyle = 'rgba(240, 180, 0, 0.55)';
    g.lineCap = 'round';
    g.lineWidth = (Number($('brush-size').value) / 100) * c.width;
    g.beginPath();
    g.moveTo((last || pt).x, (last || pt).y);
    g.lineTo(pt.x, pt.y);
    g.stroke();
    g.beginPath();
    g.arc(pt.x, pt.y, g.lineWidth / 2, 0, 2 * Math.PI);
    g.fill();
    last = pt;
    painted = true;
  };
  c.addEventListener('pointerdown', (ev) => {
    ev.preventDefault();
    c.setPointerCapture(ev.pointerId);
    last = null;
    dab(ev);
  });
  c.addEventListener('pointermove', (ev) => { if (last) dab(ev); });
  c.addEventListener('pointerup', () => {
    last = null;
    $('area-prompt').focus();
  });
}

/** The brush strokes as a mask PNG (white = repaint), the picture's size. */
function brushMask() {
  const src = $('edit-brush');
  const out = document.createElement('canvas');
  out.width = src.width;
  out.height = src.height;
  const g = out.getContext('2d');
  const px = src.getContext('2d').getImageData(0, 0, src.width, src.height);
  for (let i = 0; i < px.data.length; i += 4) {
    const v = px.data[i + 3] > 0 ? 255 : 0;
    px.data[i] = px.data[i + 1] = px.data[i + 2] = v;
    px.data[i + 3] = 255;
  }
  g.putImageData(px, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
}

async function fillArea() {
  const prompt = $('area-prompt').value.trim();
  if (!prompt || !mode) return;
  let body;
  if (mode === 'area') {
    if (!area) return;
    const round = (v) => Math.round(v * 1000) / 1000;
    const a = { x: round(area.x), y: round(area.y), width: round(area.width), height: round(area.height) };
    body = { plan: { version: 1, ops: [{ op: 'inpaint', area: a, prompt }] } };
  } else {
    if (!painted) {
      show($('edit-error'), 'Paint over the part to change first.');
      return;
    }
    // The mask is uploaded as an image of this account, then named by the instruction.
    const form = new FormData();
    form.append('file', await brushMask(), 'mask.png');
    let mask;
    try {
      mask = await api('/v1/assets', { method: 'POST', form });
    } catch (e) {
      show($('edit-error'), explain(e));
      return;
    }
    body = { plan: { version: 1, ops: [{ op: 'restyle', prompt, strength: 1 }] }, mask_id: mask.id };
  }
  // A seed makes a repaint repeatable; without one the server picks one.
  const seed = $('edit-seed').value.trim();
  if (seed !== '') body.seed = Number(seed);
  if (await instruct(body, 'Painting…')) {
    $('area-prompt').value = '';
    setMode(null);
  }
}
