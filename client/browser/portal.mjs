// Drives the portal page in a real browser (Debian's Chromium through
// playwright-core): a patient and a doctor, each on their own portal, do
// everything from the page. The hospital registers the doctor with the CLI,
// from the public keys the doctor's page saved. Started by
// coordinator/tests/portal.rs, which sets up the farm and then checks on L1
// what the page did. Prints one JSON line: {"consent": N, "record": N}.
//
// Environment: PATIENT_URL, DOCTOR_URL (the portals' addresses with their
// tokens), PATIENT, DOCTOR (account ids), BUNDLE, BUNDLE_V2, NOT_FHIR
// (files), WORK (a
// folder for downloads and screenshots), MEDROLLUP_CLIENT_BIN, and the
// hospital's HOSPITAL, HOSPITAL_KEYSTORE, HOSPITAL_PASSWORD, COORDINATOR,
// L1_RPC, ROLLUP for its CLI; CHROMIUM (default /usr/bin/chromium);
// UPGRADE_VK: the key hash of a verifier proposed on the rollup, which the
// page must announce.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const PATIENT = Number(env('PATIENT'));
const DOCTOR = Number(env('DOCTOR'));
const WORK = env('WORK');
const FLOW_MS = 240_000; // a flow waits for its batch to be proven and on L1

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic',
  ],
});
const pages = [];
let stepName = 'start';

function step(name) {
  stepName = name;
  console.error(`-- ${name}`);
}

// Waits until `selector`'s text contains `text`; fails at once with the
// page's error if one is shown instead.
async function expectText(page, selector, text, timeout = FLOW_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const got = (await page.locator(selector).first().textContent()) ?? '';
    if (got.includes(text)) return got;
    const err = page.locator('#error');
    if (selector !== '#error' && (await err.isVisible())) {
      throw new Error(`expected ${JSON.stringify(text)} in ${selector}; the page says: ${await err.textContent()}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`expected ${JSON.stringify(text)} in ${selector} within ${timeout} ms; it says ${JSON.stringify(got)}`);
    }
    await page.waitForTimeout(200);
  }
}

// Some cell matching `selector` says exactly `text`.
async function expectCell(page, selector, text, timeout = FLOW_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const cells = await page.locator(selector).allTextContents();
    if (cells.some((c) => c.trim() === text)) return;
    if (Date.now() > deadline) {
      throw new Error(`no ${selector} says ${JSON.stringify(text)} within ${timeout} ms: ${JSON.stringify(cells)}`);
    }
    await page.waitForTimeout(200);
  }
}

// The page shows `text` as an error (and nothing else happened).
async function expectError(page, text) {
  const got = await expectText(page, '#error', text);
  if (!(await page.locator('#error').isVisible())) throw new Error(`the error ${JSON.stringify(got)} is hidden`);
}

async function open(url) {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);
  pages.push(page);
  return page;
}

async function createKeys(page, password) {
  await page.locator('#create').waitFor();
  await page.fill('#create-password', password);
  await page.fill('#create-confirm', password + 'x');
  await page.click('#create-form button');
  await expectError(page, 'the two passwords differ');
  await page.fill('#create-password', password);
  await page.fill('#create-confirm', password);
  await page.click('#create-form button');
  await expectText(page, '#status', 'Your keys are created and unlocked.');
  await page.locator('#join').waitFor();
}

try {
  step('the patient creates keys and registers');
  const patient = await open(env('PATIENT_URL'));
  // The token left the address bar.
  if (patient.url().includes('token')) throw new Error(`the token stayed in the address: ${patient.url()}`);
  if (process.env.UPGRADE_VK) {
    // Shown to everyone, keys or not: the rules of the rollup are to change.
    await expectText(patient, '#upgrade', `circuit key ${process.env.UPGRADE_VK.slice(0, 16)}`);
    await expectText(patient, '#upgrade', 'can be installed from');
  }
  await createKeys(patient, 'patient password 1');
  await expectText(patient, '#who', 'not registered yet');
  patient.once('dialog', (d) => d.accept()); // a role never changes: the page asks first
  await patient.click('#register-btn');
  await expectText(patient, '#status', 'You are registered as a patient.');
  await expectText(patient, '#who', `Account ${PATIENT}, patient`);
  await patient.locator('#grant').waitFor();

  step('the doctor creates keys; the hospital registers them from the saved public keys');
  const doctor = await open(env('DOCTOR_URL'));
  await createKeys(doctor, 'doctor password 1');
  const download = doctor.waitForEvent('download');
  await doctor.click('#public-keys-link');
  const publicKeys = path.join(WORK, 'doctor-public-keys.json');
  await (await download).saveAs(publicKeys);
  execFileSync(env('MEDROLLUP_CLIENT_BIN'), [
    'register-doctor', '--keystore', env('HOSPITAL_KEYSTORE'), '--account', env('HOSPITAL'),
    '--coordinator', env('COORDINATOR'), '--l1-rpc', env('L1_RPC'), '--rollup', env('ROLLUP'),
    '--doctor', String(DOCTOR), '--public', publicKeys,
  ], { env: { ...process.env, MEDROLLUP_PASSWORD: env('HOSPITAL_PASSWORD') }, stdio: ['ignore', 2, 2] });
  await doctor.reload();
  await expectText(doctor, '#who', `Account ${DOCTOR}, doctor`);
  await doctor.locator('#add').waitFor();

  step('without consent, the doctor cannot add a record');
  await doctor.fill('#add-patient', String(PATIENT));
  await doctor.setInputFiles('#add-file', env('BUNDLE'));
  await doctor.click('#add-form button');
  await expectError(doctor, 'holds no read-write consent');

  step('the patient gives the doctor access (a typo first)');
  await patient.fill('#grant-grantee', 'dr. house');
  await patient.check('#grant-write');
  await patient.click('#grant-form button');
  await expectError(patient, 'grantee: "dr. house" is not a number');
  await patient.fill('#grant-grantee', '999999');
  await patient.click('#grant-form button');
  await expectError(patient, 'account 999999 is not registered');
  await patient.fill('#grant-grantee', String(DOCTOR));
  await patient.click('#grant-form button');
  const granted = await expectText(patient, '#status', `given to account ${DOCTOR}`);
  const consent = Number(/Consent (\d+) given/.exec(granted)[1]);
  await expectText(patient, `#consent-${consent}`, 'active');
  await expectText(patient, `#consent-${consent}`, 'read and write');

  step('the doctor adds a record (a file that is not FHIR first)');
  await doctor.fill('#add-patient', String(PATIENT));
  await doctor.setInputFiles('#add-file', env('NOT_FHIR'));
  await doctor.click('#add-form button');
  await expectError(doctor, 'not a FHIR R4 record bundle: resourceType is "Patient"');
  await doctor.fill('#add-patient', String(PATIENT));
  await doctor.setInputFiles('#add-file', env('BUNDLE'));
  await doctor.click('#add-form button');
  const added = await expectText(doctor, '#status', `added for patient ${PATIENT}`);
  const record = Number(/Record (\d+) added/.exec(added)[1]);

  step('the doctor reads it (the read is logged)');
  await doctor.click(`#record-${record} button`);
  await expectText(doctor, '#status', `Record ${record} decrypted.`);
  await expectText(doctor, '#viewer-meta', `read under consent ${consent}`);
  await expectText(doctor, '#viewer-bundle', 'Portal Test Patient');

  step('the doctor writes a new version');
  await doctor.setInputFiles('#update-file', env('BUNDLE_V2'));
  await doctor.click('#update-form button');
  await expectText(doctor, '#status', `Record ${record} updated.`);
  await expectText(doctor, '#viewer-meta', 'version 2');
  await expectText(doctor, '#viewer-bundle', 'Second Version');

  step('the patient sees the record and who read it');
  await patient.reload();
  await expectText(patient, `#record-${record}`, String(DOCTOR));
  await patient.click(`#record-${record} button`);
  await expectText(patient, '#viewer-meta', 'your own record');
  await expectText(patient, '#viewer-bundle', 'Second Version');
  await expectText(patient, '#audit-body', `consent ${consent}`);
  await expectCell(patient, '#audit-body td.reader', String(DOCTOR));

  step("the patient writes a version; the doctor's edit of the one before is refused, not written over it");
  await patient.setInputFiles('#update-file', env('BUNDLE_V2'));
  await patient.click('#update-form button');
  await expectText(patient, '#status', `Record ${record} updated.`);
  await expectText(patient, '#viewer-meta', 'version 3');
  await doctor.setInputFiles('#update-file', env('BUNDLE'));
  await doctor.click('#update-form button');
  await expectError(doctor, `record ${record} changed after it was read at version 2`);

  step('a record that is not there is a 404 that says so');
  const missing = record > 1 ? record - 1 : record + 1; // the test adds one record only
  const got = await patient.evaluate(async (id) => {
    const headers = { 'x-medrollup-token': sessionStorage.getItem('medrollup-token') };
    const r = await fetch(`/api/records/${id}`, { headers });
    return [r.status, (await r.json()).error];
  }, missing);
  if (got[0] !== 404 || got[1] !== `record ${missing} does not exist`) {
    throw new Error(`a missing record answered ${JSON.stringify(got)}`);
  }

  step('another site cannot use the portal (no CORS, the token is not readable)');
  const stranger = await (await browser.newContext()).newPage();
  const base = new URL(env('PATIENT_URL')).origin;
  const answer = await stranger.evaluate(async ([url, token]) => {
    try {
      const r = await fetch(url + '/api/state', { headers: { 'x-medrollup-token': token } });
      return `answered ${r.status}`;
    } catch (e) {
      return 'blocked';
    }
  }, [base, new URL(env('PATIENT_URL')).hash.slice('#token='.length)]);
  if (answer !== 'blocked') throw new Error(`a page elsewhere got an answer: ${answer}`);
  await stranger.context().close();

  step('the doctor breaks the glass while the consent holds: logged and flagged');
  await doctor.fill('#emergency-record', String(record));
  await doctor.fill('#emergency-reason', 'allergy check before surgery');
  await doctor.click('#emergency-form button');
  await expectText(doctor, '#status', `Emergency access to record ${record} logged and flagged.`);
  await expectText(doctor, '#viewer-meta', 'EMERGENCY access');
  await expectText(doctor, '#viewer-bundle', 'Second Version');

  step('the patient shares again (finishing a grant): nothing was left to share');
  await patient.click(`#consent-${consent} button:has-text("Share again")`);
  await expectText(patient, '#status', `Consent ${consent}: every record it covers is shared already.`);

  step('the patient revokes the consent (the record is re-keyed)');
  await patient.click(`#consent-${consent} button:has-text("Revoke")`);
  await expectText(patient, '#status', `Consent ${consent} revoked; records re-keyed: ${record}.`);
  await expectText(patient, `#consent-${consent}`, 'revoked');
  await patient.click(`#consent-${consent} button:has-text("Finish re-keying")`); // a revoke that was whole: nothing left
  await expectText(patient, '#status', `Consent ${consent}: every record it covered was re-keyed already.`);

  step('the doctor is refused now');
  await doctor.reload();
  await doctor.click(`#record-${record} button`);
  await expectError(doctor, `holds no active consent to read record ${record}`);

  step('the doctor breaks the glass: logged, but the re-keyed record stays shut');
  await doctor.fill('#emergency-record', String(record));
  await doctor.fill('#emergency-reason', 'unconscious in the emergency room');
  await doctor.click('#emergency-form button');
  await expectError(doctor, 'this record is not shared with the key');
  await doctor.screenshot({ path: path.join(WORK, 'doctor.png'), fullPage: true });

  step('the patient sees the emergency access, locks and unlocks the page');
  await patient.reload();
  await expectText(patient, '#audit-body', 'EMERGENCY');
  await patient.click('#lock-btn');
  await expectText(patient, '#status', 'Locked.');
  await patient.locator('#unlock').waitFor();
  if (await patient.locator('#records').isVisible()) throw new Error('records shown while locked');
  await patient.fill('#unlock-password', 'not the password');
  await patient.click('#unlock-form button');
  await expectError(patient, 'wrong password');
  await patient.fill('#unlock-password', 'patient password 1');
  await patient.click('#unlock-form button');
  await expectText(patient, '#status', 'Unlocked.');
  await expectText(patient, `#record-${record}`, String(DOCTOR));

  step('the patient deletes the record');
  patient.once('dialog', (d) => d.accept());
  await patient.click(`#record-${record} button`);
  await expectText(patient, '#status', `Record ${record} decrypted.`);
  await patient.click('#delete-btn');
  await expectText(patient, '#status', `Record ${record} deleted.`);
  await expectText(patient, `#record-${record}`, 'deleted');
  await patient.click(`#record-${record} button:has-text("Finish deleting")`); // a delete that was whole
  await expectText(patient, '#status', `Record ${record} is deleted and its content released.`);
  await patient.screenshot({ path: path.join(WORK, 'patient.png'), fullPage: true });

  console.log(JSON.stringify({ consent, record }));
} catch (e) {
  for (const [i, p] of pages.entries()) {
    await p.screenshot({ path: path.join(WORK, `failed-${i}.png`), fullPage: true }).catch(() => {});
  }
  console.error(`FAILED at "${stepName}": ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
