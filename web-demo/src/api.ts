/**
 * The two development-only endpoints the demo needs beyond the SDK: minting a user token and publishing an event
 * as that user. Both exist only when Herald runs with `auth.dev_token_endpoint = true` (config/demo.toml), so the
 * browser never holds a service key.
 */

/** Where the gateway is: the page's own origin, unless the build was told otherwise. */
export const GATEWAY_URL: string = (import.meta.env.VITE_HERALD_URL as string | undefined) || window.location.origin;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function url(path: string): string {
  return GATEWAY_URL.replace(/\/+$/, '') + path;
}

async function call<T>(path: string, init: RequestInit): Promise<{ status: number; body: T }> {
  let res: Response;
  try {
    res = await fetch(url(path), init);
  } catch (e) {
    throw new ApiError(0, 'network_error', `Herald is not reachable at ${GATEWAY_URL} (${(e as Error).message}).`);
  }
  const text = await res.text();
  let body: unknown = undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: handled below
  }
  if (!res.ok) {
    const err = (body ?? {}) as { error?: unknown; message?: unknown };
    if ((res.status === 404 || res.status === 405) && typeof err.error !== 'string') {
      throw new ApiError(
        res.status,
        'dev_endpoints_off',
        'This Herald does not offer the development endpoints. Start it with config/demo.toml ' +
          '(auth.dev_token_endpoint = true), e.g. ./scripts/run.sh.',
      );
    }
    throw new ApiError(
      res.status,
      typeof err.error === 'string' ? err.error : `http_${res.status}`,
      typeof err.message === 'string' ? err.message : text.slice(0, 200) || res.statusText,
    );
  }
  if (body === undefined || typeof body !== 'object') {
    throw new ApiError(res.status, 'bad_response', `Expected JSON from ${path}, got: ${text.slice(0, 80)}`);
  }
  return { status: res.status, body: body as T };
}

export interface DevToken {
  token: string;
  user_id: string;
  expires_in: number;
}

/** `POST /api/v1/dev/token {"user_id"}` → a user JWT. */
export async function mintToken(userId: string): Promise<DevToken> {
  const { body } = await call<DevToken>('/api/v1/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  });
  return body;
}

const RENEW_BEFORE_MS = 5 * 60_000;

/**
 * A token that renews itself well before it expires (one request in flight at a time): Herald asks for a fresh
 * one `websocket.token_refresh_window_secs` (60 s by default) before `exp`, and must then get a new token.
 */
export class TokenSource {
  private token: string;
  /** When to mint the next one: 5 minutes before expiry, or half-way for short-lived tokens. */
  private renewAt = 0;
  private pending: Promise<string> | null = null;

  constructor(
    readonly userId: string,
    first: DevToken,
  ) {
    this.token = first.token;
    this.schedule(first.expires_in);
  }

  private schedule(expiresInSecs: number) {
    this.renewAt = Date.now() + Math.max(expiresInSecs * 1000 - RENEW_BEFORE_MS, (expiresInSecs * 1000) / 2);
  }

  readonly getToken = (): Promise<string> => {
    if (Date.now() < this.renewAt) return Promise.resolve(this.token);
    this.pending ??= mintToken(this.userId)
      .then((t) => {
        this.token = t.token;
        this.schedule(t.expires_in);
        return t.token;
      })
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  };
}

export type PublishStatus = 'stored' | 'duplicate' | 'purged' | 'ignored' | 'unmatched';

export interface PublishResult {
  event_id: string;
  status: PublishStatus;
  notification_ids: number[];
}

/** `POST /api/v1/dev/events?exchange=&routing_key=` with the signed-in user's token → the 202's results. */
export async function publishEvent(
  getToken: () => Promise<string>,
  req: { exchange: string; routingKey: string; body: unknown; idempotencyKey: string },
): Promise<PublishResult[]> {
  const query = new URLSearchParams();
  if (req.exchange) query.set('exchange', req.exchange);
  if (req.routingKey) query.set('routing_key', req.routingKey);
  const qs = query.toString();
  const { body } = await call<{ results: PublishResult[] }>(`/api/v1/dev/events${qs ? `?${qs}` : ''}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json',
      authorization: `Bearer ${await getToken()}`,
      'idempotency-key': req.idempotencyKey,
    },
    body: JSON.stringify(req.body),
  });
  return body.results;
}

/** A random id, also outside secure contexts (where crypto.randomUUID is missing). */
export function randomId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
