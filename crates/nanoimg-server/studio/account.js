// The Account screen (usage against limits, this tenant's keys, export and erasure) and the
// Admin screen (tenants, the audit log and its verification).
import { $, api, bytes, can, emit, explain, fillList, h, session, show, when } from './api.js';

/** Scopes a new key does not get unless asked for (as on the server). */
const NOT_DEFAULT = ['account', 'admin'];

export function wire() {
  $('usage-refresh').addEventListener('click', () => usage().catch(fail('account-error')));
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    createKey();
  });
  $('new-key-copy').addEventListener('click', async () => {
    $('new-key-value').select();
    try {
      await navigator.clipboard.writeText($('new-key-value').value);
      $('new-key-copy').textContent = 'Copied';
    } catch (_) {
      $('new-key-copy').textContent = 'Selected: press Ctrl+C';
    }
  });
  $('export').addEventListener('click', exportData);
  $('erase').addEventListener('click', erase);
  $('audit-verify').addEventListener('click', verifyAudit);
  $('audit-refresh').addEventListener('click', () => openAdmin());
  $('audit-tenant').addEventListener('change', () => loadAudit(false).catch(fail('admin-error')));
  $('audit-older').addEventListener('click', () => loadAudit(true).catch(fail('admin-error')));
}

const fail = (id) => (e) => show($(id), explain(e));

/** Forgets what the account and admin screens showed (on sign-out): a new key above all. */
export function reset() {
  $('new-key-value').value = '';
  $('new-key').hidden = true;
  $('erase-confirm').value = '';
  $('audit-verdict').hidden = true;
  $('audit-tenant').replaceChildren(h('option', { value: '' }, 'All tenants'));
  audit.before = null;
  tenantNames = new Map();
  for (const id of ['usage', 'key-scopes']) $(id).replaceChildren();
  for (const id of ['keys-table', 'tenants-table', 'audit-table']) $(id).querySelector('tbody').replaceChildren();
}

export async function open() {
  show($('account-error'), '');
  $('new-key').hidden = true;
  const allowed = can('account');
  $('keys-denied').hidden = allowed;
  $('keys-box').hidden = !allowed;
  $('erase-box').hidden = !allowed || session.me.tenant.is_admin;
  $('export').hidden = !can('assets:read');
  const boxes = $('key-scopes');
  boxes.replaceChildren();
  // Only scopes this key has can be given to a new one.
  for (const s of session.me.key.scopes.filter(can)) {
    const id = `scope-${s.replace(':', '-')}`;
    boxes.append(h('label', { class: 'inline', for: id },
      h('input', { type: 'checkbox', id, value: s, checked: !NOT_DEFAULT.includes(s) }), ` ${s}`));
  }
  await Promise.all([usage().catch(fail('account-error')), allowed ? keys().catch(fail('keys-error')) : null]);
}

async function usage() {
  const u = await api('/v1/me/usage');
  const left = (b) => `${b.remaining} of ${b.limit} left this minute`;
  fillList($('usage'), [
    ['account', session.me.tenant.name],
    ['this key', `${session.me.key.name} (${session.me.key.prefix}…)`],
    ['its scopes', session.me.key.scopes.join(', ')],
    ['requests', left(u.requests_per_minute)],
    ['images', left(u.images_per_minute)],
    ['jobs running', `${u.concurrent_jobs.active} of ${u.concurrent_jobs.limit} at once`],
    ['stored images', `${u.stored.images} (${bytes(u.stored.image_bytes)})`],
    ['jobs', u.stored.jobs],
    ['characters', u.stored.characters],
    ['edit sessions', u.stored.edit_sessions],
    ['kept for', u.retention_days ? `${u.retention_days} days` : 'until deleted'],
  ]);
}

function status(k) {
  if (k.revoked_at) return 'revoked';
  if (k.expires_at && k.expires_at <= Date.now()) return 'expired';
  return k.expires_at ? `active until ${new Date(k.expires_at).toLocaleDateString()}` : 'active';
}

async function keys() {
  const list = await api('/v1/me/keys');
  const body = $('keys-table').querySelector('tbody');
  body.replaceChildren();
  for (const k of list.data) {
    const mine = k.id === session.me.key.id;
    const st = status(k);
    const revoke = st.startsWith('active')
      ? h('button', {
        type: 'button', class: 'quiet', 'aria-label': `Revoke ${k.name} (${k.prefix})`,
        onclick: () => revokeKey(k, mine),
      }, 'Revoke')
      : null;
    body.append(h('tr', { 'data-id': k.id },
      h('td', {}, k.name, mine ? h('small', {}, ' (this key)') : null),
      h('td', {}, h('code', {}, `${k.prefix}…`)),
      h('td', {}, k.scopes.join(', ')),
      h('td', {}, when(k.created_at)),
      h('td', {}, when(k.last_used_at)),
      h('td', { class: 'status' }, st),
      h('td', {}, revoke)));
  }
}

async function createKey() {
  show($('keys-error'), '');
  const scopes = [...$('key-scopes').querySelectorAll('input:checked')].map((i) => i.value);
  if (scopes.length === 0) {
    show($('keys-error'), 'Choose at least one scope.');
    return;
  }
  const body = { name: $('key-name').value.trim(), scopes };
  if ($('key-expiry').value) body.expires_in = Number($('key-expiry').value);
  try {
    const k = await api('/v1/me/keys', { method: 'POST', json: body });
    $('new-key-value').value = k.key;
    $('new-key-copy').textContent = 'Copy';
    $('new-key').hidden = false;
    $('key-name').value = '';
    await keys();
    $('new-key-value').focus();
    $('new-key-value').select();
  } catch (e) {
    show($('keys-error'), explain(e));
  }
}

async function revokeKey(k, mine) {
  const warn = mine ? ' This is the key you are signed in with: you will be signed out.' : '';
  if (!window.confirm(`Revoke ${k.name} (${k.prefix}…)? Apps using it stop working at once.${warn}`)) return;
  try {
    await api(`/v1/me/keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' });
    if (mine) {
      emit('signed-out', 'You revoked the key you were signed in with.');
      return;
    }
    await keys();
  } catch (e) {
    show($('keys-error'), explain(e));
  }
}

async function exportData() {
  $('export').disabled = true;
  $('export-status').textContent = 'Preparing the export…';
  try {
    const res = await api('/v1/me/export', { raw: true });
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: `nanoimg-export-${session.me.tenant.name}.zip` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    $('export-status').textContent = 'Downloaded.';
  } catch (e) {
    $('export-status').textContent = '';
    show($('account-error'), explain(e));
  } finally {
    $('export').disabled = false;
  }
}

async function erase() {
  show($('account-error'), '');
  const name = session.me.tenant.name;
  if ($('erase-confirm').value !== name) {
    show($('account-error'), `Type the account's name, ${name}, exactly to confirm. Nothing was erased.`);
    $('erase-confirm').focus();
    return;
  }
  try {
    await api('/v1/me', { method: 'DELETE', json: { confirm: $('erase-confirm').value } });
    emit('signed-out', `The account ${name} and all its data were erased.`);
  } catch (e) {
    show($('account-error'), explain(e));
  }
}

// ---- admin ----

/** Audit events per page, newest first; `before` is the oldest `seq` shown. */
const AUDIT_PAGE = 50;
const audit = { before: null, shown: 0 };
let tenantNames = new Map();

export async function openAdmin() {
  show($('admin-error'), '');
  try {
    const tenants = await api('/v1/admin/tenants');
    tenantNames = new Map(tenants.data.map((t) => [t.id, t.name]));
    const tb = $('tenants-table').querySelector('tbody');
    tb.replaceChildren();
    for (const t of tenants.data) {
      const l = t.limits;
      const limits = [['req/min', l.requests_per_minute], ['img/min', l.images_per_minute], ['jobs', l.concurrent_jobs]]
        .filter(([, v]) => v != null).map(([k, v]) => `${k} ${v}`).join(', ') || 'server defaults';
      tb.append(h('tr', {},
        h('td', {}, t.name, t.is_admin ? h('small', {}, ' (operator)') : null),
        h('td', {}, h('code', {}, t.id)),
        h('td', {}, when(t.created_at)),
        h('td', {}, limits),
        h('td', {}, t.retention_days ? `${t.retention_days} days` : 'kept')));
    }
    // The filter keeps its choice while that tenant exists.
    const pick = $('audit-tenant');
    const chosen = tenantNames.has(pick.value) ? pick.value : '';
    pick.replaceChildren(h('option', { value: '' }, 'All tenants'),
      ...tenants.data.map((t) => h('option', { value: t.id }, t.name)));
    pick.value = chosen;
    await loadAudit(false);
  } catch (e) {
    show($('admin-error'), explain(e));
  }
}

/** The newest page of the log (of the chosen tenant), or with `older` the page before it. */
async function loadAudit(older) {
  const q = new URLSearchParams({ order: 'desc', limit: String(AUDIT_PAGE) });
  const tenant = $('audit-tenant').value;
  if (tenant) q.set('tenant', tenant);
  if (older && audit.before != null) q.set('before', String(audit.before));
  const page = await api(`/v1/admin/audit?${q}`);
  const ab = $('audit-table').querySelector('tbody');
  if (!older) {
    ab.replaceChildren();
    audit.shown = 0;
  }
  for (const e of page.data) {
    ab.append(h('tr', { class: e.outcome === 'success' ? '' : 'flag' },
      h('td', {}, String(e.seq)),
      h('td', {}, when(e.at)),
      h('td', {}, tenantNames.get(e.tenant_id) || e.tenant_id || '—'),
      h('td', {}, e.action),
      h('td', {}, e.target || ''),
      h('td', {}, e.outcome)));
  }
  audit.shown += page.data.length;
  if (page.data.length) audit.before = page.data[page.data.length - 1].seq;
  const end = page.data.length < AUDIT_PAGE;
  $('audit-older').disabled = end;
  const whose = tenant ? ` of ${tenantNames.get(tenant) || tenant}` : '';
  $('audit-shown').textContent = `${audit.shown} events${whose}, newest first${end ? ': the whole log' : ''}`;
}

async function verifyAudit() {
  const out = $('audit-verdict');
  out.hidden = false;
  out.className = 'verdict';
  out.textContent = 'Verifying…';
  try {
    const v = await api('/v1/admin/audit/verify');
    const r = v.report;
    if (v.ok) {
      out.classList.add('ok');
      out.textContent = `The chain verifies: ${r.events} events, ${r.checkpoints_verified} signed checkpoints match` +
        `${r.redacted ? `, ${r.redacted} erased events still in place` : ''}.`;
    } else {
      out.classList.add('bad');
      const b = r.first_break || {};
      out.textContent = `The chain does NOT verify: first problem at event ${b.seq ?? '?'}: ${b.message || 'unknown'}`;
    }
  } catch (e) {
    out.textContent = '';
    out.hidden = true;
    show($('admin-error'), explain(e));
  }
}
