/** The inbox over REST: one request helper, errors mapped to HeraldError. */
import { HeraldError, toHeraldError } from './errors';
import type { InboxPage, Notification, ReadAllResult, UnreadCount } from './protocol';
import type { FetchLike } from './types';
import { apiUrl } from './utils';

export interface ListOptions {
  /** 1..=100, server default 20. */
  limit?: number;
  /** Only notifications with an id below this (the previous page's `next_before`). */
  before?: number;
  /** Only unread notifications. */
  unread?: boolean;
}

export class Inbox {
  constructor(
    private readonly _base: string,
    private readonly _userId: string,
    private readonly _getToken: () => Promise<string>,
    private readonly _fetch: FetchLike | undefined,
  ) {}

  list(opts: ListOptions = {}): Promise<InboxPage> {
    const { limit, before, unread } = opts;
    return this._request('GET', '', { limit, before, unread: unread ? true : undefined });
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

  async delete(id: number): Promise<void> {
    await this._request('DELETE', `/${id}`);
  }

  private async _request<T>(
    method: string,
    path: string,
    query?: Record<string, number | boolean | undefined>,
  ): Promise<T> {
    const fetchFn = this._fetch ?? globalThis.fetch;
    if (!fetchFn) throw new HeraldError(0, 'no_fetch', 'no fetch implementation: pass the `fetch` option');
    let token: string;
    try {
      token = await this._getToken();
    } catch (e) {
      throw toHeraldError(e, 'token_error');
    }
    const url = apiUrl(this._base, `/users/${encodeURIComponent(this._userId)}/notifications${path}`, query);
    let res: Response;
    try {
      res = await fetchFn(url, { method, headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
    } catch (e) {
      throw toHeraldError(e, 'network_error');
    }
    const text = await res.text();
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
      throw new HeraldError(res.status, code, message);
    }
    if (res.status === 204 || text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new HeraldError(res.status, 'bad_response', `response is not JSON: ${text.slice(0, 80)}`, { cause: e });
    }
  }
}
