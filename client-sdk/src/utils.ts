/** Small pure helpers: reconnect delays and URLs. */
import type { Position } from './cursors';

export interface BackoffOptions {
  minDelayMs: number;
  maxDelayMs: number;
}

/** Defaults as in centrifuge-js. */
export const DEFAULT_BACKOFF: BackoffOptions = { minDelayMs: 500, maxDelayMs: 20_000 };

/**
 * Delay before reconnect attempt `attempt` (0-based), with full jitter: a uniformly random point in
 * `[min, min + min(max, min * 2^attempt)]`, never more than `max`. The ceiling doubles per attempt, and the
 * randomness spreads a crowd of clients that lost the same server. `random` is injectable for tests.
 */
export function backoff(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const { minDelayMs: min, maxDelayMs: max } = opts;
  const step = Math.min(Math.max(0, Math.floor(attempt)), 31);
  const ceiling = Math.min(max, min * 2 ** step);
  return Math.min(max, Math.floor(min + random() * ceiling));
}

/**
 * Delay before coming back after close 4029 (too many sessions for this user on the node): a uniformly random
 * point in the upper half of `[0, max]`, whatever the attempt, so evicted tabs neither return at once nor
 * together.
 */
export function longBackoff(opts: BackoffOptions, random: () => number = Math.random): number {
  const { minDelayMs: min, maxDelayMs: max } = opts;
  return Math.max(min, Math.floor(max / 2 + (random() * max) / 2));
}

/** The gateway's bound on a user id (`event::MAX_ID_LEN`): UTF-8 bytes. */
export const MAX_USER_ID_BYTES = 256;

/**
 * Bytes of `s` in UTF-8, counted without `TextEncoder` (absent from some embedded and test globals); a lone
 * surrogate counts as the 3 bytes of the U+FFFD it is encoded as.
 */
export function utf8Length(s: string): number {
  let n = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return n;
}

/**
 * The user id as the gateway names it, or a `RangeError` for one no inbox can have (the gateway's rule: not
 * empty, at most 256 UTF-8 bytes, no control character). Every connect and request would be refused, and
 * a socket refused with 400 or 404 looks like a network failure to a browser: thrown here instead of retried.
 */
export function checkUserId(userId: string | number): string {
  if (typeof userId === 'number' && !Number.isSafeInteger(userId)) {
    throw new RangeError(`userId: ${userId} is not an integer id (pass a string)`);
  }
  const id = String(userId);
  if (id.length === 0) throw new RangeError('userId: the user id is empty');
  const bytes = utf8Length(id);
  if (bytes > MAX_USER_ID_BYTES) {
    throw new RangeError(`userId: the user id is ${bytes} bytes, over the ${MAX_USER_ID_BYTES}-byte limit`);
  }
  if (/[\u0000-\u001f\u007f-\u009f]/.test(id)) throw new RangeError('userId: the user id holds a control character');
  return id;
}

/**
 * The gateway's base URL as the client is made: absolute `http(s)` (the REST inbox is fetched from it, the socket's
 * `ws(s)` URL derived from it). A relative or unrendered one (`/herald`, `{{ HERALD_URL }}`) throws a `RangeError`
 * rather than leave the client connecting for ever.
 */
export function checkUrl(base: string): void {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new RangeError(`url: ${JSON.stringify(base)} is not an absolute URL (give the gateway's http(s) base)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RangeError(`url: ${JSON.stringify(base)} is not an http(s) URL`);
  }
}

function join(base: string, path: string): URL {
  const url = new URL(base);
  url.pathname = url.pathname.replace(/\/+$/, '') + path;
  return url;
}

/**
 * `http://host/x` → `ws://host/x/ws/{userId}?token=…&since=<targeted>&since_broadcast=<broadcast>`
 * (`https` → `wss`); no `token` when it is `null` (sent as a sub-protocol instead); no cursors without a
 * position (the session starts live).
 */
export function wsUrl(base: string, userId: string, token: string | null, position: Position | null): string {
  const url = join(base, `/ws/${encodeURIComponent(userId)}`);
  url.protocol = url.protocol.replace(/^http/, 'ws');
  if (token !== null) url.searchParams.set('token', token);
  if (position !== null) {
    url.searchParams.set('since', String(position.targeted));
    url.searchParams.set('since_broadcast', String(position.broadcast));
  }
  return url.toString();
}

/** `http://host/x` → `http://host/x/api/v1{path}` with the defined query parameters. */
export function apiUrl(
  base: string,
  path: string,
  query: Record<string, string | number | boolean | undefined> = {},
): string {
  const url = join(base, `/api/v1${path}`);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
  return url.toString();
}
