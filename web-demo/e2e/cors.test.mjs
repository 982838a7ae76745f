// CORS from a real browser: a page served from one origin calls the gateway's REST inbox on another with an
// Authorization header (so chromium sends a preflight first). A page on an allowed origin reads and changes the
// inbox; one on a refused origin gets a CORS failure (TypeError), which chromium blames on the CORS policy.
//   npm run test:e2e          (HERALD_BIN defaults to ../target/debug/herald)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { devToken, launchBrowser, startHerald } from './herald.mjs';

const USER = `cors-${Math.random().toString(36).slice(2, 8)}`;

/** A page server on a port of its own: an origin other than the gateway's. */
async function pageServer() {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>another origin</title><p>A page on another origin.</p>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

let herald;
let browser;
let allowed;
let refused;
let token;

before(async () => {
  allowed = await pageServer();
  refused = await pageServer();
  herald = await startHerald({ server: [`cors_allowed_origins = ${JSON.stringify([allowed.origin])}`] });
  browser = await launchBrowser();
  token = await devToken(herald.url, USER);
});

after(async () => {
  await browser?.close();
  await herald?.stop();
  await allowed?.close();
  await refused?.close();
});

/** Open `origin` in a tab and, from that page, `fetch` the gateway; the outcome and the console's errors. */
async function fetchFrom(origin, path, init) {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('console', (msg) => msg.type() === 'error' && errors.push(msg.text()));
  try {
    await page.goto(origin);
    const outcome = await page.evaluate(
      async ({ url, init }) => {
        try {
          const res = await fetch(url, init);
          return { status: res.status, body: await res.json() };
        } catch (e) {
          return { error: `${e.name}: ${e.message}` };
        }
      },
      { url: `${herald.url}${path}`, init },
    );
    return { ...outcome, errors };
  } finally {
    await page.close();
  }
}

const inbox = `/api/v1/users/${USER}/notifications`;
const bearer = () => ({ Authorization: `Bearer ${token}` });

test('a page on an allowed origin reads and changes the inbox cross-origin', async () => {
  const read = await fetchFrom(allowed.origin, `${inbox}?limit=5`, { headers: bearer() });
  assert.equal(read.status, 200, JSON.stringify(read));
  assert.deepEqual(read.body.items, []);
  const readAll = await fetchFrom(allowed.origin, `${inbox}/read_all`, { method: 'POST', headers: bearer() });
  assert.equal(readAll.status, 200, JSON.stringify(readAll));
  assert.equal(typeof readAll.body.read_at, 'string');
});

test('a page on a refused origin gets a CORS failure', async () => {
  const read = await fetchFrom(refused.origin, inbox, { headers: bearer() });
  assert.equal(read.status, undefined, JSON.stringify(read));
  assert.match(read.error ?? '', /^TypeError: Failed to fetch/, JSON.stringify(read));
  assert.ok(
    read.errors.some((m) => m.includes('blocked by CORS policy') && m.includes(refused.origin)),
    `chromium names the CORS policy: ${JSON.stringify(read.errors)}`,
  );
});
