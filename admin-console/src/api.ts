// The admin API, same origin only: every call is a relative URL with the key as `Authorization: Bearer`.
// The key never goes anywhere else (the page's CSP allows `connect-src 'self'` alone).

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A sentence an operator can act on, for an error of the admin API. */
export function explain(e: unknown): string {
  if (e instanceof ApiError) {
    switch (e.code) {
      case 'missing_credentials':
      case 'invalid_credentials':
      case 'token_expired':
        return 'This key was not accepted: check it and sign in again.';
      case 'insufficient_scope':
        return 'This key has no `admin` scope: the console needs a service key with `admin`.';
      case 'forbidden':
        return 'That is a user token: the console needs a service key with the `admin` scope.';
      case 'unreachable':
        return 'Herald cannot be reached. Is it running?';
      default:
        return e.message ? `${e.message} (${e.code})` : `HTTP ${e.status} (${e.code})`;
    }
  }
  return e instanceof Error ? e.message : String(e);
}

/** Whether an error means the key itself is refused (sign in again), not just one call. */
export function isAuthError(e: unknown): boolean {
  return e instanceof ApiError && (e.status === 401 || e.status === 403) && e.code !== 'not_found';
}

export type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

export interface Client {
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
}

export function client(key: string, fetchImpl: Fetch = (i, init) => fetch(i, init)): Client {
  const call = async <T>(path: string, init: RequestInit): Promise<T> => {
    if (!path.startsWith('/api/v1/')) throw new Error(`not an API path: ${path}`);
    let res: Response;
    try {
      res = await fetchImpl(path, {
        ...init,
        // The key stays in this origin: no cookies, no referrer, no cache of answers holding event bodies.
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
        cache: 'no-store',
        headers: { ...(init.headers ?? {}), authorization: `Bearer ${key}`, accept: 'application/json' },
      });
    } catch {
      throw new ApiError(0, 'unreachable', 'Herald cannot be reached');
    }
    const text = await res.text();
    let body: unknown = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      // Not JSON: reported below by status.
    }
    if (!res.ok) {
      const b = (body ?? {}) as { error?: string; message?: string };
      throw new ApiError(res.status, b.error ?? `http_${res.status}`, b.message ?? text.slice(0, 200));
    }
    return body as T;
  };
  return {
    get: (path) => call(path, { method: 'GET' }),
    post: (path, body) =>
      call(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  };
}

// ---- Shapes (docs/openapi.json; the trace shapes are contract D) ----

export interface Bucket {
  le: number;
  count: number;
}

export interface Stats {
  at: string;
  events_received: number;
  events_by_outcome: Record<string, number>;
  events_refused: number;
  notifications_stored: number;
  deliveries: number;
  replayed: number;
  dead_lettered: number;
  sessions_open: number;
  users_online: number;
  delivery_latency: {
    count: number;
    sum_seconds: number;
    buckets: Bucket[];
    p50: number | null;
    p90: number | null;
    p99: number | null;
  };
}

export interface NodePresence {
  node: string;
  users: number;
  sessions: number;
  reported_at: number;
}

export interface Presence {
  nodes: NodePresence[];
  users_online: number;
  sessions_online: number;
}

export interface Delivery {
  user_id: string;
  node: string;
  online: boolean;
  sessions_written: number;
  reason: null | 'offline' | 'outbox_overflow' | 'muted' | 'closed' | string;
  at: string;
}

export interface Trace {
  trace_id: string;
  event_id: string;
  received_at: string;
  transport: 'http' | 'amqp' | string;
  exchange: string | null;
  routing_key: string | null;
  producer: string | null;
  event_type: string | null;
  dedupe: 'new' | 'duplicate' | string;
  rule: string | null;
  outcome: string;
  reason: string | null;
  recipients: string[];
  notification_ids: number[];
  published_to: string[];
  deliveries: Delivery[];
  read: { user_id: string; read_at: string }[];
  seen: { user_id: string; seen_at: string }[];
}

export interface DeadLetter {
  id: string;
  reason: string;
  error: string | null;
  event_id: string | null;
  exchange: string;
  routing_key: string;
  deaths: number;
  /** Tries it waited in the retry queue for an alias (0 when it never did). */
  retries: number;
  first_dead_lettered_at: string | null;
  size: number;
  body: string;
  body_encoding: 'utf8' | 'base64';
  /** `body` shows only the first 64 KiB; `size` is the whole body's. */
  body_truncated: boolean;
}

export interface DeadLetterList {
  queue: string;
  total: number;
  letters: DeadLetter[];
}

export interface RedriveOutcome {
  id: string;
  outcome: 'redriven' | 'not_found' | 'failed';
  message?: string;
}

export interface DryRunResult {
  transport: 'http' | 'amqp';
  event: { id: string; exchange: string; routing_key: string; event_type: string; shape: string } | null;
  verdict: {
    outcome: 'stored' | 'live' | 'purged' | 'ignored' | 'unmatched' | 'dead_letter';
    rule?: string;
    recipients?: string[];
    users?: string[];
    type?: string;
    title?: string;
    content?: string;
    event_type?: string;
    reason?: string;
    message?: string;
  };
  dead_letter: boolean;
  report: string;
}
