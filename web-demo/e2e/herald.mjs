// Test helpers: a real Herald gateway serving the built demo, and Debian's chromium driven by playwright-core.
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { heraldProcess, launchChromium, tomlString, until as pollUntil } from '../../scripts/lib/herald-e2e.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const WEB_DEMO = resolve(here, '..');
export const REPO = resolve(WEB_DEMO, '..');
export const DIST = join(WEB_DEMO, 'dist');
export const ARTIFACTS = join(here, 'artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Start `herald serve` on a free loopback port with a temporary SQLite inbox and the dev endpoints on.
 * `server`: extra TOML lines for the `[server]` table (e.g. `cors_allowed_origins = [...]`).
 */
export async function startHerald({ server = [] } = {}) {
  const bin = resolve(WEB_DEMO, process.env.HERALD_BIN ?? '../target/debug/herald');
  if (!existsSync(bin))
    throw new Error(`no Herald binary at ${bin}: run \`cargo build --bin herald\` or set HERALD_BIN`);
  if (!existsSync(join(DIST, 'index.html'))) throw new Error(`no built demo in ${DIST}: run \`npm run build\``);
  const dir = mkdtempSync(join(tmpdir(), 'herald-web-demo-e2e-'));
  const toml = tomlString;
  const config = (bind) =>
    writeFileSync(
      join(dir, 'herald.toml'),
      [
        'profile = "development"',
        '[server]',
        `bind = ${toml(bind)}`,
        `demo_dir = ${toml(DIST)}`,
        'shutdown_grace_secs = 1',
        ...server,
        '[log]',
        'format = "json"',
        '[auth]',
        'dev_token_endpoint = true',
        '[websocket]',
        'allowed_origins = ["*"]',
        '[store]',
        `url = ${toml(`sqlite://${join(dir, 'herald.db')}`)}`,
        'synchronous = "normal"',
        '[rules]',
        `path = ${toml(join(REPO, 'config', 'rules.toml'))}`,
        '',
      ].join('\n'),
    );
  const herald = heraldProcess({ bin, dir, artifacts: ARTIFACTS });
  config('127.0.0.1:0');
  const url = await herald.launch();
  return {
    url,
    /** Stop the process but keep its inbox and port: the server is down until `restart()`. */
    async down() {
      await herald.halt();
    },
    /** Start again on the same address, with the same inbox. */
    async restart() {
      config(new URL(url).host);
      const again = await herald.launch();
      if (again !== url) throw new Error(`Herald came back on ${again}, not ${url}`);
    },
    async stop() {
      await herald.close();
    },
  };
}

/** Headless chromium with a fresh profile: one browser context, so its pages are tabs sharing localStorage. */
export async function launchBrowser() {
  return launchChromium(chromium, {
    executablePath: CHROMIUM,
    profilePrefix: 'herald-web-demo-chromium-',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Collect console errors, page errors and failed requests of a page (the demo must have none). */
export function watchForErrors(page, label, sink) {
  page.on('console', (msg) => {
    if (msg.type() === 'error') sink.push(`[${label}] console.error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => sink.push(`[${label}] page error: ${err.message}`));
  page.on('requestfailed', (req) => {
    // A page being closed or reloaded cancels its open requests and socket: not an error of the demo.
    const failure = req.failure()?.errorText ?? '';
    if (!/ERR_ABORTED/.test(failure)) sink.push(`[${label}] request failed: ${req.method()} ${req.url()} ${failure}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) sink.push(`[${label}] HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
  });
}

/** Poll `fn` until it returns a truthy value. */
export const until = (what, fn, timeoutMs = 10_000) => pollUntil(what, fn, timeoutMs, 100);

/** The REST/dev API straight from Node, for setting up history quickly. */
export async function devToken(base, userId) {
  const res = await fetch(`${base}/api/v1/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  });
  if (!res.ok) throw new Error(`dev token: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()).token;
}

export async function devPublish(base, token, { exchange = '', routingKey, body, key }) {
  const q = new URLSearchParams();
  if (exchange) q.set('exchange', exchange);
  if (routingKey) q.set('routing_key', routingKey);
  const res = await fetch(`${base}/api/v1/dev/events?${q}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
    body: JSON.stringify(body),
  });
  if (res.status !== 202) throw new Error(`dev publish: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()).results;
}
