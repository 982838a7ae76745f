/** Public types: options, the connection state, and the typed event map. */
import type { HeraldError } from './errors';
import type { Since } from './cursors';
import type { Notification } from './protocol';
import type { BackoffOptions } from './utils';

export enum State {
  Disconnected = 'disconnected',
  Connecting = 'connecting',
  Connected = 'connected',
  /**
   * Terminal: the server refused the token or the origin (HTTP 401/403 at the handshake), or `getToken()` failed
   * `maxTokenFailures` times in a row. No reconnect until `connect()` is called again (with a token that works):
   * see the `unauthorized` event.
   */
  Unauthorized = 'unauthorized',
}

/**
 * Maps an `event_type` to the type of the original event `body`, e.g.
 * `{ 'stage.accepted': { payload: { stage_id: string } } }`. The default types every body as `unknown`.
 */
export type EventBodyMap = Record<string, unknown>;

/** Payload of the `notification` event: a union discriminated by `eventType`, so `body` narrows. */
export type NotificationContext<M extends object = EventBodyMap> = {
  [K in keyof M & string]: { eventType: K; body: M[K]; notification: Notification };
}[keyof M & string];

export interface StateContext {
  newState: State;
  oldState: State;
}
export interface LiveContext {
  eventType: string;
  title: string;
  content: string;
  body: unknown;
}
export interface ReadContext {
  ids: number[];
  readAt: string;
}
export interface ReadAllContext {
  upTo: number;
  readAt: string;
}
export interface DeletedContext {
  ids: number[];
}
/** `unread`, `archived`, `unarchived` frames: which notifications changed state. */
export interface IdsContext {
  ids: number[];
}
export interface SeenAllContext {
  upTo: number;
  seenAt: string;
}
/** The user's counters (archived and muted notifications count in neither). */
export interface CountsContext {
  unread: number;
  unseen: number;
}
/**
 * `token`: getToken() failed; `transport`: the socket failed or closed abnormally; `server`: the server sent an
 * `error` frame or a close code that means a client bug; `protocol`: a frame the SDK could not parse.
 */
/**
 * What the app fetched over REST (unread count, visible page) may be out of date: fetch it again.
 * `reconnect`: a session opened again after an earlier one (read state changed meanwhile is not replayed);
 * `resync`: the server dropped frames of this session (read state is not replayed); `truncated`: the replay
 * starts above pruned history (not announced when it follows a reconnect or a resync in the same catch-up: the
 * refetch they asked for covers it).
 */
export interface StaleContext {
  reason: 'reconnect' | 'resync' | 'truncated';
}
/**
 * The client stopped (state `unauthorized`) because it cannot authenticate:
 * - the handshake was refused: `status` `401` (missing, invalid or expired token) or `403` (a token for another
 *   user, or a foreign `Origin`). `via` says how the SDK learned it: `handshake` (the WebSocket implementation
 *   exposed the HTTP status, as the `ws` package does) or `probe` (browsers hide the status: after a socket
 *   closed before opening, a REST request with the same token answered 401/403). `error.code` is the server's
 *   reason when the REST probe (`GET …/unread_count`, same token) gave one (`token_expired`,
 *   `invalid_credentials`, `missing_credentials`, `forbidden`), else `unauthorized` / `forbidden`.
 * - `via: 'token'`, `status` `0`: `getToken()` failed `maxTokenFailures` times in a row (while the browser was
 *   online); `error` is its last failure.
 */
export interface UnauthorizedContext {
  status: 401 | 403 | 0;
  via: 'handshake' | 'probe' | 'token';
  error: HeraldError;
}
/** The server dropped frames of this session (`resync` frame): it replays from (`since`, `sinceBroadcast`). */
export interface ResyncContext {
  reason: string;
  since: number;
  sinceBroadcast: number;
}
/** The replay that follows, or the rest of the one under way, starts above pruned history (`truncated` frame): ids below `oldestId` are gone. */
export interface TruncatedContext {
  since: number;
  sinceBroadcast: number;
  oldestId: number;
}
export interface ErrorContext {
  kind: 'token' | 'transport' | 'server' | 'protocol';
  error: HeraldError;
}

export interface ClientEvents<M extends object = EventBodyMap> {
  state: StateContext;
  notification: NotificationContext<M>;
  read: ReadContext;
  read_all: ReadAllContext;
  deleted: DeletedContext;
  /** Marked unread again (here or in another tab). */
  unread: IdsContext;
  archived: IdsContext;
  unarchived: IdsContext;
  /** The bell was opened (here or in another tab): everything up to `upTo` is seen. */
  seen_all: SeenAllContext;
  /** The counters changed (also sent once after each `ready` and `replayed`). */
  counts: CountsContext;
  /** The user's inbox was erased on the server: clear what is shown. */
  purged: Record<string, never>;
  /** Refetch counts and pages (see {@link StaleContext}). */
  stale: StaleContext;
  /** A live-only event (not stored, not in the inbox): e.g. SGAD's "refresh the availability list". */
  live: LiveContext;
  /** The server refused the token or origin: the client stopped in state `unauthorized`. */
  unauthorized: UnauthorizedContext;
  /** A `resync` frame (a `stale` event with reason `resync` follows). */
  resync: ResyncContext;
  /** A `truncated` frame (a `stale` event with reason `truncated` follows unless one was already emitted). */
  truncated: TruncatedContext;
  error: ErrorContext;
}

/** The part of the WebSocket API the client uses: browsers' WebSocket and the `ws` package both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
/** `protocols` is `['bearer', <jwt>]` unless the `tokenIn: 'query'` option is set. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface HeraldClientOptions {
  /** Base http(s) URL of the gateway, e.g. `https://herald.example.com` (not absolute: a `RangeError`). */
  url: string;
  /**
   * The user whose inbox and session this is: what the token's `sub` names. An id no inbox can have (empty,
   * over 256 UTF-8 bytes, a control character, a number that is not a safe integer) throws a `RangeError`.
   */
  userId: string | number;
  /** Called before every (re)connect and every REST call: return a current JWT. */
  getToken: () => Promise<string>;
  /** WebSocket constructor; defaults to `globalThis.WebSocket` (in Node 20 pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** fetch implementation; defaults to `globalThis.fetch`. */
  fetch?: FetchLike;
  /** Reconnect delays; defaults 500 ms … 20 s. */
  backoff?: Partial<BackoffOptions>;
  /**
   * Where the first connect resumes: a position `{ targeted, broadcast }` (what `client.position` returned
   * earlier), or one id for both chains (the v1 form). Without it, the first connect starts live from the
   * `ready` frame's latest ids; later reconnects always resume from `client.position`.
   */
  since?: Since;
  /**
   * How the token reaches the WebSocket handshake. `protocol` (default): in `Sec-WebSocket-Protocol` as
   * `bearer, <jwt>` (the server answers `bearer`), so it stays out of URLs and access logs. `query`:
   * `?token=<jwt>`, for an older gateway that does not read the sub-protocol.
   */
  tokenIn?: 'protocol' | 'query';
  /**
   * A socket that has not opened after this long is closed and retried with the usual backoff (default
   * 10 000 ms; 0 disables it). `getToken()` gets as long: one that has not settled by then counts as the token
   * service out of reach (a `token` error of code `timeout`), retried with backoff like any other.
   */
  connectTimeoutMs?: number;
  /**
   * A REST request (`list()`, `markRead()`, …) that has not been answered after this long is aborted and rejects
   * with a `HeraldError` of code `timeout` (default 15 000 ms; 0 disables it).
   */
  requestTimeoutMs?: number;
  /**
   * After this many `getToken()` failures in a row (not counted while the browser is offline, nor those that say
   * the token service was out of reach: `fetch`'s `TypeError`, an abort or timeout, a 5xx, 408 or 429 `status` on
   * the error, which are retried for ever) the client stops
   * in state `unauthorized` (event `unauthorized` with `via: 'token'`) instead of retrying (default 5; 0 retries
   * for ever).
   */
  maxTokenFailures?: number;
  /** Log to console.debug (including frames of a type this SDK does not know, which are ignored). */
  debug?: boolean;
}
