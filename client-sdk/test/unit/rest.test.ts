import { describe, expect, it, vi } from 'vitest';
import { HeraldClient, HeraldError, type FetchLike } from '../../src';

interface Call {
  url: string;
  method: string;
  auth: string | null;
  body?: unknown;
}

function clientWith(respond: (call: Call) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const client = new HeraldClient({
    url: 'http://gw.test:8080/prefix',
    userId: 'u/1',
    getToken: async () => 'jwt',
    fetch: async (input, init) => {
      const call = {
        url: input,
        method: init?.method ?? 'GET',
        auth: new Headers(init?.headers).get('authorization'),
        body: init?.body,
      };
      calls.push(call);
      return respond(call);
    },
  });
  return { client, calls };
}

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

describe('REST inbox', () => {
  it('list() sends the query and the bearer token', async () => {
    const page = { items: [], next_before: null, has_more: false };
    const { client, calls } = clientWith(() => json(page));
    expect(await client.list({ limit: 5, before: 40, unread: true })).toEqual(page);
    await client.list();
    expect(calls).toEqual([
      {
        url: 'http://gw.test:8080/prefix/api/v1/users/u%2F1/notifications?limit=5&before=40&unread=true',
        method: 'GET',
        auth: 'Bearer jwt',
      },
      { url: 'http://gw.test:8080/prefix/api/v1/users/u%2F1/notifications', method: 'GET', auth: 'Bearer jwt' },
    ]);
  });

  it('unreadCount(), markRead(), markAllRead(), delete() hit the documented endpoints', async () => {
    const { client, calls } = clientWith(({ url, method }) => {
      if (url.endsWith('/unread_count')) return json({ unread_count: 3 });
      if (url.endsWith('/read_all')) return json({ up_to: 9, read_at: 't' });
      if (url.endsWith('/7/read')) return json({ id: 7, read_at: 't' });
      if (method === 'DELETE') return new Response(null, { status: 204 });
      if (url.endsWith('/batch')) return json({ action: 'archive', ids: [7], not_found: [8], items: [{ id: 7 }] });
      throw new Error(`unexpected ${method} ${url}`);
    });
    expect(await client.unreadCount()).toBe(3);
    expect(await client.markRead(7)).toMatchObject({ id: 7 });
    expect(await client.markAllRead()).toEqual({ up_to: 9, read_at: 't' });
    expect(await client.delete(7)).toBeUndefined();
    expect(await client.batch('archive', [7, 8])).toMatchObject({ ids: [7], not_found: [8] });
    const base = 'http://gw.test:8080/prefix/api/v1/users/u%2F1/notifications';
    expect(calls.map((c) => `${c.method} ${c.url.slice(base.length)}`)).toEqual([
      'GET /unread_count',
      'POST /7/read',
      'POST /read_all',
      'DELETE /7',
      'POST /batch',
    ]);
    expect(JSON.parse(String(calls[4]!.body))).toEqual({ action: 'archive', ids: [7, 8] });
  });

  it('patchPreferences() sends PATCH …/preferences with the changed types only', async () => {
    const { client, calls } = clientWith(() => json({ types: { promo: 'muted' }, defaults: {}, known: ['stage'] }));
    expect(await client.patchPreferences({ promo: 'muted', info: 'default' })).toMatchObject({ known: ['stage'] });
    expect(calls.map((c) => [c.method, c.url])).toEqual([
      ['PATCH', 'http://gw.test:8080/prefix/api/v1/users/u%2F1/preferences'],
    ]);
    expect(JSON.parse(String(calls[0]!.body))).toEqual({ types: { promo: 'muted', info: 'default' } });
  });

  it('an error body becomes a HeraldError with status, code and message', async () => {
    const { client } = clientWith(() => json({ error: 'not_found', message: 'no notification 7 in this inbox' }, 404));
    const err = await client.delete(7).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HeraldError);
    expect(err).toMatchObject({ status: 404, code: 'not_found', message: 'no notification 7 in this inbox' });
  });

  it('a non-JSON error keeps the status', async () => {
    const { client } = clientWith(() => new Response('<html>bad gateway</html>', { status: 502 }));
    await expect(client.unreadCount()).rejects.toMatchObject({ status: 502, code: 'http_502' });
  });

  it('a network failure is a HeraldError with status 0', async () => {
    const { client } = clientWith(() => {
      throw new TypeError('fetch failed');
    });
    await expect(client.list()).rejects.toMatchObject({ name: 'HeraldError', status: 0, code: 'network_error' });
  });

  it('a request the network never answers rejects with code timeout after requestTimeoutMs (default 15 s)', async () => {
    const hang: FetchLike = (_url, init) =>
      new Promise((_resolve, reject) =>
        init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
      );
    const quick = new HeraldClient({
      url: 'http://gw.test',
      userId: 'u',
      getToken: async () => 'jwt',
      fetch: hang,
      requestTimeoutMs: 50,
    });
    const started = Date.now();
    await expect(quick.markRead(7)).rejects.toMatchObject({ name: 'HeraldError', status: 0, code: 'timeout' });
    expect(Date.now() - started).toBeLessThan(2000);

    vi.useFakeTimers();
    try {
      const byDefault = new HeraldClient({
        url: 'http://gw.test',
        userId: 'u',
        getToken: async () => 'jwt',
        fetch: hang,
      });
      const result = byDefault.list().catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(14_999);
      const pending = Symbol('pending');
      expect(await Promise.race([result, Promise.resolve(pending)])).toBe(pending);
      await vi.advanceTimersByTimeAsync(1);
      expect(await result).toMatchObject({ code: 'timeout' });
    } finally {
      vi.useRealTimers();
    }
  });
});
