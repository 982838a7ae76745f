// End to end: the built demo, served by a real Herald, in Debian's chromium (two tabs of one user).
//   npm run test:e2e          (HERALD_BIN defaults to ../target/debug/herald)
// Screenshots land in e2e/artifacts/ (demo.png, demo-phone.png, demo-phone-inbox.png, signin.png,
// demo-server-down.png, demo-unauthorized.png), with Herald's log.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, devPublish, devToken, launchBrowser, startHerald, until, watchForErrors } from './herald.mjs';

const USER = `e2e-${Math.random().toString(36).slice(2, 8)}`;
const STAGE = 'Your stage at Cardiology was accepted';
const BROADCAST = 'Mantenimiento programado';

let herald;
let browser;
const errors = [];

before(async () => {
  herald = await startHerald();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await herald?.stop();
});

/** Page helpers: the regions the demo is made of, found the way a screen-reader user would. */
const inbox = (page) => page.locator('section#inbox');
const toasts = (page) => page.getByRole('region', { name: 'Live notifications' });
const bell = (page, unread) =>
  page.getByRole('button', {
    name: unread ? `Notifications, ${unread} unread` : 'Notifications, none unread',
    exact: true,
  });
const live = (page) => page.getByRole('status').filter({ hasText: 'Live' }).first();
const items = (page) => inbox(page).locator('li.herald-item');
const item = (page, title) => items(page).filter({ hasText: title });
/** A toast of `@herald/client/ui`'s <Toasts>. */
const toast = (page, text) => toasts(page).locator('li.herald-toast').filter({ hasText: text });
/** A type's switch in the settings panel (`@herald/client/ui`'s <NotificationPreferences>), by its label. */
const typeSwitch = (page, label) =>
  page.getByRole('region', { name: 'Notification settings' }).getByRole('switch', { name: label, exact: true });
/** The next answer to a `PATCH …/preferences` of the page. */
const preferencesPatched = (page) =>
  page.waitForResponse((r) => r.request().method() === 'PATCH' && new URL(r.url()).pathname.endsWith('/preferences'));

/**
 * The inbox's buttons a toast covers: with the page scrolled to the top, the middle and the bottom, each button on
 * screen whose centre is not topmost (something else, e.g. a toast, is drawn over it). Returns their labels.
 */
async function coveredInboxButtons(page) {
  return page.evaluate(() => {
    const covered = new Set();
    const max = document.documentElement.scrollHeight - window.innerHeight;
    for (const y of [0, max / 2, max]) {
      window.scrollTo(0, y);
      for (const button of document.querySelectorAll('#inbox button')) {
        const r = button.getBoundingClientRect();
        const x = r.left + r.width / 2;
        const cy = r.top + r.height / 2;
        // on screen and below the sticky header
        const header = document.querySelector('.topbar').getBoundingClientRect().bottom;
        if (r.width === 0 || cy < header || cy > window.innerHeight || x > window.innerWidth) continue;
        const top = document.elementFromPoint(x, cy);
        if (!top || !button.contains(top)) covered.add(button.getAttribute('aria-label') ?? button.textContent);
      }
    }
    window.scrollTo(0, 0);
    return [...covered];
  });
}

/** The routing result under a fixture's button, once it says `text`: it must be on screen. */
async function resultInView(page, fixture, text) {
  const result = page.locator(`[data-fixture="${fixture}"]`).getByTestId('inline-result');
  await until(`the result of ${fixture}`, async () => text.test(await result.textContent()));
  await until(`the result of ${fixture} in the viewport`, () =>
    result.evaluate((el) => {
      const r = el.getBoundingClientRect();
      return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
    }),
  );
}

async function openTab(label) {
  const page = await browser.context.newPage();
  watchForErrors(page, label, errors);
  await page.goto(herald.url);
  return page;
}

test('sign in, publish, toast + badge, mark read, second tab in sync, history after reload', async () => {
  // --- sign in with the keyboard only ---
  const tab1 = browser.context.pages()[0] ?? (await browser.context.newPage());
  watchForErrors(tab1, 'tab1', errors);
  await tab1.goto(herald.url);
  await tab1.getByRole('heading', { level: 1 }).waitFor();
  await tab1.getByRole('button', { name: /John Doe/ }).waitFor(); // the fixtures' users are quick picks
  await tab1.screenshot({ path: join(ARTIFACTS, 'signin.png') });
  await tab1.keyboard.press('Tab');
  assert.equal(
    await tab1.evaluate(() => document.activeElement?.id && document.activeElement.getAttribute('name')),
    'user_id',
  );
  await tab1.keyboard.type(USER);
  await tab1.keyboard.press('Enter');
  await live(tab1).waitFor({ timeout: 15_000 });
  await bell(tab1, 0).waitFor();
  assert.match(await tab1.getByRole('heading', { level: 1 }).textContent(), /Herald/);
  assert.match(await tab1.getByText(USER, { exact: false }).first().textContent(), new RegExp(USER));

  // --- a second tab of the same browser is signed in as the same user ---
  const tab2 = await openTab('tab2');
  await live(tab2).waitFor({ timeout: 15_000 });
  await bell(tab2, 0).waitFor();

  // --- publish a fixture: the rules route it to us; toast and badge in both tabs ---
  await tab1.getByRole('button', { name: 'Publish: Internship (stage) accepted' }).click();
  await toast(tab1, STAGE).waitFor();
  await toast(tab2, STAGE).waitFor();
  await bell(tab1, 1).waitFor();
  await bell(tab2, 1).waitFor();
  await resultInView(tab1, 'medtrack-stage-accepted', /stored → notification #\d+/);
  const firstResult = tab1.getByTestId('result').first();
  await until('a stored result', async () => /stored → notification #\d+/.test(await firstResult.textContent()));
  assert.match(await firstResult.textContent(), /HTTP 202/);
  await item(tab1, STAGE).waitFor();
  await item(tab2, STAGE).waitFor();

  // --- the broadcast ("user_id": "system") reaches everyone ---
  await tab1.getByRole('button', { name: 'Publish: System broadcast' }).click();
  await resultInView(tab1, 'sgad-notification-system', /stored → notification #\d+/);
  await toast(tab2, BROADCAST).waitFor();
  await bell(tab1, 2).waitFor();
  await bell(tab2, 2).waitFor();
  assert.match(await item(tab1, BROADCAST).textContent(), /everyone/);
  // no developer noise in the item: exchange and event type only in a tooltip
  assert.doesNotMatch(await item(tab1, BROADCAST).textContent(), /sgad\.|from /);

  // --- the same event again (same Idempotency-Key) is stored once ---
  await tab1.getByRole('button', { name: 'Send again with the same Idempotency-Key' }).last().click();
  await until('a duplicate result', async () =>
    /duplicate/.test(await tab1.getByTestId('result').first().textContent()),
  );
  await bell(tab1, 2).waitFor();

  // --- mark read in tab 1: tab 2 follows ---
  await item(tab1, STAGE)
    .getByRole('button', { name: `Mark read: ${STAGE}` })
    .click();
  await bell(tab1, 1).waitFor();
  await bell(tab2, 1).waitFor();
  await until(
    'tab 2 to show the stage notification read',
    async () => (await item(tab2, STAGE).getAttribute('data-unread')) === null,
  );
  assert.equal(
    await item(tab2, STAGE)
      .getByRole('button', { name: /Mark read/ })
      .count(),
    0,
  );
  // read elsewhere: its toast is gone too
  await until('the read toast to leave', async () => (await toast(tab2, STAGE).count()) === 0);

  // --- mark all read in tab 2: tab 1 follows ---
  await inbox(tab2).getByRole('button', { name: 'Mark all read' }).click();
  await bell(tab2, 0).waitFor();
  await bell(tab1, 0).waitFor();
  await until(
    'tab 1 to show the broadcast read',
    async () => (await item(tab1, BROADCAST).getAttribute('data-unread')) === null,
  );

  // --- mute a type in the settings: its notification is stored and listed, muted, but not pushed nor counted ---
  const WEEK_42 = 'Your availability for week 42 is closed'; // the "Referee availability closed" fixture
  const publishAvailability = tab1.getByRole('button', { name: 'Publish: Referee availability closed' });
  /** Publish the fixture from the publish panel; the id of the notification stored. */
  const publishWeek42 = async () => {
    await publishAvailability.click();
    const result = tab1.locator('[data-fixture="sgad-availability-closed"]').getByTestId('inline-result');
    await resultInView(tab1, 'sgad-availability-closed', /^stored → notification #\d+\./);
    return Number(/#(\d+)/.exec(await result.textContent())[1]);
  };
  const byId = (page, id) => inbox(page).locator(`li.herald-item[data-id="${id}"]`);
  await tab1.bringToFront();
  const availability = typeSwitch(tab1, 'Referee availability');
  await availability.waitFor();
  assert.equal(await availability.getAttribute('aria-checked'), 'true');
  assert.equal(await availability.textContent(), 'On');
  let patched = preferencesPatched(tab1);
  await availability.click();
  let answer = await patched;
  assert.equal(answer.status(), 200);
  assert.deepEqual(answer.request().postDataJSON(), { types: { availability: 'muted' } });
  assert.deepEqual((await answer.json()).types, { availability: 'muted' });
  assert.equal(await availability.getAttribute('aria-checked'), 'false');
  assert.equal(await availability.textContent(), 'Muted');

  const mutedId = await publishWeek42();
  // Not pushed: for 2 s, no toast and no new item in either tab; the count stays at none.
  for (const deadline = Date.now() + 2000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
    for (const tab of [tab1, tab2]) {
      assert.equal(await toast(tab, WEEK_42).count(), 0, 'a toast for a muted type');
      assert.equal(await item(tab, WEEK_42).count(), 0, 'a muted notification pushed into the inbox');
      assert.equal(await bell(tab, 0).count(), 1, 'the unread count rose for a muted type');
    }
  }
  assert.equal(await inbox(tab1).getByTestId('unread-summary').textContent(), 'All caught up');
  assert.equal(await tab1.title(), 'Herald demo');

  // Listed all the same: once the inbox loads again it is there, as the server lists it (muted: true); still not
  // counted, nor in the Unread tab; and the switch is still off (saved).
  const listed = [];
  const onList = (r) => {
    if (r.request().method() === 'GET' && new URL(r.url()).pathname.endsWith('/notifications'))
      listed.push(r.json().catch(() => null));
  };
  tab1.on('response', onList);
  await tab1.reload();
  await live(tab1).waitFor({ timeout: 15_000 });
  await byId(tab1, mutedId).waitFor();
  tab1.off('response', onList);
  const asListed = (await Promise.all(listed)).flatMap((body) => body?.items ?? []).find((n) => n.id === mutedId);
  assert.equal(asListed?.muted, true, `listed as muted: ${JSON.stringify(asListed)}`);
  assert.equal(asListed.type, 'availability');
  assert.match(await byId(tab1, mutedId).textContent(), /week 42 is closed/);
  await bell(tab1, 0).waitFor();
  assert.equal(await inbox(tab1).getByTestId('unread-summary').textContent(), 'All caught up');
  await inbox(tab1)
    .getByRole('tab', { name: /^Unread/ })
    .click();
  await inbox(tab1).getByText('Nothing unread.').waitFor();
  assert.equal(await byId(tab1, mutedId).count(), 0, 'a muted notification in the Unread tab');
  await inbox(tab1).getByRole('tab', { name: 'All' }).click();
  await byId(tab1, mutedId).waitFor();
  await until('the saved setting', async () => (await availability.getAttribute('aria-checked')) === 'false');

  // --- on again: the setting goes back to its default, and the next one is pushed to both tabs and counted ---
  patched = preferencesPatched(tab1);
  await availability.click();
  answer = await patched;
  assert.equal(answer.status(), 200);
  assert.deepEqual(answer.request().postDataJSON(), { types: { availability: 'default' } });
  assert.deepEqual((await answer.json()).types, {});
  assert.equal(await availability.getAttribute('aria-checked'), 'true');
  const pushedId = await publishWeek42();
  await toast(tab1, WEEK_42).waitFor();
  await toast(tab2, WEEK_42).waitFor();
  await bell(tab1, 1).waitFor();
  await bell(tab2, 1).waitFor();
  await byId(tab2, pushedId).waitFor();
  // Both go (the history below counts the items): the count is back at none.
  for (const id of [pushedId, mutedId]) {
    await byId(tab1, id)
      .getByRole('button', { name: `Delete: ${WEEK_42}` })
      .click();
    await until(`the deletion of #${id}`, async () => (await byId(tab1, id).count()) === 0);
  }
  await until('the deletion to reach tab 2', async () => (await item(tab2, WEEK_42).count()) === 0);
  await bell(tab1, 0).waitFor();
  await bell(tab2, 0).waitFor();

  // --- delete in tab 1: gone from tab 2 ---
  await item(tab1, STAGE)
    .getByRole('button', { name: `Delete: ${STAGE}` })
    .click();
  await until('the deletion to reach tab 2', async () => (await item(tab2, STAGE).count()) === 0);
  await until('the deletion in tab 1', async () => (await item(tab1, STAGE).count()) === 0);

  // --- history: 20 more events from "a service", then reload tab 1 and page through (pages of 20) ---
  const token = await devToken(herald.url, USER);
  for (let week = 1; week <= 20; week++) {
    await devPublish(herald.url, token, {
      exchange: 'sgad.availability',
      routingKey: `availability.closed.${USER}`,
      body: { event_type: 'availability.closed', referee_id: USER, week_number: week, total_slots: week },
      key: `e2e-week-${week}`,
    });
  }
  await bell(tab2, 20).waitFor();
  await tab1.reload();
  await live(tab1).waitFor({ timeout: 15_000 });
  await bell(tab1, 20).waitFor();
  await until('the first page', async () => (await items(tab1).count()) === 20);
  assert.match(await items(tab1).first().textContent(), /week 20 is closed/);
  // The second page: on "Load more" (or by itself, when the end of the list scrolls into view).
  await tab1.bringToFront(); // a background tab draws no frames: a click would wait for one
  const more = inbox(tab1).getByRole('button', { name: 'Load more' });
  const requests = [];
  const onRequest = (r) => r.url().includes('/notifications') && requests.push(`${r.method()} ${r.url()}`);
  tab1.on('request', onRequest);
  await until(
    'the second page',
    async () => {
      if ((await more.count()) > 0 && (await more.isEnabled())) await more.click({ timeout: 1000 });
      return (await items(tab1).count()) === 21;
    },
    15_000,
  ).catch((e) => {
    throw new Error(`${e.message}; requests: ${requests.join(' | ')}`);
  });
  tab1.off('request', onRequest);
  assert.equal(await inbox(tab1).getByRole('button', { name: 'Load more' }).count(), 0);
  assert.equal(await item(tab1, BROADCAST).count(), 1, 'the broadcast is in the history');
  assert.equal(await item(tab1, STAGE).count(), 0, 'the deleted one stays deleted');

  // --- the picture: a live toast over the inbox ---
  await tab1.bringToFront();
  await tab1.getByRole('button', { name: 'Publish: Student profile created' }).click();
  const welcome = toast(tab1, `Welcome to MedTrack, ${USER}!`);
  await welcome.waitFor();
  await bell(tab1, 21).waitFor();
  assert.doesNotMatch(await welcome.textContent(), /John/, "the fixture's person is not the visitor");
  // the toast leaves the inbox's buttons usable
  assert.deepEqual(await coveredInboxButtons(tab1), [], 'inbox buttons under a toast');
  await welcome.waitFor(); // still up: the checks ran while it was shown
  await welcome.hover(); // keeps it up while the screenshot is taken
  await tab1.screenshot({ path: join(ARTIFACTS, 'demo.png') });
  // hovered, it outlives its 5 s; left alone again, it goes
  await new Promise((r) => setTimeout(r, 6000));
  assert.equal(await welcome.isVisible(), true, 'a hovered toast went away');
  await tab1.mouse.move(640, 10);
  await until('the toast to leave once not hovered', async () => (await welcome.count()) === 0, 15_000);

  // --- phone width: everything fits, nothing scrolls sideways ---
  await tab2.bringToFront();
  await tab2.setViewportSize({ width: 390, height: 844 });
  await tab2.reload();
  await live(tab2).waitFor({ timeout: 15_000 });
  await item(tab2, `Welcome to MedTrack, ${USER}!`).waitFor();
  const overflow = await tab2.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 390px`);
  await tab2.screenshot({ path: join(ARTIFACTS, 'demo-phone.png') });
  // the signed-in user is on the first screen, and so is a visible way to the inbox
  const onFirstScreen = (locator) =>
    locator.evaluate((el) => {
      const r = el.getBoundingClientRect();
      const style = getComputedStyle(el);
      return r.width > 0 && r.top >= 0 && r.bottom <= window.innerHeight && style.visibility !== 'hidden';
    });
  const chip = tab2.getByTestId('user-chip');
  assert.ok(await onFirstScreen(chip), 'the signed-in user is not visible on a phone');
  assert.ok(USER.startsWith((await chip.textContent()).replace(/^Signed in as /, '').replace(/…$/, '')));
  const toInbox = tab2.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: /^Inbox/ });
  assert.ok(await onFirstScreen(toInbox), 'no visible way to the inbox on the first screen of a phone');
  await toInbox.click();
  await until('the inbox heading on screen', () => onFirstScreen(inbox(tab2).getByRole('heading', { level: 2 })));
  await tab2.evaluate(() => window.scrollTo(0, 0));
  // the bell takes you (and keyboard focus) to the inbox
  await bell(tab2, 21).click();
  await until('focus on the inbox heading', () => tab2.evaluate(() => document.activeElement?.id === 'inbox-title'));
  await tab2.screenshot({ path: join(ARTIFACTS, 'demo-phone-inbox.png') });
  // on a phone too, a toast leaves the inbox's buttons usable
  await devPublish(herald.url, token, {
    exchange: 'sgad.availability',
    routingKey: `availability.closed.${USER}`,
    body: { event_type: 'availability.closed', referee_id: USER, week_number: 21, total_slots: 1 },
    key: 'e2e-week-21',
  });
  const phoneToast = toast(tab2, 'week 21 is closed');
  await phoneToast.waitFor();
  await phoneToast.hover();
  assert.deepEqual(await coveredInboxButtons(tab2), [], 'inbox buttons under a toast on a phone');
  await tab2.screenshot({ path: join(ARTIFACTS, 'demo-phone-toast.png') });
  await tab2.mouse.move(0, 400);

  await tab1.bringToFront();

  // --- GDPR purge: a two-step button, then the inbox is empty but for the broadcast ---
  await tab1.getByRole('button', { name: 'Publish: Account deleted (GDPR)' }).click();
  await tab1.getByRole('button', { name: 'Confirm: Account deleted (GDPR), erases your inbox' }).click();
  await until('a purged result', async () => /purged/.test(await tab1.getByTestId('result').first().textContent()));
  await until('the purged inbox', async () => (await items(tab1).count()) === 1);
  await item(tab1, BROADCAST).waitFor();
  // The purge also erases this user's read state of broadcasts: the broadcast may count as unread again.
  await tab1.getByRole('button', { name: /^Notifications, (none|1) unread$/ }).waitFor();

  assert.deepEqual(errors, [], 'no console errors, page errors or failed requests');
});

test('the server goes away: Reconnecting…, publishing paused, no "All caught up"; back: Live', async () => {
  const user = `${USER}-down`;
  const page = await browser.context.newPage();
  const noise = []; // a stopped server makes failed requests and socket errors: expected here
  watchForErrors(page, 'down', noise);
  await page.goto(`${herald.url}/?user=${user}`);
  await live(page).waitFor({ timeout: 15_000 });
  const status = page.getByTestId('connection');
  const publish = page.getByRole('button', { name: 'Publish: Internship (stage) accepted' });
  const summary = inbox(page).getByTestId('unread-summary');
  assert.equal(await publish.isEnabled(), true);
  const counted = /^(All caught up|\d+ unread)$/; // the earlier test's broadcast reaches this user too
  await until('the unread summary', async () => counted.test(await summary.textContent()));

  await herald.down();
  await until('the Reconnecting… label', async () => /Reconnecting…/.test(await status.textContent()));
  const label = await status.textContent();
  assert.doesNotMatch(label, /\d{3,4}|refused|lost/, `a raw close reason in the label: ${label}`);
  await until('the publish buttons disabled', async () => !(await publish.isEnabled()));
  assert.equal(await page.getByTestId('publish-paused').isVisible(), true);
  assert.equal(await summary.textContent(), "Can't reach the server");
  assert.equal(await page.getByText('All caught up').count(), 0);
  await page.screenshot({ path: join(ARTIFACTS, 'demo-server-down.png') });

  await herald.restart();
  await live(page).waitFor({ timeout: 60_000 });
  await until('the publish buttons enabled', () => publish.isEnabled());
  await until('the unread summary back', async () => counted.test(await summary.textContent()));
  assert.equal(await page.getByTestId('publish-paused').count(), 0);
  await page.close();
});

test('a refused token: "Signed out" with a way to sign in again', async () => {
  const page = await browser.context.newPage();
  const noise = []; // the refused handshake and probe are 401s: expected here
  watchForErrors(page, 'refused', noise);
  // The dev token endpoint hands out a token the gateway refuses (as after a secret rotation).
  await page.route('**/api/v1/dev/token', (route) =>
    route.fulfill({
      status: 200,
      contentType: 'application/json',
      body: JSON.stringify({ token: 'not-a-valid-token', user_id: 'x', expires_in: 3600 }),
    }),
  );
  await page.goto(`${herald.url}/?user=${USER}-refused`);
  const status = page.getByTestId('connection');
  await until('the unauthorized state', async () => (await status.getAttribute('data-state')) === 'unauthorized');
  assert.match(await status.textContent(), /Signed out/);
  assert.doesNotMatch(await status.textContent(), /\d{3}/, 'no status code in the label');
  assert.equal(await page.getByRole('button', { name: 'Publish: System broadcast' }).isEnabled(), false);
  assert.equal(await page.getByText('All caught up').count(), 0);
  await page.screenshot({ path: join(ARTIFACTS, 'demo-unauthorized.png') });
  await status.getByRole('button', { name: 'Sign in again' }).click();
  await page.getByRole('textbox', { name: /user id/i }).waitFor();
  await page.close();
});
