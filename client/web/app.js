// The medrollup portal's page. It talks only to the portal that served it
// (which holds the keys); untrusted text is written with textContent only.
'use strict';

const $ = (id) => document.getElementById(id);

// The token comes in the address's fragment (never sent to a server); it is
// kept for this tab and taken out of the address bar.
const token = (() => {
  const m = /(?:^#|&)token=([0-9a-f]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem('medrollup-token', m[1]);
    history.replaceState(null, '', location.pathname);
  }
  return sessionStorage.getItem('medrollup-token') || '';
})();

let me = { role: null, max_body: 16 << 20 };
let busy = false; // one flow at a time

async function api(method, path, body) {
  const init = { method, headers: { 'x-medrollup-token': token } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
    const size = new Blob([init.body]).size;
    if (size > me.max_body) {
      const mib = (n) => (n / 1048576).toFixed(1);
      throw new Error(`this is ${mib(size)} MiB; the portal takes up to ${mib(me.max_body)} MiB at once`);
    }
  }
  let r;
  try {
    r = await fetch('/api' + path, init);
  } catch (e) {
    throw new Error('the portal does not answer (is `medrollup-client portal` still running?)');
  }
  const text = await r.text();
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`the portal answered ${r.status}: ${text.slice(0, 200)}`);
  }
  if (!r.ok) {
    const e = new Error(v.error || `the portal answered ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return v;
}

function showError(msg) {
  const e = $('error');
  e.textContent = msg;
  e.hidden = !msg;
}

function say(msg) {
  $('status').textContent = msg;
}

function setBusy(b) {
  busy = b;
  document.querySelectorAll('button').forEach((x) => (x.disabled = b));
}

// A flow waits for L1: leaving the page does not stop it, but say so.
window.addEventListener('beforeunload', (ev) => {
  if (busy) ev.preventDefault();
});

// Runs one flow: buttons off, a word while it runs, the outcome after; on a
// failure the page is brought up to date (the flow may have done part).
async function run(doing, flow) {
  if (busy) return false;
  setBusy(true);
  showError('');
  say(doing + '…');
  try {
    const done = await flow();
    say(done || '');
    return true;
  } catch (e) {
    say('');
    showError(e.message);
    await refresh().catch(() => {});
    return false;
  } finally {
    setBusy(false);
  }
}

// Refreshes what the page shows after a write went through: a refresh
// that fails is shown, without hiding that the write was done (done again,
// it would be a second record, a second grant).
async function refreshAfter(load) {
  try {
    await load();
  } catch (e) {
    showError(`Done, but the page could not be refreshed: ${e.message}`);
  }
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(label, onclick, cls) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.disabled = busy;
  if (cls) b.className = cls;
  b.addEventListener('click', onclick);
  return b;
}

function fill(body, empty, rows, render) {
  const tbody = $(body);
  tbody.replaceChildren();
  rows.forEach((x) => {
    const tr = document.createElement('tr');
    render(tr, x);
    tbody.appendChild(tr);
  });
  $(empty).hidden = rows.length > 0;
}

const when = (secs) => new Date(secs * 1000).toLocaleString();

async function loadRecords() {
  const rows = await api('GET', '/records');
  fill('records-body', 'records-empty', rows, (tr, r) => {
    tr.id = `record-${r.id}`;
    cell(tr, r.id);
    cell(tr, r.owner);
    cell(tr, r.author === 0 ? 'the patient' : r.author);
    cell(tr, r.deleted ? 'deleted' : r.version, r.deleted ? 'revoked' : '');
    const td = cell(tr, '');
    if (!r.deleted) {
      td.appendChild(button('Open', () => openRecord(r.id), 'secondary'));
      // Shared with us: the consent it is read under.
      if (r.consent !== null) td.appendChild(document.createTextNode(` (consent ${r.consent})`));
    } else if (r.owner === me.account) {
      // A delete cut short (the content store down) is finished from here.
      td.appendChild(
        button(
          'Finish deleting',
          () =>
            run(`Releasing record ${r.id}'s content`, async () => {
              try {
                await api('DELETE', `/records/${r.id}`);
              } catch (e) {
                // Gone already (410): the delete was whole.
                if (e.status !== 410) throw e;
              }
              return `Record ${r.id} is deleted and its content released.`;
            }),
          'secondary',
        ),
      );
    }
  });
}

async function loadConsents() {
  const rows = await api('GET', '/consents');
  fill('consents-body', 'consents-empty', rows, (tr, c) => {
    tr.id = `consent-${c.id}`;
    cell(tr, c.id);
    cell(tr, c.patient);
    cell(tr, c.grantee);
    cell(tr, c.write ? 'read and write' : 'read');
    cell(tr, c.record === null ? 'all' : `record ${c.record}`);
    cell(tr, when(c.expiry));
    const state = c.revoked ? 'revoked' : c.expired ? 'expired' : 'active';
    cell(tr, state, state);
    const td = cell(tr, '');
    // An expired consent is revoked too: its grantee's key stays in the
    // records' envelopes until they are re-keyed.
    if ((state === 'active' || state === 'expired') && c.patient === me.account) {
      if (state === 'active') {
        // A grant whose sharing was cut short is finished from here.
        td.appendChild(
          button(
            'Share again',
            () =>
              run(`Sharing what consent ${c.id} covers`, async () => {
                const v = await api('POST', `/consents/${c.id}/share`);
                return v.shared.length
                  ? `Consent ${c.id}: records shared now: ${v.shared.join(', ')}.`
                  : `Consent ${c.id}: every record it covers is shared already.`;
              }),
            'secondary',
          ),
        );
      }
      td.appendChild(
        button('Revoke', () =>
          run(`Revoking consent ${c.id} and re-keying the records it covered`, async () => {
            const v = await api('POST', `/consents/${c.id}/revoke`);
            $('viewer').hidden = true; // re-keyed: a new version
            await refreshAfter(loadAll);
            return `Consent ${c.id} revoked; records re-keyed: ${v.rekeyed.join(', ') || 'none'}.`;
          }),
        ),
      );
    } else if (state === 'revoked' && c.patient === me.account) {
      // A revoke cut short (the content store down) is finished from here.
      td.appendChild(
        button('Finish re-keying', () =>
          run(`Re-keying what consent ${c.id} covered`, async () => {
            const v = await api('POST', `/consents/${c.id}/revoke`);
            $('viewer').hidden = true;
            await refreshAfter(loadAll);
            return v.rekeyed.length
              ? `Consent ${c.id}: records re-keyed now: ${v.rekeyed.join(', ')}.`
              : `Consent ${c.id}: every record it covered was re-keyed already.`;
          }),
        ),
      );
    }
  });
}

async function loadAudit() {
  const rows = await api('GET', '/audit');
  fill('audit-body', 'audit-empty', rows, (tr, e) => {
    cell(tr, e.id);
    cell(tr, when(e.timestamp));
    cell(tr, e.actor, 'reader');
    cell(tr, e.record);
    cell(tr, e.patient);
    if (e.emergency) cell(tr, 'EMERGENCY', 'emergency');
    else cell(tr, `consent ${e.consent}`);
  });
}

async function loadAll() {
  await loadRecords();
  await loadConsents();
  await loadAudit();
}

let shown = null; // the record in the viewer

function showRecord(v) {
  shown = v;
  $('viewer').hidden = false;
  $('viewer').dataset.record = v.id;
  $('viewer-id').textContent = v.id;
  const how = v.emergency
    ? 'EMERGENCY access (logged and flagged for review)'
    : v.consent === null
      ? 'your own record'
      : `read under consent ${v.consent} (the read is logged)`;
  $('viewer-meta').textContent =
    `Patient ${v.owner}, version ${v.version}, ${how}. Stored as ${v.cid}.`;
  $('viewer-bundle').textContent =
    typeof v.bundle === 'string' ? v.bundle : JSON.stringify(v.bundle, null, 2);
  $('delete-btn').hidden = me.role !== 'patient' || v.owner !== me.account;
}

function openRecord(id) {
  return run(`Reading record ${id}`, async () => {
    showRecord(await api('GET', `/records/${id}`));
    await loadAudit();
    return `Record ${id} decrypted.`;
  });
}

let again = null; // a timer: the state is asked again while it is unsettled

function clearShown() {
  shown = null;
  $('viewer').hidden = true;
  $('viewer-bundle').textContent = '';
  ['records-body', 'consents-body', 'audit-body'].forEach((t) => $(t).replaceChildren());
}

// A new verifier announced on the rollup: it will decide which changes to
// the records are accepted, so everyone is told before it can be installed.
function showUpgrade(up) {
  $('upgrade').hidden = !up;
  if (!up) return;
  const when = new Date(up.activation * 1000).toLocaleString();
  $('upgrade').textContent =
    `The rollup's rules are announced to change: a new verifier (circuit key ${up.vk_sha256.slice(0, 16)}…, ` +
    `contract ${up.verifier}) can be installed from ${when}. It will decide which changes to everyone's ` +
    'records are accepted. If your hospital has not told you about it, ask it.';
}

async function refresh() {
  clearTimeout(again);
  const s = await api('GET', '/state');
  me = s;
  $('rollup').textContent = s.rollup;
  showUpgrade(s.verifier_upgrade);
  const open = s.keystore === 'open';
  $('create').hidden = s.keystore !== 'none';
  $('unlock').hidden = s.keystore !== 'locked';
  $('lock-btn').hidden = !open;
  $('join').hidden = !open || s.role !== null;
  document.querySelectorAll('section[data-role]').forEach((sec) => {
    const r = sec.dataset.role;
    sec.hidden = !open || s.role === null || (r !== 'any' && r !== s.role);
  });
  if (!open) clearShown();
  // Unsettled: a flow runs elsewhere, or L1 has not answered who we are.
  const unsettled = open && (s.busy || s.role_error !== null);
  if (unsettled) {
    $('join').hidden = true;
    again = setTimeout(() => refresh().catch((e) => showError(e.message)), 2000);
  }
  if (s.account_error) {
    // The account id is registered to other keys: nothing here is ours.
    $('join').hidden = true;
    document.querySelectorAll('section[data-role]').forEach((sec) => (sec.hidden = true));
    $('who').textContent = `Account ${s.account}: ${s.account_error}`;
    return;
  }
  const role = s.role
    ? `, ${s.role}`
    : s.busy
      ? ', busy with a flow (another tab?)'
      : s.role_error
        ? `, checking on L1: ${s.role_error}`
        : open
          ? ', not registered yet'
          : '';
  $('who').textContent = `Account ${s.account}${role}`;
  if (open && s.role !== null && !s.busy) await loadAll();
}

async function fileText(input) {
  const f = $(input).files[0];
  if (!f) throw new Error('choose a FHIR bundle file first');
  return f.text();
}

function onSubmit(form, handler) {
  $(form).addEventListener('submit', (ev) => {
    ev.preventDefault();
    handler();
  });
}

onSubmit('create-form', () =>
  run('Creating your keys (this takes a few seconds)', async () => {
    await api('POST', '/keys', { password: $('create-password').value, confirm: $('create-confirm').value });
    $('create-form').reset();
    await refreshAfter(refresh);
    return 'Your keys are created and unlocked.';
  }),
);

onSubmit('unlock-form', () =>
  run('Unlocking', async () => {
    await api('POST', '/unlock', { password: $('unlock-password').value });
    $('unlock-form').reset();
    await refresh();
    return 'Unlocked.';
  }),
);

$('lock-btn').addEventListener('click', () =>
  run('Locking', async () => {
    await api('POST', '/lock');
    await refresh();
    return 'Locked.';
  }),
);

$('register-btn').addEventListener('click', () => {
  const sure = confirm(
    `Register account ${me.account} as a patient? A role never changes: ` +
      'a doctor is registered by their hospital instead.',
  );
  if (!sure) return;
  run('Registering you as a patient', async () => {
    const v = await api('POST', '/register');
    await refreshAfter(refresh);
    return v.republished
      ? `You were registered already, as a ${v.role}; your public keys were published again.`
      : 'You are registered as a patient.';
  });
});

$('public-keys-link').addEventListener('click', (ev) => {
  ev.preventDefault();
  run('Fetching your public keys', async () => {
    const v = await api('GET', '/public-keys');
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([JSON.stringify(v, null, 2)], { type: 'application/json' }));
    a.download = 'medrollup-public-keys.json';
    a.click();
    return 'Public keys saved.';
  });
});

onSubmit('add-form', () =>
  run('Encrypting and adding the record', async () => {
    const bundle = await fileText('add-file');
    const v = await api('POST', '/records', { patient: $('add-patient').value, bundle });
    $('add-form').reset();
    await refreshAfter(loadRecords);
    return `Record ${v.record} added for patient ${v.patient}.`;
  }),
);

onSubmit('update-form', () =>
  run('Writing the new version', async () => {
    const id = $('viewer').dataset.record;
    const bundle = await fileText('update-file');
    // The version shown is the one edited: if the record has moved on since,
    // the update is refused rather than overwriting what came between.
    const v = await api('PUT', `/records/${id}`, { bundle, version: shown.version });
    $('update-form').reset();
    // Shown from what was sent: reading it back would log another access.
    let parsed = bundle;
    try {
      parsed = JSON.parse(bundle);
    } catch (e) {}
    showRecord({ ...shown, version: v.version ?? shown.version + 1, cid: v.cid, bundle: parsed });
    await refreshAfter(loadRecords);
    return `Record ${id} updated.`;
  }),
);

$('delete-btn').addEventListener('click', () => {
  const id = $('viewer').dataset.record;
  if (!confirm(`Delete record ${id}? Its content, the only place its keys are kept, is released from our nodes.`)) return;
  run(`Deleting record ${id}`, async () => {
    await api('DELETE', `/records/${id}`);
    $('viewer').hidden = true;
    await refreshAfter(loadRecords);
    return `Record ${id} deleted.`;
  });
});

onSubmit('grant-form', () =>
  run('Giving access', async () => {
    const v = await api('POST', '/consents', {
      grantee: $('grant-grantee').value,
      record: $('grant-record').value,
      days: $('grant-days').value,
      write: $('grant-write').checked,
    });
    $('grant-form').reset();
    $('viewer').hidden = true; // the covered records were re-keyed
    await refreshAfter(loadAll);
    return `Consent ${v.consent} given to account ${v.grantee}, until ${when(v.expiry)}.`;
  }),
);

onSubmit('emergency-form', () =>
  run('Logging the emergency access and reading', async () => {
    const id = $('emergency-record').value.trim();
    const v = await api('POST', `/records/${encodeURIComponent(id)}/emergency`, {
      reason: $('emergency-reason').value,
    });
    $('emergency-form').reset();
    showRecord(v);
    await loadAudit();
    return `Emergency access to record ${v.id} logged and flagged.`;
  }),
);

// Keys left unlocked and unused are locked by the portal: this notices it
// and clears what the page shows (its polls do not count as use).
setInterval(async () => {
  if (!me || me.keystore !== 'open') return;
  try {
    const s = await api('GET', '/state');
    if (s.keystore !== 'open') {
      await refresh();
      showError('Your keys were locked after a while without use: unlock them again.');
    }
  } catch (e) {}
}, 20000);

run('Loading', async () => {
  if (!token) throw new Error('open the address `medrollup-client portal` printed (it carries the token)');
  await refresh();
  return '';
});
