/** The inbox over REST: one request helper, errors mapped to HeraldError. */
import { HeraldError, toHeraldError } from './errors';
import type {
  BatchAction,
  BatchResult,
  Counts,
  InboxPage,
  Notification,
  PreferenceChange,
  PreferenceValue,
  Preferences,
  ReadAllResult,
  SeenAllResult,
  UnreadCount,
} from './protocol';
import type { FetchLike } from './types';
import { apiUrl } from './utils';

export interface ListOptions {
  /** 1..=100, server default 20. */
  limit?: number;
  /** Only notifications with an id below this (the previous page's `next_before`). */
  before?: number;
  /** Only unread notifications. */
  unread?: boolean;
  /** `false` (the server's default): archived notifications are left out; `true`: only archived ones. */
  archived?: boolean;
  /** Only notifications of this `type`. */
  type?: string;
  /** Only notifications about a related object of this type (with `related_id`: that very object). */
  related_type?: string;
  related_id?: string;
}

type Query = Record<string, string | number | boolean | undefined>;

/** How long a REST request may take (from sending it to the end of the answer) unless told otherwise. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;

export class Inbox {
  constructor(
    private readonly _base: string,
    private readonly _userId: string,
    private readonly _getToken: () => Promise<string>,
    private readonly _fetch: FetchLike | undefined,
    /** 0 or less: no timeout. */
    private readonly _timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
  ) {}

  list(opts: ListOptions = {}): Promise<InboxPage> {
    const { limit, before, unread, archived, type, related_type, related_id } = opts;
    return this._request('GET', '', {
      limit,
      before,
      unread: unread ? true : undefined,
      archived: archived ? true : undefined,
      type,
      related_type,
      related_id,
    });
  }

  /** Both counters (`unread`, `unseen`) in one O(1) request. */
  counts(): Promise<Counts> {
    return this._request('GET', '/counts');
  }

  markUnread(id: number): Promise<Notification> {
    return this._request('POST', `/${id}/unread`);
  }

  archive(id: number): Promise<Notification> {
    return this._request('POST', `/${id}/archive`);
  }

  unarchive(id: number): Promise<Notification> {
    return this._request('POST', `/${id}/unarchive`);
  }

  /** The bell was opened: everything up to now is seen (the unseen count drops to 0). */
  markAllSeen(): Promise<SeenAllResult> {
    return this._request('POST', '/seen_all');
  }

  getPreferences(): Promise<Preferences> {
    return this._request('GET', '', undefined, undefined, '/preferences');
  }

  /** Replaces the user's map: types left out fall back to the configured defaults. */
  setPreferences(types: Record<string, PreferenceValue>): Promise<Preferences> {
    return this._request('PUT', '', undefined, { types }, '/preferences');
  }

  /** Changes only the types named (`default`: back to the configured default); the others keep their setting. */
  patchPreferences(types: Record<string, PreferenceChange>): Promise<Preferences> {
    return this._request('PATCH', '', undefined, { types }, '/preferences');
  }

  async unreadCount(): Promise<number> {
    const body = await this._request<UnreadCount>('GET', '/unread_count');
    return body.unread_count;
  }

  markRead(id: number): Promise<Notification> {
    return this._request('POST', `/${id}/read`);
  }

  markAllRead(): Promise<ReadAllResult> {
    return this._request('POST', '/read_all');
  }

  /**
   * One action on up to 100 notifications, in one commit (ids not in this inbox come back in `not_found`). The
   * user's sessions get one frame for the lot.
   */
  batch(action: BatchAction, ids: number[]): Promise<BatchResult> {
    return this._request('POST', '/batch', undefined, { action, ids });
  }

  async delete(id: number): Promise<void> {
    await this._request('DELETE', `/${id}`);
  }

  private async _request<T>(
    method: string,
    path: string,
    query?: Query,
    body?: unknown,
    resource = '/notifications',
  ): Promise<T> {
    const fetchFn = this._fetch ?? globalThis.fetch;
    if (!fetchFn) throw new HeraldError(0, 'no_fetch', 'no fetch implementation: pass the `fetch` option');
    let token: string;
    try {
      token = await this._getToken();
    } catch (e) {
      throw toHeraldError(e, 'token_error');
    }
    const url = apiUrl(this._base, `/users/${encodeURIComponent(this._userId)}${resource}${path}`, query);
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    // A dead network (a black hole, not a refusal) never settles a fetch: give up after the timeout.
    const ms = this._timeoutMs;
    const abort = ms > 0 && typeof AbortController === 'function' ? new AbortController() : null;
    const timer = abort ? setTimeout(() => abort.abort(), ms) : null;
    const failed = (e: unknown) =>
      abort?.signal.aborted
        ? new HeraldError(0, 'timeout', `no answer from the server within ${ms} ms`, { cause: e })
        : toHeraldError(e, 'network_error');
    let res: Response;
    let text: string;
    try {
      res = await fetchFn(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: abort?.signal,
      });
      text = await res.text();
    } catch (e) {
      throw failed(e);
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
    if (!res.ok) {
      let code = `http_${res.status}`;
      let message = text || res.statusText;
      try {
        const body = JSON.parse(text) as Partial<{ error: unknown; message: unknown }>;
        if (typeof body.error === 'string') code = body.error;
        if (typeof body.message === 'string') message = body.message;
      } catch {
        // Not a JSON error body (a proxy's HTML page, say): keep the status and text.
      }
      const retryAfter = Number(res.headers.get('retry-after') ?? NaN);
      const retryAfterSecs = Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined;
      throw new HeraldError(res.status, code, message, { retryAfterSecs });
    }
    if (res.status === 204 || text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new HeraldError(res.status, 'bad_response', `response is not JSON: ${text.slice(0, 80)}`, { cause: e });
    }
  }
}
