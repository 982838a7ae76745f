/**
 * The Herald wire format, mirroring `docs/PROTOCOL.md` and the gateway's `src/protocol.rs`.
 *
 * Only this module knows the JSON shapes; everything else in the SDK works with these types. Both sides are
 * tested against the same golden files in `tests/golden/`.
 */

export interface RelatedObject {
  type: string;
  id: string;
}

/** A stored notification, as REST returns it and as it travels inside a `notification` frame. */
export interface Notification<Data = unknown> {
  /**
   * Grows in commit order within each chain (see {@link chainOf}). Never compare ids across chains: a broadcast
   * may arrive before a targeted notification with a smaller id.
   */
  id: number;
  /**
   * The previous id in this notification's chain (0 for the first): for a targeted notification, this user's
   * previous targeted one; for a broadcast, the previous broadcast. A client whose cursor for that chain is `L`
   * has missed something exactly when `prev_id > L`; the server fills such gaps itself (it replays the chain
   * before sending the frame), so clients need not act on it.
   */
  prev_id: number;
  /** `null` for a broadcast (in every user's inbox, with per-user read state). */
  user_id: string | null;
  type: string;
  title: string;
  content: string;
  event_type: string;
  source: string | null;
  related_object: RelatedObject | null;
  data: Data;
  /** RFC 3339, UTC, millisecond precision. */
  created_at: string;
  read_at: string | null;
  /** When the user saw it (opened the bell: `seen_all`), or read it (reading implies seeing). */
  seen_at: string | null;
  /** Archived notifications are left out of lists unless asked for (`archived: true`) and never counted. */
  archived_at: string | null;
  /** The user muted its type (preferences): stored and listed, never pushed live nor counted. */
  muted: boolean;
}

export interface ReadyFrame {
  type: 'ready';
  session_id: string;
  user_id: string;
  /** The greater of the two below (v1). */
  latest_id: number;
  /** Newest targeted id when the session opened (0 if none): where a session without `since` starts. */
  latest_targeted_id: number;
  /** Newest broadcast id when the session opened (0 if none). */
  latest_broadcast_id: number;
  ping_interval_ms: number;
}
export interface NotificationFrame<Body = unknown> {
  type: 'notification';
  event_type: string;
  notification: Notification;
  /** The event body exactly as the publishing service sent it. */
  body: Body;
}
/** After a replay (a `since` connect, a `resume` or a `resync`): the session's position now. */
export interface ReplayedFrame {
  type: 'replayed';
  /** The greater of the two below (v1). */
  up_to: number;
  up_to_targeted: number;
  up_to_broadcast: number;
}
/**
 * The replay that follows starts above pruned history (retention): what lay between the client's position and
 * `oldest_id` cannot be replayed. Refetch the inbox over REST.
 */
export interface TruncatedFrame {
  type: 'truncated';
  since: number;
  since_broadcast: number;
  /** Notifications the client missed below this id were pruned. */
  oldest_id: number;
}
/** A live-only event (a rule with `action = "live"`): never stored, not replayed, not counted. Best effort. */
export interface EventFrame<Body = unknown> {
  type: 'event';
  event_type: string;
  title: string;
  content: string;
  /** The event body exactly as the publishing service sent it. */
  body: Body;
}
export interface PongFrame {
  type: 'pong';
}
export interface ReadFrame {
  type: 'read';
  ids: number[];
  read_at: string;
}
export interface ReadAllFrame {
  type: 'read_all';
  up_to: number;
  read_at: string;
}
export interface DeletedFrame {
  type: 'deleted';
  ids: number[];
}
/** These notifications are unread again (`POST …/{id}/unread`, here or in another tab). */
export interface UnreadFrame {
  type: 'unread';
  ids: number[];
}
export interface ArchivedFrame {
  type: 'archived';
  ids: number[];
}
export interface UnarchivedFrame {
  type: 'unarchived';
  ids: number[];
}
/** The bell was opened: every notification up to `up_to` is seen. */
export interface SeenAllFrame {
  type: 'seen_all';
  up_to: number;
  seen_at: string;
}
/**
 * The user's counters, sent after `ready`, after each `replayed`, and whenever they change (a new notification,
 * read, unread, read_all, seen_all, archive, unarchive, delete, purge). Archived and muted notifications count in
 * neither.
 */
export interface CountsFrame {
  type: 'counts';
  unread: number;
  unseen: number;
}
/** This user's inbox was erased (GDPR): drop everything shown. */
export interface PurgedFrame {
  type: 'purged';
}
/**
 * This session may have missed frames (`slow_consumer`: its outbound queue overflowed; `transport_lost`: the
 * node's Redis link dropped) or got read-state frames in the wrong order (`out_of_order`: two nodes' changes
 * crossed). The server replays notifications from the inbox after (`since`,
 * `since_broadcast`), then sends `replayed`. Read state (`read`/`read_all`/`deleted`/`purged` frames) is not
 * replayed: the client refetches its counts and visible page.
 */
export interface ResyncFrame {
  type: 'resync';
  reason: 'slow_consumer' | 'transport_lost' | 'out_of_order' | (string & {});
  /** The targeted cursor the replay starts after. */
  since: number;
  /** The broadcast cursor the replay starts after. */
  since_broadcast: number;
}
/** The session's token expires at `expires_at` (unix seconds): send `{"type":"auth","token":…}` before then. */
export interface TokenExpiringFrame {
  type: 'token_expiring';
  expires_at: number;
}
/** A token sent with `auth` was accepted; the session now lasts until `expires_at` (unix seconds). */
export interface AuthOkFrame {
  type: 'auth_ok';
  expires_at: number;
}
export interface ErrorFrame {
  type: 'error';
  code: string;
  message: string;
}

/** Every frame the server sends, discriminated by `type`. */
export type ServerFrame =
  | ReadyFrame
  | NotificationFrame
  | ReplayedFrame
  | TruncatedFrame
  | EventFrame
  | PongFrame
  | ReadFrame
  | ReadAllFrame
  | DeletedFrame
  | UnreadFrame
  | ArchivedFrame
  | UnarchivedFrame
  | SeenAllFrame
  | CountsFrame
  | PurgedFrame
  | ResyncFrame
  | TokenExpiringFrame
  | AuthOkFrame
  | ErrorFrame;

/** What a client may send as JSON (the bare text `ping` is accepted too). */
export type ClientMessage =
  | { type: 'ping' }
  /** Replay everything after this position (targeted `since`, `since_broadcast`) on the open socket. */
  | { type: 'resume'; since: number; since_broadcast: number }
  /** A fresh token for the open session (the answer is `auth_ok`, or an `error` with code `auth_rejected`). */
  | { type: 'auth'; token: string };

/** `GET /users/{id}/notifications`: newest first. */
export interface InboxPage {
  items: Notification[];
  /** Pass as `before` for the next (older) page; `null` when there is none. */
  next_before: number | null;
  has_more: boolean;
}

export interface UnreadCount {
  unread_count: number;
}

export interface ReadAllResult {
  up_to: number;
  read_at: string;
}

/** What `POST …/notifications/batch` does to each notification it names. */
export type BatchAction = 'read' | 'unread' | 'archive' | 'unarchive' | 'delete';

/** `POST …/notifications/batch`: one action on up to {@link MAX_BATCH} notifications, in one commit. */
export interface BatchResult {
  action: BatchAction;
  /** The ids in this inbox, changed (or already in that state), in the request's order. */
  ids: number[];
  /** The ids not in this inbox (nothing was done to them). */
  not_found: number[];
  /** Those notifications as they are now, in the order of `ids` (empty for `delete`). */
  items: Notification[];
}

/** The most ids one batch request names. */
export const MAX_BATCH = 100;

/** `POST …/notifications/seen_all`. */
export interface SeenAllResult {
  up_to: number;
  seen_at: string;
}

/** `GET …/notifications/counts`: counters, O(1) on the server. */
export interface Counts {
  unread: number;
  unseen: number;
}

export type PreferenceValue = 'on' | 'muted';

/** `GET /users/{id}/preferences`: what the user set (`types`) and the configured defaults. */
export interface Preferences {
  types: Record<string, PreferenceValue>;
  /** The configured defaults (`preferences.muted_by_default`), for types the user did not set. */
  defaults: Record<string, PreferenceValue>;
  /** The types the gateway's rules store as written, sorted: what a settings page can offer before any arrives. */
  known: string[];
}

/** What `patchPreferences` sets a type to: `default` forgets the user's setting (the configured default applies). */
export type PreferenceChange = PreferenceValue | 'default';

/** Body of every 4xx/5xx answer. */
export interface ErrorBody {
  error: string;
  message: string;
}

/** WebSocket close codes the gateway uses (see PROTOCOL.md). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  Unsupported: 1003,
  PolicyViolation: 1008,
  TooLarge: 1009,
  InternalError: 1011,
  TokenExpired: 4001,
  /** The store is unavailable or too slow: reconnect with backoff. */
  TryAgainLater: 1013,
  TooSlow: 4008,
  IdleTimeout: 4009,
  /** Too many sessions for this user on this node: reconnect with a long backoff. */
  TooManySessions: 4029,
} as const;

/** The two delivery chains of a user's notifications, each ordered by id. */
export type Chain = 'targeted' | 'broadcast';

/** A broadcast (`user_id` null) belongs to the broadcast chain; the user's own notifications to the targeted one. */
export function chainOf(n: Pick<Notification, 'user_id'>): Chain {
  return n.user_id === null ? 'broadcast' : 'targeted';
}

/** Thrown by {@link parseServerFrame} for text that is not a frame this SDK understands. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

type Json = Record<string, unknown>;
type Check = (f: Json) => boolean;

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isStr = (v: unknown): v is string => typeof v === 'string';
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.every(isNum);

/** True when `v` has the shape of a {@link Notification} (the fields the SDK relies on). */
export function isNotification(v: unknown): v is Notification {
  return (
    isObj(v) &&
    isNum(v.id) &&
    (v.user_id === null || isStr(v.user_id)) &&
    isStr(v.type) &&
    isStr(v.event_type) &&
    isStr(v.created_at) &&
    (v.read_at === null || isStr(v.read_at))
  );
}

// Per-type checks of the fields the SDK reads; extra fields are allowed (forward compatible).
const checks: Record<ServerFrame['type'], Check> = {
  ready: (f) =>
    isStr(f.session_id) &&
    isNum(f.latest_id) &&
    isNum(f.latest_targeted_id) &&
    isNum(f.latest_broadcast_id) &&
    isNum(f.ping_interval_ms),
  notification: (f) => isStr(f.event_type) && isNotification(f.notification) && 'body' in f,
  replayed: (f) => isNum(f.up_to) && isNum(f.up_to_targeted) && isNum(f.up_to_broadcast),
  truncated: (f) => isNum(f.since) && isNum(f.since_broadcast) && isNum(f.oldest_id),
  event: (f) => isStr(f.event_type) && isStr(f.title) && isStr(f.content) && 'body' in f,
  pong: () => true,
  read: (f) => isIds(f.ids) && isStr(f.read_at),
  read_all: (f) => isNum(f.up_to) && isStr(f.read_at),
  deleted: (f) => isIds(f.ids),
  unread: (f) => isIds(f.ids),
  archived: (f) => isIds(f.ids),
  unarchived: (f) => isIds(f.ids),
  seen_all: (f) => isNum(f.up_to) && isStr(f.seen_at),
  counts: (f) => isNum(f.unread) && isNum(f.unseen),
  purged: () => true,
  resync: (f) => isStr(f.reason) && isNum(f.since) && isNum(f.since_broadcast),
  token_expiring: (f) => isNum(f.expires_at),
  auth_ok: (f) => isNum(f.expires_at),
  error: (f) => isStr(f.code) && isStr(f.message),
};

/**
 * Parse one server text frame, validating the `type` discriminator and the fields of that type.
 *
 * Returns `null` for a well-formed frame of a type this SDK does not know (a newer server): ignore it. Throws
 * {@link ProtocolError} for text that is not a frame, or a known frame with missing or mistyped fields.
 */
export function parseServerFrame(text: string): ServerFrame | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError(`frame is not JSON: ${text.slice(0, 80)}`);
  }
  if (!isObj(value) || !isStr(value.type)) {
    throw new ProtocolError('frame is not a JSON object with a string `type`');
  }
  const check = Object.prototype.hasOwnProperty.call(checks, value.type)
    ? checks[value.type as ServerFrame['type']]
    : undefined;
  if (!check) return null;
  if (!check(value)) throw new ProtocolError(`malformed \`${value.type}\` frame`);
  return value as unknown as ServerFrame;
}
