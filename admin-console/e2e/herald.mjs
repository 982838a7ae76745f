// Test helpers: a real Herald serving the built console at /admin (with RabbitMQ ingest when
// HERALD_TEST_AMQP_URL is set), and Debian's chromium driven by playwright-core.
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { heraldProcess, launchChromium, tomlString, until as pollUntil } from '../../scripts/lib/herald-e2e.mjs';

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
/**
 * The shipped rules; with `amqp`, the MedTrack rules (which name the exchanges MedTrack publishes on) also take
 * the test's own exchange, as an operator adds theirs. Returns the file's path.
 */
function rulesFor(dir, amqp) {
  const shipped = join(REPO, 'config', 'rules.toml');
  if (!amqp) return shipped;
  const medtrack = 'exchanges = ["events.topic", "medtrack.events", ""]';
  const text = readFileSync(shipped, 'utf8');
  if (!text.includes(medtrack)) throw new Error(`config/rules.toml no longer has ${medtrack}`);
  const path = join(dir, 'rules.toml');
  writeFileSync(path, text.replaceAll(medtrack, `exchanges = ["events.topic", "medtrack.events", "", "${amqp.prefix}.x"]`));
  return path;
}

export async function startHerald({ amqp } = {}) {
  const bin = resolve(CONSOLE, process.env.HERALD_BIN ?? '../target/debug/herald');
  if (!existsSync(bin)) throw new Error(`no Herald binary at ${bin}: run \`cargo build --bin herald\` or set HERALD_BIN`);
  if (!existsSync(join(DIST, 'index.html'))) throw new Error(`no built console in ${DIST}: run \`npm run build\``);
  const dir = mkdtempSync(join(tmpdir(), 'herald-console-e2e-'));
  const s = tomlString;
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
    `path = ${s(rulesFor(dir, amqp))}`,
  ];
  if (amqp) {
    lines.push(
      '[amqp]',
      'enabled = true',
      `url = ${s(amqp.url)}`,
      'reconnect_max_ms = 1000',
      // An unresolved recipient waits once, a second, before it is dead-lettered.
      'unresolved_retries = 1',
      'unresolved_retry_delay_secs = 1',
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
  const herald = heraldProcess({ bin, dir, artifacts: ARTIFACTS });
  const url = await herald.launch();
  return {
    url,
    async stop() {
      await herald.close();
    },
  };
}

/** Headless chromium with a fresh profile. */
export async function launchBrowser() {
  return launchChromium(chromium, {
    executablePath: CHROMIUM,
    profilePrefix: 'herald-console-chromium-',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
}

/** Poll `fn` until it returns a truthy value. */
export const until = (what, fn, timeoutMs = 15_000) => pollUntil(what, fn, timeoutMs, 150);

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
