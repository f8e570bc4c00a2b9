// The Characters screen: create one from reference images (with the consent attestation), list
// them, use one in a generation, delete one.
import { $, api, emit, explain, h, imageUrl, show } from './api.js';

export function wire() {
  $('character-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    show($('character-error'), '');
    const files = [...$('character-refs').files];
    if (files.length === 0 || files.length > 8) {
      show($('character-error'), 'Choose 1 to 8 reference images.');
      return;
    }
    const form = new FormData();
    form.append('name', $('character-name').value.trim());
    form.append('description', $('character-description').value.trim());
    form.append('consent', $('character-consent').checked ? 'true' : 'false');
    for (const f of files) form.append('reference', f, f.name);
    $('character-create').disabled = true;
    try {
      await api('/v1/characters', { method: 'POST', form });
      $('character-form').reset();
      await open();
      emit('characters-changed');
    } catch (e) {
      show($('character-error'), explain(e));
      if (e.param === 'consent') $('character-consent').focus();
    } finally {
      $('character-create').disabled = false;
    }
  });
}

export function reset() {
  $('characters-list').replaceChildren();
  $('character-form').reset();
}

export async function open() {
  const list = await api('/v1/characters');
  const box = $('characters-list');
  box.replaceChildren();
  $('characters-empty').hidden = list.data.length > 0;
  for (const c of list.data) box.append(card(c));
}

function card(c) {
  const pic = h('img', { alt: `${c.name}'s first reference image` });
  const first = c.references[0];
  if (first) imageUrl(first.image_id).then((x) => { pic.src = x.url; }).catch(() => {});
  const n = c.references.length;
  const del = h('button', {
    type: 'button', class: 'quiet',
    onclick: async () => {
      if (!window.confirm(`Delete ${c.name}, its ${n} reference image${n === 1 ? '' : 's'} and any LoRA? This cannot be undone.`)) return;
      try {
        await api(`/v1/characters/${encodeURIComponent(c.id)}`, { method: 'DELETE' });
        await open();
        emit('characters-changed');
      } catch (e) {
        show($('character-error'), explain(e));
      }
    },
  }, 'Delete');
  return h('figure', { class: 'shot', 'data-id': c.id }, pic,
    h('figcaption', {},
      h('p', { class: 'prompt' }, c.name),
      c.description ? h('p', { class: 'hint' }, c.description) : null,
      h('p', { class: 'hint' }, `${n} reference${n === 1 ? '' : 's'}${c.lora ? ' · LoRA' : ''} · consent ${c.references.every((r) => r.consent) ? 'recorded' : 'not given'}`),
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: () => emit('use-character', c.id) }, 'Use in a generation'),
        del)));
}
