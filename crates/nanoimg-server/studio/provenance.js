// Provenance: what an image carries (its C2PA manifest and NanoImg's watermark), for an uploaded
// file on the Provenance screen or for any image in the gallery.
import { $, api, explain, fillList, h, show } from './api.js';

export function wire() {
  $('verify-file').addEventListener('change', async () => {
    const file = $('verify-file').files[0];
    show($('verify-error'), '');
    $('verify-result').replaceChildren();
    if (!file) return;
    try {
      render(await verify(file, file.name), $('verify-result'));
    } catch (e) {
      show($('verify-error'), explain(e));
    }
  });
}

export function reset() {
  $('verify-result').replaceChildren();
  $('verify-file').value = '';
}

/** `POST /v1/provenance/verify` with the file as it is (a re-encode would strip the manifest). */
async function verify(blob, name = 'image.png') {
  const form = new FormData();
  form.append('image', blob, name);
  return api('/v1/provenance/verify', { method: 'POST', form });
}

/** Checks `blob` and shows the report in `box`; `button` is off meanwhile. */
export async function checkInto(blob, box, button) {
  button.disabled = true;
  try {
    render(await verify(blob), box);
  } catch (e) {
    box.replaceChildren(h('p', { class: 'error' }, explain(e)));
  } finally {
    button.disabled = false;
  }
}

function render(r, box) {
  const m = r.c2pa;
  const w = r.watermark;
  const good = m.present && !m.tampered && m.valid;
  const verdict = h('p', { class: `verdict ${good ? 'ok' : m.tampered ? 'bad' : 'none'}` }, `This image carries ${r.summary}.`);
  const dl = h('dl', { class: 'params' });
  const actions = (m.actions || []).map((a) => [a.action, a.software_agent, a.digital_source_type]
    .filter(Boolean).join(' · ')).join('; ');
  fillList(dl, [
    ['C2PA', m.present ? (m.tampered ? 'changed after signing' : m.state || 'invalid') : 'none'],
    ['signed by', m.signer],
    ['issuer', m.issuer],
    ['signed at', m.signed_at],
    ['made with', m.claim_generator],
    ['actions', actions],
    ['ingredients', (m.ingredients || []).join(', ')],
    ['problems', (m.failures || []).map((f) => f.code || JSON.stringify(f)).join(', ')],
    ['watermark', w.present ? 'present' : 'not found'],
    ['watermark id', w.payload],
  ]);
  box.replaceChildren(verdict, dl);
}
