/**
 * Runs a real Herald gateway for the integration tests: `herald serve --config <tmp>/herald.toml`, port parsed
 * from the `herald listening on http://ADDR` line. Also mints JWTs and posts events like a service would.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import WebSocket from 'ws';
import { HeraldClient, type EventBodyMap, type HeraldClientOptions } from '../../src';

export const HERALD_BIN = resolve(process.env.HERALD_BIN ?? join(__dirname, '../../../target/debug/herald'));
// The gateway refuses HS256 secrets shorter than 16 bytes.
export const JWT_SECRET = 'test-secret-herald-sdk';
export const SERVICE_KEY = 'test-service-key';
export const FIXTURES = join(__dirname, '../../../tests/fixtures/events');

/** Why the gateway cannot be run (the suite is skipped), or null when it can. */
export function gatewayUnavailable(): string | null {
  if (!existsSync(HERALD_BIN)) return `HERALD_BIN ${HERALD_BIN} does not exist (build the gateway or set HERALD_BIN)`;
  const help = spawnSync(HERALD_BIN, ['serve', '--help'], { encoding: 'utf8', timeout: 10_000 });
  const text = `${help.stdout ?? ''}${help.stderr ?? ''}`;
  if (help.status !== 0 || !text.includes('--config')) {
    return `\`${HERALD_BIN} serve --help\` does not describe --config (exit ${help.status}): not a runnable gateway yet`;
  }
  return null;
}

/** Skip a suite with a printed reason when the gateway cannot run. */
export function skipReason(suite: string): string | null {
  const reason = gatewayUnavailable();
  if (reason) console.warn(`[${suite}] integration tests skipped: ${reason}`);
  return reason;
}

export interface Gateway {
  url: string;
  port: number;
  dir: string;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM (graceful) or SIGKILL; resolves when the process has exited. */
  stop: (signal?: NodeJS.Signals) => Promise<void>;
}

export function tempDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'herald-sdk-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Start a gateway on `port` (0 = any) with its SQLite file in `dir`. `extra` is appended TOML. */
export async function startGateway(dir: string, port = 0, extra = ''): Promise<Gateway> {
  const config = join(dir, 'herald.toml');
  writeFileSync(
    config,
    `[server]
bind = "127.0.0.1:${port}"

[store]
url = "sqlite://${join(dir, 'herald.db')}"

[auth]
jwt_secret = "${JWT_SECRET}"
service_keys = ["${SERVICE_KEY}"]
${extra}
`,
  );
  const proc = spawn(HERALD_BIN, ['serve', '--config', config], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', RUST_BACKTRACE: '0', RUST_LIB_BACKTRACE: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<void>((res) => proc.once('exit', () => res()));
  const url = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`gateway did not print its address within 20s:\n${out}`)), 20_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /herald listening on (http:\/\/[\w.:[\]-]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        res(m[1]!);
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      rej(new Error(`gateway exited (${code ?? signal}) before listening:\n${out}`));
    });
  });
  // Keep draining output so the pipes never fill up.
  return {
    url,
    port: Number(new URL(url).port),
    dir,
    proc,
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

const b64url = (s: string | Buffer) => Buffer.from(s).toString('base64url');

/** An HS256 JWT for `sub`, expiring in `expiresInSec`. */
export function mintToken(sub: string, expiresInSec = 3600, secret = JWT_SECRET): string {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub, iat: now, exp: now + expiresInSec }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export interface IngestResult {
  event_id: string;
  status: string;
  notification_ids: number[];
}

/** POST one event as a service; returns the ingest results (throws unless 202). */
export async function postEvent(gw: Gateway, body: unknown, exchange = '', routingKey = ''): Promise<IngestResult[]> {
  const url = new URL('/api/v1/events', gw.url);
  url.searchParams.set('exchange', exchange);
  url.searchParams.set('routing_key', routingKey);
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${SERVICE_KEY}`,
      'content-type': 'application/json',
      'idempotency-key': randomUUID(),
    },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 202) throw new Error(`POST /api/v1/events → ${res.status}: ${text}`);
  return (JSON.parse(text) as { results: IngestResult[] }).results;
}

let counter = 0;
/** The simplest event that becomes one notification for `userId` (an sgad.notifications fanout message). */
export async function notify(
  gw: Gateway,
  userId: string,
  title = `t${++counter}`,
): Promise<{ id: number; body: SgadBody }> {
  const body: SgadBody = { user_id: userId, title, message: `m ${title}`, type: 'info' };
  const results = await postEvent(gw, body, 'sgad.notifications');
  const id = results[0]?.notification_ids[0];
  if (results[0]?.status !== 'stored' || id === undefined) throw new Error(`not stored: ${JSON.stringify(results)}`);
  return { id, body };
}
/** A broadcast (an sgad.notifications message for "system"): one notification in every user's inbox. */
export function broadcast(gw: Gateway, title?: string): Promise<{ id: number; body: SgadBody }> {
  return notify(gw, 'system', title);
}

export interface SgadBody {
  user_id: string;
  title: string;
  message: string;
  type: string;
}

export function fixture(name: string): { exchange: string; routing_key: string; body: unknown } {
  return JSON.parse(readFileSync(join(FIXTURES, name), 'utf8'));
}

export const newUser = () => `user-${randomUUID()}`;

/** A client for `userId` against `gw` (Node `ws`, fast backoff), tokens minted per call. */
export function testClient<M extends object = EventBodyMap>(
  gw: { url: string },
  userId: string,
  extra: Partial<HeraldClientOptions> = {},
): HeraldClient<M> {
  return new HeraldClient<M>({
    url: gw.url,
    userId,
    getToken: async () => mintToken(userId),
    WebSocket,
    backoff: { minDelayMs: 50, maxDelayMs: 500 },
    ...extra,
  });
}
