// Accessibility: axe-core in Debian's chromium over the demo page built on @herald/client/ui (bell, inbox with
// its tabs, toasts, notification settings), light and dark, and the inbox's and the settings' keyboard use. No
// violation of serious or critical impact.
//   npm run build && npm run test:a11y   (HERALD_BIN defaults to ../target/debug/herald)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { ARTIFACTS, devPublish, devToken, launchBrowser, startHerald, until, watchForErrors } from './herald.mjs';

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const USER = `a11y-${Math.random().toString(36).slice(2, 8)}`;

let herald;
let browser;

before(async () => {
  herald = await startHerald();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await herald?.stop();
});

/** axe's violations of serious or critical impact on the page, as readable lines. */
async function seriousViolations(page) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(() =>
    window.axe.run(document, {
      resultTypes: ['violations'],
      runOnly: ['wcag2a', 'wcag2aa', 'wcag21aa', 'best-practice'],
    }),
  );
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

async function publishWeek(token, week) {
  await devPublish(herald.url, token, {
    exchange: 'sgad.availability',
    routingKey: `availability.closed.${USER}`,
    body: { event_type: 'availability.closed', referee_id: USER, week_number: week, total_slots: week },
    key: `a11y-week-${week}`,
  });
}

test('the bell, the inbox (every tab) and the toasts have no serious or critical axe violations, light and dark', async () => {
  const errors = [];
  const page = await browser.context.newPage();
  watchForErrors(page, 'a11y', errors);
  await page.goto(`${herald.url}/?user=${USER}`);
  await page.getByRole('status').filter({ hasText: 'Live' }).first().waitFor({ timeout: 15_000 });
  const token = await devToken(herald.url, USER);
  for (let week = 1; week <= 3; week++) await publishWeek(token, week);
  const inbox = page.locator('section#inbox');
  await until('three items', async () => (await inbox.locator('li.herald-item').count()) === 3);
  await page.getByRole('region', { name: 'Live notifications' }).locator('li.herald-toast').first().waitFor();
  // One read, one archived: every state of an item is on the page.
  await inbox.getByRole('button', { name: /^Mark read: .*week 1/ }).click();
  await inbox.getByRole('button', { name: /^Archive: .*week 2/ }).click();
  await until('the archived one to leave the list', async () => (await inbox.locator('li.herald-item').count()) === 2);
  await page.getByRole('region', { name: 'Live notifications' }).locator('li.herald-toast').first().hover();

  assert.deepEqual(await seriousViolations(page), [], 'light');
  await page.screenshot({ path: join(ARTIFACTS, 'a11y-light.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.deepEqual(await seriousViolations(page), [], 'dark');
  await page.screenshot({ path: join(ARTIFACTS, 'a11y-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });

  // The tabs, with the keyboard: arrows move between them; the archived one lists what was archived.
  const tabs = inbox.getByRole('tablist');
  await tabs.getByRole('tab', { name: 'All' }).focus();
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Archived');
  assert.equal(await tabs.getByRole('tab', { name: 'Archived' }).getAttribute('aria-selected'), 'true');
  await inbox.getByRole('button', { name: /^Unarchive: .*week 2/ }).waitFor();
  assert.equal(await inbox.locator('li.herald-item').count(), 1);
  assert.deepEqual(await seriousViolations(page), [], 'the archived tab');
  await page.keyboard.press('ArrowLeft');
  await inbox.getByRole('button', { name: /^Mark read: .*week 3/ }).waitFor();
  assert.deepEqual(await seriousViolations(page), [], 'the unread tab');

  // The bell is a button named by its count; pressing it takes focus to the inbox.
  const bell = page.getByRole('button', { name: /^Notifications, \d+ unread$/ });
  await bell.click();
  await until('focus on the inbox heading', () => page.evaluate(() => document.activeElement?.id === 'inbox-title'));
  assert.deepEqual(errors, [], 'no console errors, page errors or failed requests');
  await page.close();
});

test("the bell's own panel (?bell=panel): a dialog with the inbox, focus in, Escape closes, focus back; no axe violations", async () => {
  const errors = [];
  const page = await browser.context.newPage();
  watchForErrors(page, 'a11y-panel', errors);
  await page.goto(`${herald.url}/?user=${USER}&bell=panel`);
  await page.getByRole('status').filter({ hasText: 'Live' }).first().waitFor({ timeout: 15_000 });
  const bell = page.getByRole('button', { name: /^Notifications, \d+ unread$/ });
  assert.equal(await bell.getAttribute('aria-expanded'), 'false');
  await bell.focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Notifications' });
  await dialog.waitFor();
  assert.equal(await bell.getAttribute('aria-expanded'), 'true');
  assert.ok(await dialog.evaluate((el) => el.contains(document.activeElement)), 'focus moved into the panel');
  await until('the items in the panel', async () => (await dialog.locator('li.herald-item').count()) > 0);
  assert.deepEqual(await seriousViolations(page), [], 'the open panel, light');
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.deepEqual(await seriousViolations(page), [], 'the open panel, dark');
  await page.screenshot({ path: join(ARTIFACTS, 'a11y-bell-panel.png') });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.keyboard.press('Escape');
  await until('the panel to close', async () => (await dialog.count()) === 0);
  assert.equal(await bell.evaluate((el) => el === document.activeElement), true, 'focus is back on the bell');
  assert.deepEqual(errors, [], 'no console errors, page errors or failed requests');
  await page.close();
});

test('the notification settings: a region with its heading, a named switch per type, Space and Enter toggle; no axe violations, light and dark', async () => {
  const errors = [];
  const page = await browser.context.newPage();
  watchForErrors(page, 'a11y-settings', errors);
  await page.goto(`${herald.url}/?user=${USER}`);
  await page.getByRole('status').filter({ hasText: 'Live' }).first().waitFor({ timeout: 15_000 });
  const settings = page.getByRole('region', { name: 'Notification settings' });
  const heading = settings.getByRole('heading', { name: 'Notification settings' });
  assert.equal(
    await heading.evaluate((h) => h.tagName),
    'H2',
    'a section of the page, as the publish panel and the inbox',
  );
  // The types the rules store, by the catalog's names where it has one (else the component's).
  const availability = settings.getByRole('switch', { name: 'Referee availability', exact: true });
  await availability.waitFor();
  const names = await settings
    .getByRole('switch')
    .evaluateAll((all) => all.map((el) => document.getElementById(el.getAttribute('aria-labelledby'))?.textContent));
  assert.deepEqual(names, [
    'Referee availability', // availability
    'Evaluation',
    'Match',
    'New sign-in', // security
    'Internship (stage)', // stage
    'Welcome (profile created, user registered)', // welcome
  ]);
  // The keyboard: Space mutes, focus stays on the switch; the muted state has no violations either.
  await availability.focus();
  const muted = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().endsWith('/preferences'));
  await page.keyboard.press('Space');
  assert.equal((await muted).status(), 200);
  assert.equal(await availability.getAttribute('aria-checked'), 'false');
  assert.equal(await availability.evaluate((el) => el === document.activeElement), true, 'focus stays on the switch');
  await settings.scrollIntoViewIfNeeded();
  assert.deepEqual(await seriousViolations(page), [], 'the settings with a muted type, light');
  await settings.screenshot({ path: join(ARTIFACTS, 'a11y-settings-light.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.deepEqual(await seriousViolations(page), [], 'the settings with a muted type, dark');
  await settings.screenshot({ path: join(ARTIFACTS, 'a11y-settings-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });
  // Enter turns it back on.
  const on = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().endsWith('/preferences'));
  await page.keyboard.press('Enter');
  assert.equal((await on).status(), 200);
  assert.equal(await availability.getAttribute('aria-checked'), 'true');

  // On a phone, "Sections" (the jump links shown there) leads to it, below the sticky header.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Settings' }).click();
  await until('the settings heading on screen, below the header', () =>
    heading.evaluate((h) => {
      const r = h.getBoundingClientRect();
      return r.top >= document.querySelector('.topbar').getBoundingClientRect().bottom && r.bottom <= innerHeight;
    }),
  );
  assert.deepEqual(await seriousViolations(page), [], 'the settings on a phone');
  await page.screenshot({ path: join(ARTIFACTS, 'a11y-settings-phone.png') });
  assert.deepEqual(errors, [], 'no console errors, page errors or failed requests');
  await page.close();
});
