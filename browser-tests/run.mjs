// The browser suite of issue 13 §5: a real relay, real `sotto app` services
// (one per user, each with its own profile) and Debian's chromium, driven
// through the accessible names the app promises (tasks/contract13.md).
//
//   browser-tests/run.sh                  # what scripts/test.sh runs
//   browser-tests/run.sh --screenshots    # also refresh docs/screenshots/*.png
//
// The scenarios share one relay and three people, Alice, Bob and Carol, and
// run in order: each builds on what the ones before it did (Alice and Bob
// must be contacts before they can chat). A scenario whose prerequisite
// failed is skipped, saying which; the prerequisite's failure fails the run.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { PASSPHRASE, Relay, TMP, User, readTail } from './lib/procs.mjs';
import {
  SHOTS,
  STEP_MS,
  axe,
  describeViolations,
  expectText,
  findings,
  launch,
  openAs,
  reloadUntil,
  screenshot,
  waitUntil,
} from './lib/browser.mjs';

// Names and texts that must never reach a URL or a page title.
const ALICE = 'Alice Marsh';
const BOB = 'Bob Okafor';
const CAROL = 'Carol Nguyen';
const GROUP = 'Staff network';
const SUBJECT = 'Sir John Smith MP';
const HELLO = 'Are you free for a coffee at three?';
const REPLY = 'Yes, the usual café? I will bring the notes from Tuesday.';
const HOSTILE = '<img src=x onerror=alert(1)><script>alert(2)</script> yes, see you then';
const WHAT_HAPPENED = 'He kept us late after the votes and made remarks about my clothes.';
const NOTE = 'Meeting in his office at 18:00, door closed, remarks about my clothes.';
const SECRETS = [ALICE, BOB, CAROL, GROUP, SUBJECT, HELLO, REPLY, 'see you then', WHAT_HAPPENED, NOTE];

let relay;
let browser;
const people = {};
const passed = new Set();

/** A scenario that runs only when the ones it `needs` passed; on failure it saves screenshots and the app logs. */
function scenario(name, needs, fn) {
  test(name, { timeout: 120_000 }, async (t) => {
    const missing = needs.filter((n) => !passed.has(n));
    if (missing.length > 0) {
      t.skip(`needs "${missing.join('", "')}", which did not pass`);
      return;
    }
    try {
      await fn(t);
    } catch (e) {
      const saved = [];
      for (const p of Object.values(people)) {
        if (!p.page || p.page.isClosed()) continue;
        const file = path.join(SHOTS, `failed-${slug(name)}-${slug(p.user.name)}.png`);
        await p.page.screenshot({ path: file }).then(() => saved.push(file)).catch(() => {});
      }
      const logs = Object.values(people)
        .map((p) => `--- ${p.user.name}'s app log ---\n${readTail(p.user.log, 2000)}`)
        .join('\n');
      const extra = `\n(screenshots: ${saved.join(', ') || 'none'})\n${logs}`;
      // node prints `stack`, which was fixed when the error was made.
      e.message += extra;
      if (typeof e.stack === 'string') e.stack += extra;
      throw e;
    }
    passed.add(name);
  });
}

const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

/** A user with their app's browser page. */
async function person(key, name) {
  const user = new User(name);
  people[key] = { user };
  return people[key];
}

async function openPage(p) {
  if (p.context) await p.context.close();
  const s = await openAs(browser, p.user, () => SECRETS);
  p.context = s.context;
  p.page = s.page;
  await p.page.goto(p.user.url);
  // The launch token is exchanged for a cookie and removed from the address bar.
  await waitUntil('the launch token to leave the address bar', () => !p.page.url().includes('token='), {
    lastSeen: () => p.page.url(),
  });
  return p.page;
}

/** Clicks a link of the app's main navigation. */
async function go(page, name) {
  await page.getByRole('link', { name, exact: true }).first().click();
  await page.waitForLoadState('load');
}

const main = (page) => page.locator('main');

/** Starts a scenario on the app's first screen, whatever the last one left open. */
async function fresh(...ps) {
  for (const p of ps) await p.page.goto(`${p.user.origin}/`);
}

/** Stops a user's app after leaving its pages, so the cut event stream is not logged as an error. */
async function stopApp(p) {
  if (p.page && !p.page.isClosed()) await p.page.goto('about:blank');
  return p.user.stopApp();
}

/** A contact's link: in the contact list (a nav labelled "Contacts"), else anywhere on the page. */
function contactLink(page, name) {
  return page.getByRole('navigation', { name: 'Contacts', exact: true }).getByRole('link', { name, exact: true })
    .or(main(page).getByRole('link', { name, exact: true })).first();
}

/** Opens the conversation with `name` from the chat list. */
async function openChat(page, name) {
  await go(page, 'Chats');
  await page.getByRole('navigation', { name: 'Chats' }).getByRole('link', { name: new RegExp(`^${name}`) }).first().click();
  await page.getByRole('list', { name: 'Messages' }).waitFor();
}

/** Types and sends a message in the open conversation; waits for its "Sent" status. */
async function send(page, text) {
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  const item = page.getByRole('list', { name: 'Messages' }).getByRole('listitem').filter({ hasText: text.slice(-20) }).last();
  await expectText(item, 'Sent', `the message ${JSON.stringify(text)} to be sent`);
}

/** Marks the page so a later check can tell it was updated live, not reloaded. */
const markNoReload = (page) => page.evaluate(() => {
  window.__sottoNoReload = true;
});
async function assertNotReloaded(page, what) {
  const still = await page.evaluate(() => window.__sottoNoReload === true);
  assert.ok(still, `${what} should have arrived live, but the page was reloaded`);
}

/** A row of a table as {column header: cell text}. */
function boardRow(row) {
  return row.evaluate((tr) => {
    const heads = [...tr.closest('table').querySelectorAll('thead th')].map((th) => th.textContent.trim());
    const cells = [...tr.children].map((c) => c.innerText.trim());
    return Object.fromEntries(heads.map((h, i) => [h, cells[i]]));
  });
}

/** The number shown beside a label such as "First-hand" (in a dl, a table, or "First-hand: 2"). */
async function countFor(page, label) {
  return main(page).evaluate((root, label) => {
    const own = (el) => [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
    for (const el of root.querySelectorAll('*')) {
      const text = (el.textContent ?? '').trim();
      if (!text.startsWith(label)) continue;
      if (el.children.length === 0 || own(el).startsWith(label)) {
        const inline = text.slice(label.length).match(/^\s*:?\s*(\d+)/);
        if (inline) return Number(inline[1]);
        const next = el.nextElementSibling?.textContent?.trim().match(/^(\d+)/);
        if (next) return Number(next[1]);
        const labelled = el.id && root.querySelector(`[aria-labelledby="${el.id}"]`)?.textContent?.trim().match(/^(\d+)/);
        if (labelled) return Number(labelled[1]);
      }
    }
    const aria = root.querySelector(`[aria-label^="${label}"]`);
    const m = aria?.textContent?.trim().match(/(\d+)/) ?? aria?.getAttribute('aria-label')?.match(/(\d+)/);
    return m ? Number(m[1]) : undefined;
  }, label);
}

describe('sotto app in chromium', () => {
  before(async () => {
    relay = await Relay.start();
    const alice = await person('alice', ALICE);
    const bob = await person('bob', BOB);
    const carol = await person('carol', CAROL);
    // Bob and Carol set up with the CLI (Alice does it in the app), in parallel.
    await Promise.all([
      bob.user.cliAsync(['init', '--invite', relay.invite(1), '--name', BOB]),
      carol.user.cliAsync(['init', '--invite', relay.invite(1), '--name', CAROL]),
      launch().then((b) => (browser = b)),
    ]);
    await Promise.all([alice.user.startApp(), bob.user.startApp({ unlocked: true })]);
  });

  after(async () => {
    await browser?.close();
    await Promise.all(Object.values(people).map((p) => p.user.stopApp()));
    relay?.child.kill('SIGKILL');
  });

  scenario('set-up from an invite link', [], async () => {
    const { alice } = people;
    const page = await openPage(alice);
    await page.getByLabel('Invite link', { exact: true }).fill(relay.invite(1));
    await page.getByLabel('Your name', { exact: true }).fill(ALICE);
    await page.getByLabel('Passphrase', { exact: true }).fill('short');
    await expectText(page.locator('#strength'), /\S/, 'the passphrase strength');
    const weak = await page.locator('#strength').innerText();
    await page.getByLabel('Passphrase', { exact: true }).fill(PASSPHRASE);
    await waitUntil('the strength text to change for a longer passphrase', async () =>
      (await page.locator('#strength').innerText()) !== weak ? true : undefined);
    await page.getByLabel('Passphrase again', { exact: true }).fill(PASSPHRASE);
    await axe(page, 'set-up');
    await screenshot(page, 'setup');
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    // Registered and unlocked: the main navigation is there, and so is Panic.
    await page.getByRole('link', { name: 'Contacts', exact: true }).first().waitFor({ timeout: 30_000 });
    await page.getByRole('button', { name: 'Panic', exact: true }).waitFor();
  });

  scenario('the CLI works beside the running app (through its service)', ['set-up from an invite link'], async () => {
    const whoami = people.alice.user.cli(['whoami', '--json'], { allowFail: true });
    assert.equal(whoami.status, 0, `sotto whoami while the app runs failed:\n${whoami.stderr}`);
    assert.equal(JSON.parse(whoami.stdout.trim().split('\n').pop()).name, ALICE);
  });

  scenario('contacts: codes, QR and the same safety number on both sides', ['set-up from an invite link'], async () => {
    const { alice, bob } = people;
    await openPage(bob);
    await fresh(alice);
    const codes = {};
    for (const p of [alice, bob]) {
      await go(p.page, 'Contacts');
      codes[p.user.name] = (await p.page.locator('#my-code').innerText()).trim();
      assert.match(codes[p.user.name], /\S{20,}/, `${p.user.name}'s contact code`);
      await p.page.locator('svg[aria-label="QR code of your contact code"]').waitFor();
    }
    await axe(alice.page, 'contacts');
    for (const [p, other] of [[alice, BOB], [bob, ALICE]]) {
      await p.page.getByLabel('Name', { exact: true }).fill(other);
      await p.page.getByLabel('Contact code', { exact: true }).fill(codes[other]);
      await p.page.getByRole('button', { name: 'Add contact', exact: true }).click();
      await p.page.waitForLoadState('load');
      await go(p.page, 'Contacts');
      await contactLink(p.page, other).click();
    }
    const numbers = {};
    for (const p of [alice, bob]) {
      const text = await expectText(p.page.locator('#safety-number'), /\d{5}/, `${p.user.name}'s safety number`);
      numbers[p.user.name] = text.replace(/\D/g, '');
      assert.equal(numbers[p.user.name].length, 60, `a safety number has 60 digits, got ${JSON.stringify(text)}`);
    }
    assert.equal(numbers[ALICE], numbers[BOB], 'Alice and Bob must see the same safety number');
    await axe(alice.page, 'contact (safety number)');
    await screenshot(alice.page, 'contact');
    await alice.page.getByRole('button', { name: 'Mark as verified', exact: true }).click();
    await alice.page.waitForLoadState('load');
    // "Verified" with a capital: not the button's "Mark as verified", which goes.
    await expectText(main(alice.page), /(^|[\s✓])Verified\b/m, "Bob's contact page after Mark as verified");
    assert.equal(await alice.page.getByRole('button', { name: 'Mark as verified' }).count(), 0,
      'the Mark as verified button goes once the contact is verified');
    await go(alice.page, 'Settings');
    await alice.page.getByRole('heading', { level: 1 }).waitFor();
    await axe(alice.page, 'settings');
  });

  scenario('two people exchange messages and see them live', ['contacts: codes, QR and the same safety number on both sides'], async () => {
    const { alice, bob } = people;
    await fresh(alice, bob);
    await axe(bob.page, 'chats (empty)');
    await markNoReload(bob.page);
    await openChat(alice.page, BOB);
    await send(alice.page, HELLO);
    // Bob's chat list gets Alice's chat with an unread badge, without a reload.
    const chatList = bob.page.getByRole('navigation', { name: 'Chats' });
    const link = chatList.getByRole('link', { name: new RegExp(`^${ALICE}`) });
    await link.waitFor({ timeout: 20_000 });
    await expectText(link.locator('.unread'), /^\s*1\b/, "the unread badge of Alice's chat in Bob's list", 20_000);
    await assertNotReloaded(bob.page, "Alice's message in Bob's chat list");
    await link.click();
    const bobMessages = bob.page.getByRole('list', { name: 'Messages' });
    await expectText(bobMessages, HELLO, "Bob's conversation with Alice");
    // Alice waits in her conversation; Bob's reply arrives live.
    await markNoReload(alice.page);
    await send(bob.page, REPLY);
    const aliceMessages = alice.page.getByRole('list', { name: 'Messages' });
    await expectText(aliceMessages, REPLY, "Alice's conversation (Bob's reply)", 20_000);
    await assertNotReloaded(alice.page, "Bob's reply");
    await axe(alice.page, 'conversation');
    await screenshot(alice.page, 'chats');
    // Markup from another person is shown as text and never runs.
    await send(bob.page, HOSTILE);
    await expectText(aliceMessages, HOSTILE, "Alice's conversation (hostile markup shown as text)", 20_000);
    await assertNotReloaded(alice.page, "Bob's second reply");
    assert.equal(await aliceMessages.locator('img, script').count(), 0, 'a message must never become markup');
    // Search is local: it finds Alice's own message.
    const searchBox = alice.page.getByRole('searchbox', { name: 'Search messages' })
      .or(alice.page.getByLabel('Search messages', { exact: true }));
    if ((await searchBox.count()) === 0) await alice.page.getByRole('link', { name: 'Search messages' }).click();
    await searchBox.first().fill('coffee');
    await searchBox.first().press('Enter');
    await expectText(main(alice.page), HELLO, 'the search results for "coffee"');
    await axe(alice.page, 'search results');
  });

  let joinLink;
  scenario('a group with a join request approved in the app', ['set-up from an invite link'], async () => {
    const { alice, carol } = people;
    await fresh(alice);
    const page = alice.page;
    await go(page, 'Groups');
    await page.getByRole('link', { name: 'New group' }).or(page.getByRole('button', { name: 'New group' })).first().click();
    await page.getByLabel('Group name', { exact: true }).fill(GROUP);
    await page.getByRole('button', { name: 'Create group', exact: true }).click();
    const members = page.getByRole('list', { name: 'Members' });
    await expectText(members, 'Admin', "the new group's members list");
    assert.ok((await members.innerText()).includes(ALICE) || /\byou\b/i.test(await members.innerText()),
      'the creator is listed among the members');
    // Link joins wait for an admin's approval.
    const approval = page.getByRole('checkbox', { name: /approv/i }).first();
    await approval.check();
    await page.getByRole('button', { name: 'Save settings', exact: true }).click();
    await page.waitForLoadState('load');
    assert.ok(await page.getByRole('checkbox', { name: /approv/i }).first().isChecked(), 'approval stays on after saving');
    const create = page.getByRole('button', { name: 'Create join link', exact: true });
    if ((await create.count()) > 0) {
      await create.click();
      await page.waitForLoadState('load');
    }
    joinLink = await waitUntil('the join link on the group page', () =>
      main(page).evaluate((root) => {
        const inText = root.innerText.match(/sotto:\/\/group\?\S+/)?.[0];
        const inInput = [...root.querySelectorAll('input, textarea')].map((i) => i.value).find((v) => v.startsWith('sotto://group?'));
        return inInput ?? inText;
      }));
    // Carol's app is opened with the join link; she asks to join in it.
    await carol.user.startApp({ unlocked: true, link: joinLink });
    await openPage(carol);
    await carol.page.getByRole('button', { name: 'Ask to join', exact: true }).click();
    await carol.page.waitForLoadState('load');
    await expectText(main(carol.page), /request was sent/i, "Carol's page after Ask to join");
    await axe(carol.page, 'asked to join');
    // Alice's service fetches the request; the group page lists it.
    const requests = () => page.getByRole('list', { name: 'Join requests' });
    await reloadUntil(page, "Carol's join request on Alice's group page", async () =>
      (await main(page).innerText()).includes(CAROL) && (await page.getByRole('button', { name: 'Approve' }).count()) > 0);
    await axe(page, 'group (join request)');
    await requests().getByRole('button', { name: 'Approve' }).first().click();
    await page.waitForLoadState('load');
    await reloadUntil(page, 'Carol among the members with the Member badge', async () => {
      const items = members.getByRole('listitem').filter({ hasText: CAROL });
      return (await items.count()) > 0 && (await items.first().innerText()).includes('Member');
    });
    await screenshot(page, 'group');
    // Carol's chats show the group once her service hears she was let in.
    await go(carol.page, 'Chats');
    await reloadUntil(carol.page, "the group in Carol's chat list", async () =>
      (await carol.page.getByRole('navigation', { name: 'Chats' }).innerText()).includes(GROUP));
    await go(carol.page, 'Groups');
    await expectText(main(carol.page), GROUP, "Carol's groups screen");
    await axe(carol.page, 'groups');
  });

  scenario("a warning posted by Alice shows on Carol's board with counts", ['a group with a join request approved in the app'], async () => {
    const { alice, carol } = people;
    await fresh(alice, carol);
    const page = alice.page;
    await go(page, 'Warnings');
    await page.getByRole('link', { name: 'Post a warning' }).click();
    await page.getByLabel('About (person)', { exact: true }).fill(SUBJECT);
    await page.getByLabel('Group', { exact: true }).selectOption({ label: GROUP });
    const kind = page.getByLabel('Kind', { exact: true });
    const harassment = await kind.locator('option').filter({ hasText: /harassment/i }).first().getAttribute('value');
    await kind.selectOption(harassment);
    await page.getByLabel('What happened', { exact: true }).fill(WHAT_HAPPENED);
    await page.getByLabel('When', { exact: true }).fill('2024-03');
    await page.getByLabel('Where', { exact: true }).fill('late votes');
    await axe(page, 'post a warning');
    await page.getByRole('button', { name: 'Preview', exact: true }).click();
    await expectText(main(page), WHAT_HAPPENED, 'the preview of the warning');
    await axe(page, 'warning preview');
    await page.getByRole('button', { name: 'Post warning', exact: true }).click();
    await page.waitForLoadState('load');
    // Carol's board: the person, with one first-hand report.
    await go(carol.page, 'Warnings');
    const board = carol.page.getByRole('table', { name: 'Warnings by person' });
    await reloadUntil(carol.page, `${SUBJECT} on Carol's warnings board`, async () =>
      (await board.count()) > 0 && (await board.innerText()).includes(SUBJECT));
    const row = board.getByRole('row').filter({ hasText: SUBJECT });
    const cells = await boardRow(row);
    assert.equal(cells['First-hand'], '1', `one first-hand report: ${JSON.stringify(cells)}`);
    assert.equal(cells['Second-hand'], '0', `no second-hand report: ${JSON.stringify(cells)}`);
    assert.equal(cells['Anonymous corroborations'], '0', `no corroboration yet: ${JSON.stringify(cells)}`);
    assert.match(cells.Kinds ?? '', /harassment/i, `the row names the kind: ${JSON.stringify(cells)}`);
    await axe(carol.page, 'warnings board');
    await screenshot(carol.page, 'warnings');
    await row.getByRole('link').first().click();
    await expectText(main(carol.page), WHAT_HAPPENED, 'the subject page');
    assert.equal(await countFor(carol.page, 'First-hand'), 1, 'First-hand count');
    assert.equal(await countFor(carol.page, 'Second-hand'), 0, 'Second-hand count');
    assert.equal(await countFor(carol.page, 'Anonymous corroborations'), 0, 'Anonymous corroborations count');
    await carol.page.getByRole('heading', { name: 'What you can do' }).waitFor();
  });

  scenario('corroboration: "Me too" is counted for every member, without saying who', ["a warning posted by Alice shows on Carol's board with counts"], async () => {
    const { alice, carol } = people;
    const page = carol.page;
    await axe(page, 'subject');
    await screenshot(page, 'subject');
    await page.getByRole('button', { name: 'Me too', exact: true }).first().click();
    await page.waitForLoadState('load');
    await reloadUntil(page, "Carol's corroboration counted on her subject page", async () =>
      (await countFor(page, 'Anonymous corroborations')) === 1);
    // Alice sees the count too, and not who it was.
    await go(alice.page, 'Warnings');
    await main(alice.page).getByRole('table', { name: 'Warnings by person' }).getByRole('row').filter({ hasText: SUBJECT }).getByRole('link').first().click();
    await reloadUntil(alice.page, "Carol's corroboration counted on Alice's subject page", async () =>
      (await countFor(alice.page, 'Anonymous corroborations')) === 1);
    const text = await main(alice.page).innerText();
    assert.ok(!text.includes(CAROL), "the subject page must not say who corroborated");
    await axe(alice.page, 'subject (corroborated)');
  });

  scenario('evidence locker: a note and a file, countersigned, with a proof export', ['set-up from an invite link'], async () => {
    const { alice } = people;
    await fresh(alice);
    const page = alice.page;
    await go(page, 'Evidence');
    await page.getByLabel('Note', { exact: true }).fill(NOTE);
    const file = path.join(TMP, 'photo-of-note.txt');
    fs.writeFileSync(file, 'a file for the evidence locker\n');
    await page.getByLabel('File', { exact: true }).setInputFiles(file);
    await axe(page, 'evidence (form)');
    await page.getByRole('button', { name: 'Save to locker', exact: true }).click();
    await page.waitForLoadState('load');
    await reloadUntil(page, 'the note countersigned by the relay', async () => {
      const t = await main(page).innerText();
      return t.includes(NOTE) && t.includes('Countersigned by the relay');
    });
    await axe(page, 'evidence');
    await main(page).getByText(/^Countersigned by the relay/).first().evaluate((el) => el.scrollIntoView({ block: 'center' }));
    await screenshot(page, 'evidence');
    const exportProof = page.getByRole('link', { name: 'Export proof' }).or(page.getByRole('button', { name: 'Export proof' })).first();
    const [download] = await Promise.all([page.waitForEvent('download'), exportProof.click()]);
    const saved = path.join(TMP, 'proof');
    await download.saveAs(saved);
    assert.ok(fs.statSync(saved).size > 0, 'the exported proof is not empty');
    assert.ok(!/photo-of-note|clothes/.test(download.suggestedFilename()),
      `the proof's file name holds neither the file's name nor the note: ${download.suggestedFilename()}`);
  });

  scenario("a changed safety number blocks sending until it is trusted", ['two people exchange messages and see them live'], async () => {
    const { alice, bob } = people;
    // Bob re-keys with the CLI while his app is stopped.
    await fresh(alice);
    await stopApp(bob);
    bob.user.cli(['identity', 'reset']);
    await bob.user.startApp({ unlocked: true });
    await openPage(bob);
    await openChat(alice.page, BOB);
    const text = 'This must not go out before Alice checks the number.';
    SECRETS.push(text);
    await alice.page.getByLabel('Message', { exact: true }).fill(text);
    await alice.page.getByRole('button', { name: 'Send', exact: true }).click();
    const alert = alice.page.getByRole('alert').filter({ hasText: /safety number has changed/i });
    await alert.first().waitFor({ timeout: 20_000 });
    await axe(alice.page, 'conversation (safety number changed)');
    await alert.first().evaluate((el) => el.scrollIntoView({ block: 'start' }));
    await screenshot(alice.page, 'safety-number-changed');
    await openChat(bob.page, ALICE);
    await alice.page.getByRole('button', { name: 'I have checked, trust the new number' }).click();
    await alice.page.waitForLoadState('load');
    assert.equal(await alice.page.getByRole('alert').filter({ hasText: /safety number has changed/i }).count(), 0,
      'the banner goes once the new number is trusted');
    const after = 'Checked: trusting the new number.';
    SECRETS.push(after);
    await send(alice.page, after);
    const bobMessages = bob.page.getByRole('list', { name: 'Messages' });
    await expectText(bobMessages, after, "Bob's conversation after the trust", 20_000);
    // What came after it arrived, so the refused message would have too had it gone out.
    assert.ok(!(await bobMessages.innerText()).includes(text),
      'a message refused for a changed safety number must never be delivered');
  });

  scenario('panic erases everything and shows nothing of the profile', ['two people exchange messages and see them live'], async () => {
    const { bob } = people;
    await fresh(bob);
    const page = bob.page;
    await page.getByRole('button', { name: 'Panic', exact: true }).click();
    await axe(page, 'panic confirmation');
    await screenshot(page, 'panic-confirm');
    await page.getByRole('button', { name: 'Erase everything now' }).click();
    await expectText(page.locator('body'), 'Erased', 'the page after panic', 30_000);
    const shown = await page.locator('body').innerText();
    const html = await page.content();
    for (const s of SECRETS) {
      assert.ok(!shown.includes(s) && !html.includes(s), `after panic the page still holds ${JSON.stringify(s)}`);
    }
    await axe(page, 'erased');
    await screenshot(page, 'panic');
    await page.reload();
    const reloaded = await page.content();
    const left = SECRETS.filter((s) => reloaded.includes(s));
    assert.deepEqual(left, [], 'a reload shows nothing of the profile either');
    // The profile is gone for the CLI too.
    await stopApp(bob);
    const whoami = bob.user.cli(['whoami'], { allowFail: true });
    assert.notEqual(whoami.status, 0, `sotto whoami still works after panic:\n${whoami.stdout}`);
  });

  scenario('the idle lock and Lock show the unlock screen; the passphrase opens it again', [], async (t) => {
    const { carol } = people;
    await stopApp(carol);
    await carol.user.startApp({ lockAfter: '3s' });
    const page = await openPage(carol);
    // Started without SOTTO_PASSPHRASE: the unlock screen first.
    await page.getByLabel('Passphrase', { exact: true }).fill('not the passphrase');
    await page.getByRole('button', { name: 'Unlock', exact: true }).click();
    await expectText(main(page), 'Wrong passphrase', 'the unlock screen after a wrong passphrase');
    await axe(page, 'unlock (wrong passphrase)');
    await page.getByLabel('Passphrase', { exact: true }).fill(PASSPHRASE);
    await page.getByRole('button', { name: 'Unlock', exact: true }).click();
    // Unlocked: the chat list and Panic (looked at at once, before the lock time).
    await page.getByRole('navigation', { name: 'Chats' }).waitFor();
    await page.getByRole('button', { name: 'Panic', exact: true }).waitFor();
    // Idle for the lock time: the unlock screen comes back by itself (SSE),
    // or at the latest with the next request.
    const unlockButton = page.getByRole('button', { name: 'Unlock', exact: true });
    const bySelf = await unlockButton.waitFor({ timeout: 8_000 }).then(() => true, () => false);
    t.diagnostic(bySelf ? 'the page went to the unlock screen by itself' : 'the unlock screen came with the next request');
    if (!bySelf) await go(page, 'Chats');
    await unlockButton.waitFor({ timeout: STEP_MS });
    const locked = await page.content();
    assert.deepEqual(SECRETS.filter((s) => locked.includes(s)), [], 'the locked screen shows nothing of the profile');
    await axe(page, 'unlock');
    await page.getByLabel('Passphrase', { exact: true }).fill(PASSPHRASE);
    await unlockButton.click();
    await page.getByRole('button', { name: 'Panic', exact: true }).waitFor();
    // "Lock" locks at once.
    await page.getByRole('button', { name: 'Lock', exact: true }).click();
    await unlockButton.waitFor();
  });

  test('axe: no WCAG 2.1 A/AA violations on any screen visited', (t) => {
    assert.ok(findings.axeScreens.length > 0, 'axe ran on no screen');
    t.diagnostic(`axe ran on ${findings.axeScreens.length} screens: ${findings.axeScreens.join(', ')}`);
    assert.equal(findings.axe.size, 0,
      `axe found violations on ${findings.axe.size} of ${findings.axeScreens.length} screens:\n${describeViolations(findings.axe)}`);
  });

  test('no script errors, CSP violations or dialogs; no names or texts in URLs and titles', () => {
    assert.deepEqual(findings.scriptProblems, [], 'script problems');
    assert.deepEqual(findings.leaks, [], 'secrets in URLs or titles');
  });
});
