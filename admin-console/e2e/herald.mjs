// Test helpers: a real Herald serving the built console at /admin (with RabbitMQ ingest when
// HERALD_TEST_AMQP_URL is set), and Debian's chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const CONSOLE = resolve(here, '..');
export const REPO = resolve(CONSOLE, '..');
export const DIST = join(CONSOLE, 'dist');
export const ARTIFACTS = join(here, 'artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Service keys the gateway is started with: an operator's, a publisher's, and one without `admin`. */
export const KEYS = {
  admin: 'e2e-admin-key-0123456789abcdef',
  publisher: 'e2e-publisher-key-0123456789abc',
  reader: 'e2e-reader-key-0123456789abcdef',
};

/**
 * Start `herald serve` on a free loopback port with a temporary SQLite inbox. With `amqp` ({url, prefix}),
 * it consumes `${prefix}.events` from the topic exchange `${prefix}.x` (bound to `stage.*` and `student.*`),
 * dead-lettering to `${prefix}.dead`.
 */
export async function startHerald({ amqp } = {}) {
  const bin = resolve(CONSOLE, process.env.HERALD_BIN ?? '../target/debug/herald');
  if (!existsSync(bin)) throw new Error(`no Herald binary at ${bin}: run \`cargo build --bin herald\` or set HERALD_BIN`);
  if (!existsSync(join(DIST, 'index.html'))) throw new Error(`no built console in ${DIST}: run \`npm run build\``);
  const dir = mkdtempSync(join(tmpdir(), 'herald-console-e2e-'));
  const s = (v) => JSON.stringify(v); // a JSON string is a valid TOML basic string
  const key = (id, k, scopes) => ['[[auth.service_keys]]', `id = ${s(id)}`, `key = ${s(k)}`, `scopes = ${s(scopes)}`];
  const lines = [
    'profile = "development"',
    '[server]',
    'bind = "127.0.0.1:0"',
    `admin_dir = ${s(DIST)}`,
    'demo_dir = ""',
    'shutdown_grace_secs = 1',
    '[log]',
    'format = "json"',
    '[auth]',
    'dev_token_endpoint = true',
    ...key('ops', KEYS.admin, ['admin', 'inbox:read', 'inbox:write']),
    ...key('publisher', KEYS.publisher, ['publish']),
    ...key('reader', KEYS.reader, ['inbox:read']),
    '[websocket]',
    'allowed_origins = ["*"]',
    '[store]',
    `url = ${s(`sqlite://${join(dir, 'herald.db')}`)}`,
    'synchronous = "normal"',
    '[rules]',
    `path = ${s(join(REPO, 'config', 'rules.toml'))}`,
  ];
  if (amqp) {
    lines.push(
      '[amqp]',
      'enabled = true',
      `url = ${s(amqp.url)}`,
      'reconnect_max_ms = 1000',
      '[amqp.queue]',
      `name = ${s(`${amqp.prefix}.events`)}`,
      `dead_letter_exchange = ${s(`${amqp.prefix}.dlx`)}`,
      `dead_letter_queue = ${s(`${amqp.prefix}.dead`)}`,
      '[[amqp.exchanges]]',
      `name = ${s(`${amqp.prefix}.x`)}`,
      'type = "topic"',
      'durable = false',
      'bindings = ["stage.*", "student.*"]',
    );
  }
  writeFileSync(join(dir, 'herald.toml'), lines.join('\n') + '\n');
  mkdirSync(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, 'herald.log'));
  const child = spawn(bin, ['serve', '--config', join(dir, 'herald.toml')], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  child.stderr.pipe(log, { end: false });
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error('Herald did not print its address within 20 s')), 20_000);
    let buf = '';
    child.stdout.on('data', (chunk) => {
      log.write(chunk);
      buf += chunk;
      const m = buf.match(/herald listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`Herald exited with ${code} before listening; see ${join(ARTIFACTS, 'herald.log')}`));
    });
  });
  return {
    url,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      log.end();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Headless chromium with a fresh profile. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM} (apt-get install chromium)`);
  const profile = mkdtempSync(join(tmpdir(), 'herald-console-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
    viewport: { width: 1280, height: 860 },
    deviceScaleFactor: 1,
    colorScheme: 'light',
    reducedMotion: 'reduce',
  });
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Poll `fn` until it returns a truthy value. */
export async function until(what, fn, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** A REST call from Node with a bearer. */
export async function api(base, method, path, bearer, body, headers = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}
