/** An in-memory inbox behind a fake fetch: contract A's REST API, enough for component and store tests. */
import type { FetchLike, Notification, PreferenceValue } from '../../src';
import { notificationFrame } from './fake-websocket';

export function makeNotification(id: number, extra: Partial<Notification> = {}): Notification {
  return { ...notificationFrame(id).notification, seen_at: null, archived_at: null, muted: false, ...extra };
}

export function fakeServer(initial: (number | Notification)[] = []) {
  const inbox = new Map<number, Notification>();
  for (const x of initial) {
    const n = typeof x === 'number' ? makeNotification(x) : x;
    inbox.set(n.id, n);
  }
  const json = (b: unknown, status = 200) => new Response(JSON.stringify(b), { status });
  /** Requests served: `METHOD path?query` with the path after `/users/{id}`. */
  const calls: string[] = [];
  /** The bodies of the `batch` requests served. */
  const batches: { action: string; ids: number[] }[] = [];
  /** Make the next requests fail with this status (null: answer normally). */
  let failWith: number | null = null;
  /** How many more requests fail (then they are answered normally again). */
  let failures = Infinity;
  /** While holding, requests wait here (oldest first) until released. */
  let holding = false;
  const held: (() => void)[] = [];
  /** The user's preferences, as the gateway keeps them: `types` set by the user, configured `defaults`, `known`. */
  const preferences = {
    types: {} as Record<string, PreferenceValue>,
    defaults: {} as Record<string, PreferenceValue>,
    known: [] as string[],
  };
  /** The bodies' `types` of the PATCH `/preferences` requests served. */
  const patches: Record<string, string>[] = [];
  const now = () => '2026-01-10T09:00:00.000Z';
  const fetch: FetchLike = async (input, init) => {
    const url = new URL(input);
    const method = init?.method ?? 'GET';
    const path = url.pathname.replace(/^.*\/users\/[^/]+/, '');
    calls.push(`${method} ${path}${url.search}`);
    if (holding) await new Promise<void>((r) => held.push(r));
    if (failWith !== null && failures > 0) {
      const status = failWith;
      if (--failures === 0) failWith = null;
      return json({ error: 'internal', message: 'the server failed' }, status);
    }
    if (path === '/preferences') {
      if (method !== 'GET') {
        const { types } = JSON.parse(String(init?.body)) as { types?: Record<string, string> };
        const values = method === 'PATCH' ? ['on', 'muted', 'default'] : ['on', 'muted'];
        if (!types || typeof types !== 'object' || !Object.values(types).every((v) => values.includes(v))) {
          return json({ error: 'bad_request', message: `types: ${values.join(' | ')}` }, 400);
        }
        if (method === 'PUT') preferences.types = {};
        if (method === 'PATCH') patches.push({ ...types });
        for (const [type, v] of Object.entries(types)) {
          if (v === 'default') delete preferences.types[type];
          else preferences.types[type] = v as PreferenceValue;
        }
      }
      return json({
        types: { ...preferences.types },
        defaults: { ...preferences.defaults },
        known: [...preferences.known],
      });
    }
    const all = [...inbox.values()].sort((a, b) => b.id - a.id);
    const live = all.filter((n) => n.archived_at === null);
    if (path === '/notifications' && method === 'GET') {
      const q = url.searchParams;
      const limit = Number(q.get('limit') ?? 20);
      const before = Number(q.get('before') ?? Infinity);
      const archived = q.get('archived') === 'true';
      const rows = all.filter(
        (n) =>
          n.id < before &&
          (archived ? n.archived_at !== null : n.archived_at === null) &&
          (q.get('unread') !== 'true' || n.read_at === null) &&
          (!q.get('type') || n.type === q.get('type')),
      );
      const items = rows.slice(0, limit);
      const has_more = rows.length > limit;
      return json({ items, has_more, next_before: has_more ? items[items.length - 1]!.id : null });
    }
    if (path === '/notifications/counts') {
      return json({
        unread: live.filter((n) => !n.read_at && !n.muted).length,
        unseen: live.filter((n) => !n.seen_at && !n.muted).length,
      });
    }
    if (path === '/notifications/unread_count') return json({ unread_count: live.filter((n) => !n.read_at).length });
    if (path === '/notifications/read_all') {
      all.forEach((n) => {
        n.read_at ??= now();
        n.seen_at ??= now();
      });
      return json({ up_to: all[0]?.id ?? 0, read_at: now() });
    }
    if (path === '/notifications/seen_all') {
      all.forEach((n) => (n.seen_at ??= now()));
      return json({ up_to: all[0]?.id ?? 0, seen_at: now() });
    }
    const change = (n: Notification, action: string) => {
      if (action === 'read') {
        n.read_at ??= now();
        n.seen_at ??= now();
      }
      if (action === 'unread') n.read_at = null;
      if (action === 'archive') n.archived_at ??= now();
      if (action === 'unarchive') n.archived_at = null;
    };
    if (path === '/notifications/batch' && method === 'POST') {
      const { action, ids } = JSON.parse(String(init?.body)) as { action: string; ids: number[] };
      const found = ids.filter((id) => inbox.has(id));
      batches.push({ action, ids });
      for (const id of found) {
        if (action === 'delete') inbox.delete(id);
        else change(inbox.get(id)!, action);
      }
      return json({
        action,
        ids: found,
        not_found: ids.filter((id) => !found.includes(id)),
        items: action === 'delete' ? [] : found.map((id) => ({ ...inbox.get(id)! })),
      });
    }
    const m = /^\/notifications\/(\d+)(?:\/(read|unread|archive|unarchive))?$/.exec(path);
    const n = m && inbox.get(Number(m[1]));
    if (!n) return json({ error: 'not_found', message: 'no such notification' }, 404);
    if (method === 'DELETE') {
      inbox.delete(n.id);
      return new Response(null, { status: 204 });
    }
    if (m[2]) change(n, m[2]);
    return json({ ...n });
  };
  return {
    inbox,
    fetch,
    calls,
    batches,
    preferences,
    patches,
    /** Make requests fail with `status` (null: answer normally again): all of them, or the next `times`. */
    fail(status: number | null, times = Infinity) {
      failWith = status;
      failures = times;
    },
    /** Keep requests waiting until `release`d. */
    hold() {
      holding = true;
    },
    /** Answer the oldest waiting request (`all`: every one, and stop holding). */
    release(all = false) {
      if (all) holding = false;
      for (const r of held.splice(0, all ? held.length : 1)) r();
    },
    /** How many requests are waiting. */
    waiting() {
      return held.length;
    },
    /** How many requests matched `re`. */
    count(re: RegExp) {
      return calls.filter((c) => re.test(c)).length;
    },
  };
}
