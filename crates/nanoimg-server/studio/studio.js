// NanoImg Studio: a page over the HTTP API, served from the binary. This module signs in and
// out and switches screens; each screen is a module of its own.
import { $, KEY, api, can, explain, forgetImages, on, session, show } from './api.js';
import * as generate from './generate.js';
import * as edit from './edit.js';
import * as characters from './characters.js';
import * as provenance from './provenance.js';
import * as account from './account.js';

/** Each screen: whether this key may see it, and what to do when it opens. */
const SCREENS = {
  generate: { allowed: () => true, open: generate.open },
  edit: { allowed: () => can('images:edit'), open: edit.open },
  characters: { allowed: () => can('characters'), open: characters.open },
  provenance: { allowed: () => true, open: () => {} },
  account: { allowed: () => true, open: account.open },
  admin: { allowed: () => can('admin'), open: account.openAdmin },
};

function openTab(name) {
  if (!SCREENS[name] || !SCREENS[name].allowed()) return;
  for (const b of document.querySelectorAll('#tabs button')) {
    if (b.dataset.tab === name) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  for (const key of Object.keys(SCREENS)) $(`view-${key}`).hidden = key !== name;
  Promise.resolve(SCREENS[name].open()).catch(() => {});
}

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    enterStudio(await api('/v1/me'));
  } catch (e) {
    sessionStorage.removeItem(KEY);
    throw e;
  }
}

/** Forgets the key and everything fetched with it; `note` says why, on the sign-in screen. */
function signOut(note = '') {
  sessionStorage.removeItem(KEY);
  session.me = null;
  forgetImages();
  for (const key of Object.keys(SCREENS)) $(`view-${key}`).hidden = true;
  $('tabs').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  for (const screen of [generate, edit, characters, provenance, account]) screen.reset();
  show($('signed-out-note'), note);
  $('key').value = '';
  $('key').focus();
}

function enterStudio(me) {
  session.me = me;
  show($('signed-out-note'), '');
  $('signin').hidden = true;
  $('tabs').hidden = false;
  $('who').hidden = false;
  for (const b of document.querySelectorAll('#tabs button')) b.hidden = !SCREENS[b.dataset.tab].allowed();
  $('tenant-name').textContent = me.tenant ? `Signed in to ${me.tenant.name}` : 'Signed in';
  generate.enter(me);
  openTab('generate');
  $('prompt').focus();
}

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
  $('sign-out').addEventListener('click', () => signOut());
  for (const b of document.querySelectorAll('#tabs button')) {
    b.addEventListener('click', () => openTab(b.dataset.tab));
  }
  on('open-tab', openTab);
  on('signed-out', signOut);
  on('unauthorized', () => {
    if (session.me) signOut('This key stopped working (revoked, expired or erased). Sign in with another key.');
  });
  generate.wire();
  edit.wire();
  characters.wire();
  provenance.wire();
  account.wire();
  if (sessionStorage.getItem(KEY)) {
    api('/v1/me').then(enterStudio).catch(() => signOut());
  } else {
    $('key').focus();
  }
});
