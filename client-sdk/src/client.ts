/**
 * HeraldClient: one WebSocket session that stays up, plus the REST inbox.
 *
 * Invariants:
 * - `state` changes only in `_setState`, which emits the single `state` event.
 * - Every (re)connect calls getToken() and resumes from the position: one cursor per chain (targeted,
 *   broadcast), `since` and `since_broadcast`, so nothing is missed; Cursors drops what arrives twice. Ids are
 *   never compared across chains (a broadcast may overtake a targeted notification with a smaller id).
 * - Gaps are the server's job: it replays a chain before a frame whose `prev_id` is above the session's cursor,
 *   so the client never reconnects because of a `prev_id`.
 * - `stale` (refetch counts and pages) is emitted on every `ready` but the first, on `resync`, and on a
 *   `truncated` unless one was emitted with no notification since (a `truncated` right after `ready` or `resync`
 *   is covered by the refetch already asked for; one after replayed rows — retention overtook the replay — is not).
 * - The backoff grows with each failed attempt, a session closed soon after `ready` included; it resets once a
 *   session has stayed up one ping interval.
 * - `token_expiring` is answered in-band (`auth` with a fresh token); a 4001 close reconnects at once.
 * - At most one socket is live; handlers of a dropped socket are detached, so a stale socket never acts.
 * - `close()` (or a 1000 close from the server) stops reconnecting until the next `connect()`.
 * - A refused handshake (401/403) is terminal: state `unauthorized`, no reconnect until the next `connect()`.
 *   The status comes from the WebSocket implementation when it shows it (the `ws` package's error says
 *   `Unexpected server response: 401`); browsers hide it, so a socket that closes before opening is followed by
 *   one REST probe (`GET …/unread_count`) with the same token: 401/403 there means the same refusal.
 * - A socket that has not opened within `connectTimeoutMs` is dropped and retried with the usual backoff.
 * - Dead link: a session must answer within twice the default ping interval (`ready`), then within one ping
 *   interval of each `ping` the client sends (any frame counts). The deadline runs from OUR ping, not from the
 *   last frame: a background tab whose timers the browser throttles (Chrome runs them about once a minute) pings
 *   less often, and a quiet link is not taken for a dead one.
 */
import { Cursors, type Position } from './cursors';
import { Emitter } from './emitter';
import { HeraldError, toHeraldError } from './errors';
import {
  CloseCode,
  parseServerFrame,
  type BatchAction,
  type PreferenceChange,
  type PreferenceValue,
  type ServerFrame,
} from './protocol';
import { Inbox, type ListOptions } from './rest';
import { apiUrl, checkUrl, checkUserId } from './utils';
import {
  State,
  type ClientEvents,
  type EventBodyMap,
  type ErrorContext,
  type HeraldClientOptions,
  type NotificationContext,
  type StaleContext,
  type WebSocketConstructor,
  type WebSocketLike,
} from './types';
import { DEFAULT_BACKOFF, backoff, longBackoff, wsUrl, type BackoffOptions } from './utils';

/** Until `ready` says otherwise (the gateway's default). */
const DEFAULT_PING_INTERVAL_MS = 25_000;
/** Close codes that mean the client sent something wrong: reported as errors (reconnecting still happens). */
const CLIENT_BUG_CODES: readonly number[] = [CloseCode.Unsupported, CloseCode.PolicyViolation, CloseCode.TooLarge];
/** Close codes that mean the server cannot serve this session now: reported as errors, then reconnect later. */
const SERVER_TROUBLE_CODES: readonly number[] = [
  CloseCode.InternalError,
  CloseCode.TryAgainLater,
  CloseCode.TooManySessions,
];

/** No close frame: the network failed, or the handshake was refused (browsers hide the HTTP status). */
const ABNORMAL_CLOSE = 1006;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** getToken() failures in a row that stop the client (state `unauthorized`, `via: 'token'`). */
const DEFAULT_MAX_TOKEN_FAILURES = 5;

/** The browser says it has no network (`navigator.onLine`); false where nobody knows (Node). */
function isOffline(): boolean {
  return typeof navigator !== 'undefined' && navigator.onLine === false;
}
/**
 * A `getToken()` failure that says the token service could not be reached, not that it refused: `fetch`'s
 * `TypeError` (network, DNS), an abort or timeout, or an error carrying a `status` of 5xx, 408 or 429 (a
 * `HeraldError`, or an app's own). These are retried for ever; only other failures count toward
 * `maxTokenFailures`.
 */
function tokenServiceUnreachable(e: unknown): boolean {
  if (e instanceof TypeError) return true;
  if (typeof e !== 'object' || e === null) return false;
  const { name, status, code } = e as { name?: unknown; status?: unknown; code?: unknown };
  if (name === 'AbortError' || name === 'TimeoutError') return true;
  if (code === 'timeout' || code === 'network_error') return true;
  return typeof status === 'number' && (status >= 500 || status === 408 || status === 429);
}
/** RFC 7230 `token`: what a `Sec-WebSocket-Protocol` value may hold. */
const SUBPROTOCOL_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What the `ws` package (and Node's) error says for a refused handshake. */
const REFUSED_HANDSHAKE = /\bserver response:? (401|403)\b/i;

type Timer = ReturnType<typeof setTimeout>;

export class HeraldClient<M extends object = EventBodyMap> extends Emitter<ClientEvents<M>> {
  private _state = State.Disconnected;
  private readonly _opts: HeraldClientOptions;
  private readonly _backoff: BackoffOptions;
  /** `options.userId` as the gateway names it (checked). */
  private readonly _userId: string;
  private readonly _inbox: Inbox;
  private _cursors: Cursors;
  private _ws: WebSocketLike | null = null;
  /** Bumped on every connect attempt and on close(): async work from an older attempt is ignored. */
  private _epoch = 0;
  /** Failed attempts since the last session that stayed up (one ping interval after its `ready`). */
  private _attempt = 0;
  /** A session got ready before: the next `ready` is a reconnect (the app's REST data may be stale). */
  private _wasReady = false;
  /**
   * `stale` was emitted and no notification came since (until `replayed` or a notification): a `truncated` now
   * is covered by the refetch already asked for; one after replayed rows is announced.
   */
  private _staleAnnounced = false;
  private _refreshingToken = false;
  private _pingIntervalMs = DEFAULT_PING_INTERVAL_MS;
  private _reconnectTimer: Timer | null = null;
  private _pingTimer: ReturnType<typeof setInterval> | null = null;
  private _deadTimer: Timer | null = null;
  private _connectTimer: Timer | null = null;
  /** Runs for one ping interval after `ready`: a session that stays up that long resets the backoff. */
  private _stableTimer: Timer | null = null;
  /** getToken() failures in a row (reset by a token that works): `maxTokenFailures` of them stop the client. */
  private _tokenFailures = 0;
  private _onOnline = (): void => this._reconnectNow('online');
  private _onOffline = (): void => this._wentOffline();

  constructor(options: HeraldClientOptions) {
    super();
    this._opts = options;
    const userId = (this._userId = checkUserId(options.userId));
    checkUrl(options.url);
    this._backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this._cursors = new Cursors(options.since ?? null);
    this._inbox = new Inbox(options.url, userId, options.getToken, options.fetch, options.requestTimeoutMs);
  }

  get state(): State {
    return this._state;
  }

  /**
   * Where the next (re)connect resumes: the last id received in each chain (`null` before the first `ready`
   * when no `since` was given). Persist it and pass it back as the `since` option to resume in a new page.
   */
  get position(): Position | null {
    return this._cursors.position;
  }

  /**
   * The greater of the two cursors of {@link position} (`null` before the first `ready`).
   * @deprecated A single id cannot say where a client is (the chains are not ordered with each other): use
   * `position`. Passing it back as `since` can miss a targeted notification overtaken by a broadcast.
   */
  get lastSeenId(): number | null {
    const p = this._cursors.position;
    return p && Math.max(p.targeted, p.broadcast);
  }

  /** Start the session (and keep it up). No-op unless disconnected or unauthorized. */
  connect(): void {
    if (this._state !== State.Disconnected && this._state !== State.Unauthorized) return;
    if (typeof window !== 'undefined') {
      window.addEventListener?.('online', this._onOnline);
      window.addEventListener?.('offline', this._onOffline);
    }
    this._tokenFailures = 0;
    this._setState(State.Connecting);
    void this._open();
  }

  /** Stop for good: close the socket, cancel timers, no reconnect until `connect()` is called again. */
  close(): void {
    this._stop(State.Disconnected);
  }

  private _stop(next: State.Disconnected | State.Unauthorized): void {
    this._epoch++;
    if (typeof window !== 'undefined') {
      window.removeEventListener?.('online', this._onOnline);
      window.removeEventListener?.('offline', this._onOffline);
    }
    this._dropSocket(CloseCode.Normal, 'client closed');
    this._clearTimer('_reconnectTimer');
    this._attempt = 0;
    this._setState(next);
  }

  // REST inbox (works whether or not the socket is connected).
  list(opts?: ListOptions) {
    return this._inbox.list(opts);
  }
  unreadCount() {
    return this._inbox.unreadCount();
  }
  markRead(id: number) {
    return this._inbox.markRead(id);
  }
  markAllRead() {
    return this._inbox.markAllRead();
  }
  delete(id: number) {
    return this._inbox.delete(id);
  }
  /** One action (`read`, `unread`, `archive`, `unarchive`, `delete`) on up to 100 notifications, in one commit. */
  batch(action: BatchAction, ids: number[]) {
    return this._inbox.batch(action, ids);
  }
  markUnread(id: number) {
    return this._inbox.markUnread(id);
  }
  archive(id: number) {
    return this._inbox.archive(id);
  }
  unarchive(id: number) {
    return this._inbox.unarchive(id);
  }
  /** The bell was opened: the unseen count drops to 0 (a `counts` frame tells every tab). */
  markAllSeen() {
    return this._inbox.markAllSeen();
  }
  /** `{ unread, unseen }` over REST; a connected client gets them pushed (`counts` event) instead. */
  counts() {
    return this._inbox.counts();
  }
  getPreferences() {
    return this._inbox.getPreferences();
  }
  setPreferences(types: Record<string, PreferenceValue>) {
    return this._inbox.setPreferences(types);
  }
  /** Changes only the types named (`'default'`: back to the configured default); the others keep their setting. */
  patchPreferences(types: Record<string, PreferenceChange>) {
    return this._inbox.patchPreferences(types);
  }

  private _setState(next: State): void {
    if (next === this._state) return;
    const oldState = this._state;
    this._state = next;
    this._log('state', oldState, '→', next);
    this._emit('state', { newState: next, oldState });
  }

  private async _open(): Promise<void> {
    const epoch = ++this._epoch;
    const Ctor: WebSocketConstructor | undefined =
      this._opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) {
      this._error(
        'transport',
        new HeraldError(0, 'no_websocket', 'no WebSocket implementation: pass the `WebSocket` option'),
      );
      this.close();
      return;
    }
    let token: string;
    try {
      token = await this._token();
    } catch (e) {
      if (epoch !== this._epoch) return;
      const error = toHeraldError(e, 'token_error');
      this._error('token', error);
      // Offline, or the token service out of reach: that is the network, not the sign-in.
      if (!isOffline() && !tokenServiceUnreachable(e)) this._tokenFailures++;
      const max = this._opts.maxTokenFailures ?? DEFAULT_MAX_TOKEN_FAILURES;
      if (max > 0 && this._tokenFailures >= max) {
        this._log('getToken() failed', this._tokenFailures, 'times in a row: stopping');
        this._stop(State.Unauthorized);
        this._emit('unauthorized', { status: 0, via: 'token', error });
        return;
      }
      this._scheduleReconnect();
      return;
    }
    if (epoch !== this._epoch) return; // close() or another attempt happened while waiting for the token
    this._tokenFailures = 0;
    // A sub-protocol must be an HTTP token (a JWT always is): anything else could only travel in the query.
    const inQuery = this._opts.tokenIn === 'query' || !SUBPROTOCOL_TOKEN.test(token);
    const url = wsUrl(this._opts.url, this._userId, inQuery ? token : null, this._cursors.position);
    this._staleAnnounced = false;
    this._log('connecting', url.replace(/token=[^&]*/, 'token=…'));
    let ws: WebSocketLike;
    try {
      ws = inQuery ? new Ctor(url) : new Ctor(url, ['bearer', token]);
    } catch (e) {
      this._error('transport', toHeraldError(e, 'transport_error'));
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._armDeadTimer(2 * this._pingIntervalMs); // for `ready`
    this._armConnectTimer();
    let opened = false;
    let refused: 401 | 403 | null = null;
    ws.onopen = () => {
      opened = true;
      this._clearTimer('_connectTimer');
    };
    ws.onmessage = (ev: { data: unknown }) => this._onMessage(typeof ev.data === 'string' ? ev.data : String(ev.data));
    ws.onclose = (ev: { code: number; reason?: string }) => {
      if (!opened && ev.code === ABNORMAL_CLOSE) void this._onRefusedOrFailed(epoch, token, refused, ev.reason ?? '');
      else this._onClose(ev.code, ev.reason ?? '');
    };
    ws.onerror = (ev: { message?: unknown; error?: { message?: unknown } } | undefined) => {
      // A close event always follows; it decides what happens. Keep the status if the error shows one.
      const text = `${ev?.message ?? ''} ${ev?.error?.message ?? ''}`;
      const m = REFUSED_HANDSHAKE.exec(text);
      if (m) refused = Number(m[1]) as 401 | 403;
    };
  }

  /**
   * A socket closed abnormally before it opened: the network, a down server, or a refused handshake. A known
   * 401/403 stops at once; otherwise one REST probe with the same token tells a refusal from a failure.
   */
  private async _onRefusedOrFailed(
    epoch: number,
    token: string,
    refused: 401 | 403 | null,
    reason: string,
  ): Promise<void> {
    this._ws = null;
    this._stopLinkTimers();
    // The REST probe: for the status when the WebSocket hid it, and for the server's reason (`token_expired`…)
    // in its body either way (neither browsers nor the `ws` package show the handshake's body).
    const probe = await this._probe(token);
    if (epoch !== this._epoch) return; // close() or connect() happened meanwhile
    const status = probe?.status;
    if (refused !== null) {
      const same = status === refused;
      let text = `the server refused the handshake (${refused})`;
      if (same && probe?.message) text += `: ${probe.message}`;
      else if (refused === 403 && status !== undefined && status < 400) {
        text += ": the token is accepted over REST, so the page's Origin is likely not in websocket.allowed_origins";
      }
      this._unauthorized(refused, 'handshake', same ? probe?.code : undefined, text);
      return;
    }
    if (status === 401 || status === 403) {
      const text = `the server refused the token (${status} from the REST probe)`;
      this._unauthorized(status, 'probe', probe?.code, probe?.message ? `${text}: ${probe.message}` : text);
      return;
    }
    this._onClose(ABNORMAL_CLOSE, reason);
  }

  /**
   * `GET …/unread_count` with `token`: its HTTP status and, for an error, the body's `error` code and `message`;
   * null when it could not be learned.
   */
  private async _probe(token: string): Promise<{ status: number; code?: string; message?: string } | null> {
    const fetchFn = this._opts.fetch ?? (globalThis as { fetch?: typeof fetch }).fetch;
    if (!fetchFn) return null;
    const url = apiUrl(this._opts.url, `/users/${encodeURIComponent(this._userId)}/notifications/unread_count`);
    const timeout = this._connectTimeoutMs();
    const signal = timeout > 0 && typeof AbortSignal?.timeout === 'function' ? AbortSignal.timeout(timeout) : undefined;
    try {
      const res = await fetchFn(url, {
        headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
        signal,
      });
      this._log('probe', res.status);
      if (res.ok) {
        void res.body?.cancel?.().catch(() => {});
        return { status: res.status };
      }
      let body: { error?: unknown; message?: unknown } = {};
      try {
        body = JSON.parse(await res.text()) as typeof body;
      } catch {
        // Not a JSON error body (a proxy's page): the status alone.
      }
      return {
        status: res.status,
        code: typeof body.error === 'string' ? body.error : undefined,
        message: typeof body.message === 'string' ? body.message : undefined,
      };
    } catch (e) {
      this._log('probe failed', e);
      return null;
    }
  }

  /** `code`: the server's reason (`token_expired`, `invalid_credentials`, …) when the probe learned it. */
  private _unauthorized(
    status: 401 | 403,
    via: 'handshake' | 'probe',
    code: string | undefined,
    message: string,
  ): void {
    const error = new HeraldError(status, code ?? (status === 401 ? 'unauthorized' : 'forbidden'), message);
    this._log('unauthorized', status, via);
    this._stop(State.Unauthorized);
    this._emit('unauthorized', { status, via, error });
  }

  private _connectTimeoutMs(): number {
    return this._opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  /**
   * `getToken()`, given up on after `connectTimeoutMs` (a `timeout` error, which counts as the token service out of
   * reach): a token request that never settles must not hold the client in `connecting`, or a refresh pending, for
   * ever.
   */
  private _token(): Promise<string> {
    const ms = this._connectTimeoutMs();
    let token: Promise<string>;
    try {
      token = Promise.resolve(this._opts.getToken()); // called now, as before: a caller may hold its resolver
    } catch (e) {
      return Promise.reject(e);
    }
    if (ms <= 0) return token;
    let timer: Timer | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HeraldError(0, 'timeout', `getToken() did not settle within ${ms} ms`)), ms);
    });
    return Promise.race([token, deadline]).finally(() => clearTimeout(timer));
  }

  /** The socket must open within `connectTimeoutMs`, or it is dropped and retried with backoff. */
  private _armConnectTimer(): void {
    this._clearTimer('_connectTimer');
    const ms = this._connectTimeoutMs();
    if (!(ms > 0)) return;
    this._connectTimer = setTimeout(() => {
      this._connectTimer = null;
      this._log('not open after', ms, 'ms: retrying');
      this._dropSocket(4000, 'connect timeout');
      this._error('transport', new HeraldError(0, 'connect_timeout', `the socket did not open within ${ms} ms`));
      this._scheduleReconnect();
    }, ms);
  }

  private _onMessage(text: string): void {
    this._clearTimer('_deadTimer'); // any traffic proves the link is alive: the next ping arms it again
    let frame: ServerFrame | null;
    try {
      frame = parseServerFrame(text);
    } catch (e) {
      this._error('protocol', toHeraldError(e, 'bad_frame'));
      return;
    }
    if (frame === null) {
      this._log('ignoring a frame of an unknown type:', text.slice(0, 80)); // a newer server
      return;
    }
    switch (frame.type) {
      case 'ready':
        // A session the server closes right after `ready` (its store timing out, say) is a failed attempt too:
        // the backoff resets only once the session has stayed up.
        this._pingIntervalMs = frame.ping_interval_ms > 0 ? frame.ping_interval_ms : DEFAULT_PING_INTERVAL_MS;
        this._clearTimer('_stableTimer');
        this._stableTimer = setTimeout(() => {
          this._stableTimer = null;
          this._attempt = 0;
        }, this._pingIntervalMs);
        const rolledBack = this._cursors.baseline(frame);
        if (rolledBack) this._log("position above the server's newest ids: resuming from them", frame);
        this._startPings();
        this._setState(State.Connected);
        if (this._wasReady || rolledBack) this._stale('reconnect');
        this._wasReady = true;
        break;
      case 'notification': {
        if (!this._cursors.accept(frame.notification)) {
          this._log('duplicate', frame.notification.id);
          return;
        }
        // A refetch asked for before this row may predate what retention prunes next: a later `truncated` says so.
        this._staleAnnounced = false;
        this._emit('notification', {
          eventType: frame.event_type,
          body: frame.body,
          notification: frame.notification,
        } as NotificationContext<M>);
        break;
      }
      case 'replayed':
        this._cursors.advance(frame);
        this._staleAnnounced = false;
        break;
      case 'resync':
        this._log('resync after', frame.since, frame.since_broadcast, frame.reason);
        this._emit('resync', { reason: frame.reason, since: frame.since, sinceBroadcast: frame.since_broadcast });
        this._stale('resync');
        break;
      case 'truncated':
        this._log('history before', frame.oldest_id, 'was pruned');
        this._emit('truncated', {
          since: frame.since,
          sinceBroadcast: frame.since_broadcast,
          oldestId: frame.oldest_id,
        });
        if (!this._staleAnnounced) this._stale('truncated');
        break;
      case 'token_expiring':
        void this._refreshToken();
        break;
      case 'auth_ok':
        this._log('token refreshed, session valid until', frame.expires_at);
        break;
      case 'read':
        this._emit('read', { ids: frame.ids, readAt: frame.read_at });
        break;
      case 'read_all':
        this._emit('read_all', { upTo: frame.up_to, readAt: frame.read_at });
        break;
      case 'deleted':
        this._emit('deleted', { ids: frame.ids });
        break;
      case 'unread':
      case 'archived':
      case 'unarchived':
        this._emit(frame.type, { ids: frame.ids });
        break;
      case 'seen_all':
        this._emit('seen_all', { upTo: frame.up_to, seenAt: frame.seen_at });
        break;
      case 'counts':
        this._emit('counts', { unread: frame.unread, unseen: frame.unseen });
        break;
      case 'purged':
        this._emit('purged', {});
        break;
      case 'event':
        this._emit('live', {
          eventType: frame.event_type,
          title: frame.title,
          content: frame.content,
          body: frame.body,
        });
        break;
      case 'error':
        this._error('server', new HeraldError(0, frame.code, frame.message));
        break;
      case 'pong':
        break;
    }
  }

  private _onClose(code: number, reason: string): void {
    this._log('closed', code, reason);
    this._ws = null;
    this._stopLinkTimers();
    if (code === CloseCode.Normal) {
      this.close();
      return;
    }
    if (code === ABNORMAL_CLOSE || SERVER_TROUBLE_CODES.includes(code) || CLIENT_BUG_CODES.includes(code)) {
      const why = reason || (code === ABNORMAL_CLOSE ? 'connection lost or refused' : `server closed the session`);
      this._error(
        code === ABNORMAL_CLOSE ? 'transport' : 'server',
        new HeraldError(0, `close_${code}`, `${why} (${code})`),
      );
    }
    // A 4001 on a working session: the token ran out, fetch a fresh one and come back at once.
    if (code === CloseCode.TokenExpired && this._attempt === 0) this._scheduleReconnect(0);
    // Too many sessions on this node (other tabs): come back much later, not in a loop.
    else if (code === CloseCode.TooManySessions) this._scheduleReconnect(longBackoff(this._backoff));
    else this._scheduleReconnect();
  }

  /** Tell the app to refetch what it shows. */
  private _stale(reason: StaleContext['reason']): void {
    this._staleAnnounced = true;
    this._emit('stale', { reason });
  }

  /** The server warned that the token is about to expire: hand it a fresh one without reconnecting. */
  private async _refreshToken(): Promise<void> {
    const ws = this._ws;
    if (!ws || this._refreshingToken) return;
    this._refreshingToken = true;
    try {
      const token = await this._token();
      if (this._ws === ws) this._send(JSON.stringify({ type: 'auth', token }));
    } catch (e) {
      // Not fatal: when the token runs out the server closes with 4001 and the reconnect tries again.
      this._error('token', toHeraldError(e, 'token_error'));
    } finally {
      this._refreshingToken = false;
    }
  }

  private _scheduleReconnect(delayMs?: number): void {
    this._setState(State.Connecting);
    const delay = delayMs ?? backoff(this._attempt, this._backoff);
    this._attempt++;
    this._log('reconnect in', delay, 'ms');
    this._clearTimer('_reconnectTimer');
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      void this._open();
    }, delay);
  }

  /**
   * The browser came back online: skip the rest of the backoff wait, or give up an attempt made while offline
   * (its socket would wait for the connect timeout) and start a fresh one.
   */
  private _reconnectNow(why: string): void {
    if (this._state !== State.Connecting) return;
    const waiting = this._reconnectTimer !== null;
    const opening = this._ws !== null && this._ws.readyState === 0;
    if (!waiting && !opening) return; // getToken() or the probe is under way: its outcome decides
    this._log('reconnect now:', why);
    this._clearTimer('_reconnectTimer');
    if (opening) this._dropSocket(4000, 'reconnect now');
    void this._open();
  }

  /**
   * The browser lost the network: the session cannot be live, though its socket may take a ping interval or two
   * to notice. Drop it now (state `connecting`, a `transport` error `offline`) and retry with the backoff; the
   * `online` event cuts the wait short.
   */
  private _wentOffline(): void {
    if (this._state !== State.Connected && this._ws === null) return;
    this._log('browser offline: dropping the socket');
    this._dropSocket(4000, 'offline');
    this._error('transport', new HeraldError(0, 'offline', 'the browser is offline'));
    this._scheduleReconnect();
  }

  private _startPings(): void {
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    // Browsers cannot see WebSocket pings, so ask for a text pong. Its arrival (any frame) clears the deadline
    // the ping sets; one already set by an unanswered ping stands.
    this._pingTimer = setInterval(() => {
      this._send('ping');
      if (this._deadTimer === null) this._armDeadTimer(this._pingIntervalMs);
    }, this._pingIntervalMs);
  }

  /**
   * Nothing within `ms` (of a ping, or of opening): the link is dead (a half-open TCP connection, say). A timer
   * that fires much later than asked (the page was frozen, or the machine slept) gives one more `ms`: the answer
   * may be waiting behind it.
   */
  private _armDeadTimer(ms: number): void {
    this._clearTimer('_deadTimer');
    const due = Date.now() + ms;
    this._deadTimer = setTimeout(() => {
      this._deadTimer = null;
      if (Date.now() - due > Math.max(1000, ms)) {
        this._log('the dead-link timer fired late: waiting', ms, 'ms more');
        this._armDeadTimer(ms);
        return;
      }
      this._log('no answer within', ms, 'ms: reconnecting');
      this._dropSocket(4000, 'no traffic');
      this._error('transport', new HeraldError(0, 'dead_link', 'no traffic from the server: reconnecting'));
      this._scheduleReconnect();
    }, ms);
  }

  private _send(text: string): void {
    if (this._ws?.readyState === 1) this._ws.send(text);
  }

  /** Detach and close the current socket without waiting for its close event. */
  private _dropSocket(code: number, reason: string): void {
    this._stopLinkTimers();
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {}; // a late error on a socket we let go is not worth a crash
    try {
      ws.close(code, reason);
    } catch {
      // Already closed or still connecting in an implementation that refuses: it is gone either way.
    }
  }

  private _stopLinkTimers(): void {
    this._clearTimer('_deadTimer');
    this._clearTimer('_connectTimer');
    this._clearTimer('_stableTimer');
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  private _clearTimer(name: '_reconnectTimer' | '_deadTimer' | '_connectTimer' | '_stableTimer'): void {
    const t = this[name];
    if (t !== null) clearTimeout(t);
    this[name] = null;
  }

  private _error(kind: ErrorContext['kind'], error: HeraldError): void {
    this._log('error', kind, error.code, error.message);
    this._emit('error', { kind, error });
  }

  private _log(...args: unknown[]): void {
    if (this._opts.debug) console.debug('[herald]', ...args);
  }
}
