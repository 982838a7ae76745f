/**
 * The `<script>` build (`herald.global.js`, global `Herald`) against a real gateway: loaded into a fresh context
 * that has only what a browser page has (WebSocket, fetch, timers), as a Django template would load it.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createContext, runInContext } from 'node:vm';
import { JSDOM } from 'jsdom';
import { build } from 'tsup';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import type { HeraldClient as Client, HeraldClientOptions } from '../../src';
import { mintToken, newUser, notify, skipReason, startGateway, tempDir, type Gateway } from './gateway';

const reason = skipReason('global-script');

describe.skipIf(reason !== null)('herald.global.js in a page without a bundler', () => {
  const tmp = tempDir();
  const out = mkdtempSync(join(tmpdir(), 'herald-sdk-global-'));
  let gw: Gateway;
  let Herald: { HeraldClient: new (o: HeraldClientOptions) => Client };

  beforeAll(async () => {
    // The example page runs at http://localhost (jsdom), which the gateway must let in.
    gw = await startGateway(tmp.dir, 0, '[websocket]\nallowed_origins = ["http://localhost"]\n');
    await build({ outDir: out, dts: false, silent: true });
    const page = createContext({
      WebSocket,
      fetch,
      URL,
      AbortSignal,
      Response,
      console,
      setTimeout,
      clearTimeout,
      setInterval,
      clearInterval,
      queueMicrotask,
    });
    runInContext(readFileSync(join(out, 'herald.global.js'), 'utf8'), page);
    Herald = runInContext('Herald', page);
  }, 60_000);
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
    rmSync(out, { recursive: true, force: true });
  });

  it('Herald.HeraldClient connects, receives a live notification and reads the inbox over REST', async () => {
    const user = newUser();
    const client = new Herald.HeraldClient({ url: gw.url, userId: user, getToken: async () => mintToken(user) });
    const titles: string[] = [];
    client.on('notification', ({ notification }) => titles.push(notification.title));
    try {
      client.connect();
      await vi.waitFor(() => expect(client.state).toBe('connected'), { timeout: 10_000 });
      await notify(gw, user, 'from the script build');
      await vi.waitFor(() => expect(titles).toEqual(['from the script build']), { timeout: 5000 });
      expect(await client.unreadCount()).toBe(1);
    } finally {
      client.close();
    }
  });

  it('examples/vanilla/index.html shows the count, the list and a live notification', async () => {
    const user = newUser();
    const old = await notify(gw, user, 'already there');
    const page = new URL('http://localhost/examples/vanilla/');
    page.search = new URLSearchParams({ url: gw.url, user, token: mintToken(user) }).toString();
    // The page as a browser loads it, with the script build inlined where its <script src> points.
    const html = readFileSync(join(__dirname, '../../examples/vanilla/index.html'), 'utf8').replace(
      '<script src="../../dist/herald.global.js"></script>',
      () => `<script>${readFileSync(join(out, 'herald.global.js'), 'utf8')}</script>`,
    );
    const dom = new JSDOM(html, {
      url: page.toString(),
      runScripts: 'dangerously',
      // jsdom has WebSocket but no fetch: give the page Node's.
      beforeParse: (window) => Object.assign(window, { fetch }),
    });
    const $ = (id: string) => dom.window.document.getElementById(id)!;
    try {
      await vi.waitFor(() => expect($('status').textContent).toBe('live'), { timeout: 10_000 });
      await vi.waitFor(() => expect($('count').textContent).toBe('1'), { timeout: 5000 });
      await vi.waitFor(() => expect($('list').textContent).toContain(old.body.title), { timeout: 5000 });
      await notify(gw, user, 'pushed live');
      await vi.waitFor(() => expect($('list').textContent).toContain('pushed live'), { timeout: 5000 });
      await vi.waitFor(() => expect($('count').textContent).toBe('2'), { timeout: 5000 });
    } finally {
      dom.window.close();
    }
  });

  it('examples/vanilla/index.html follows reads made elsewhere and shows a failed list() in #status', async () => {
    const user = newUser();
    const first = await notify(gw, user, 'first');
    await notify(gw, user, 'second');
    const page = new URL('http://localhost/examples/vanilla/');
    page.search = new URLSearchParams({ url: gw.url, user, token: mintToken(user) }).toString();
    const html = readFileSync(join(__dirname, '../../examples/vanilla/index.html'), 'utf8').replace(
      '<script src="../../dist/herald.global.js"></script>',
      () => `<script>${readFileSync(join(out, 'herald.global.js'), 'utf8')}</script>`,
    );
    let failLists = false;
    const pageFetch: typeof fetch = (input, init) =>
      failLists && (init?.method ?? 'GET') === 'GET' && /\/notifications(\?|$)/.test(String(input))
        ? Promise.reject(new TypeError('Failed to fetch'))
        : fetch(input, init);
    const dom = new JSDOM(html, {
      url: page.toString(),
      runScripts: 'dangerously',
      beforeParse: (window) => Object.assign(window, { fetch: pageFetch }),
    });
    const $ = (id: string) => dom.window.document.getElementById(id)!;
    const rows = () => [...$('list').querySelectorAll('li')].map((li) => li.textContent);
    const other = new Herald.HeraldClient({ url: gw.url, userId: user, getToken: async () => mintToken(user) });
    try {
      await vi.waitFor(() => expect(rows()).toEqual(['• second: m second', '• first: m first']), { timeout: 10_000 });
      await other.markRead(first.id); // another tab, over REST: a `read` frame reaches the page
      await vi.waitFor(() => expect(rows()).toEqual(['• second: m second', 'first: m first']), { timeout: 5000 });
      failLists = true;
      await other.markAllRead();
      await vi.waitFor(() => expect($('status').textContent).toMatch(/^could not load the notifications: /), {
        timeout: 5000,
      });
    } finally {
      dom.window.close();
    }
  });
});
