import { describe, expect, it } from 'vitest';
import { HeraldClient, MAX_BATCH, getInboxStore, tabFilter, type FetchLike, type HeraldClientOptions } from '../../src';
import { MAX_IDLE_LISTS, MAX_REFETCH_PAGES, matchesFilter } from '../../src/store';
import { createFakeWebSocket, readyFrame } from '../helpers/fake-websocket';
import { fakeServer, makeNotification } from '../helpers/fake-server';

const tick = () => new Promise((r) => setTimeout(r, 0));

/**
 * `server.fetch`, but while `hold()` is on each answer is computed at once and delivered only when `release()`d
 * (oldest first): an answer that predates what happens meanwhile.
 */
function lateAnswers(server: ReturnType<typeof fakeServer>) {
  let holding = false;
  const held: (() => void)[] = [];
  const fetch: FetchLike = async (input, init) => {
    const answer = await server.fetch(input, init);
    if (holding) await new Promise<void>((r) => held.push(r));
    return answer;
  };
  return {
    fetch,
    hold: (on = true) => void (holding = on),
    release: () => held.shift()?.(),
    waiting: () => held.length,
  };
}

/** A client and store whose socket the test opens, fails or refuses (`WS.autoOpen` off); `connect()` not called. */
function unconnected(
  initial: Parameters<typeof fakeServer>[0],
  options: Partial<HeraldClientOptions> = {},
  wrap?: (server: ReturnType<typeof fakeServer>) => FetchLike,
) {
  const WS = createFakeWebSocket();
  WS.autoOpen = false;
  const server = fakeServer(initial);
  const client = new HeraldClient({
    url: 'http://h',
    userId: 'u1',
    getToken: async () => 't',
    WebSocket: WS,
    fetch: wrap ? wrap(server) : server.fetch,
    ...options,
  });
  return { WS, server, client, store: getInboxStore(client) };
}

/** A client and store connected (`ready` received) to a fake server holding `initial`. */
async function setup(
  initial: Parameters<typeof fakeServer>[0],
  wrap?: (server: ReturnType<typeof fakeServer>) => FetchLike,
) {
  const { WS, server, client, store } = unconnected(initial, {}, wrap);
  WS.autoOpen = true;
  client.connect();
  await tick();
  WS.last.receive(readyFrame());
  return { WS, client, server, store };
}

async function settled(check: () => boolean) {
  for (let i = 0; i < 50 && !check(); i++) await tick();
  expect(check()).toBe(true);
}

describe('the inbox store', () => {
  it('is one per client', async () => {
    const { client, store } = await setup([]);
    expect(getInboxStore(client)).toBe(store);
  });

  it('matchesFilter: tabs, type and related object', () => {
    const n = makeNotification(1, { type: 'stage', related_object: { type: 'stage', id: '9' } });
    expect(matchesFilter(tabFilter('all'), n)).toBe(true);
    expect(matchesFilter(tabFilter('archived'), n)).toBe(false);
    expect(matchesFilter(tabFilter('archived'), { ...n, archived_at: 'x' })).toBe(true);
    expect(matchesFilter(tabFilter('unread'), { ...n, read_at: 'x' })).toBe(false);
    // The Unread tab lists what the badge counts: a muted notification is in All, not in Unread.
    expect(matchesFilter(tabFilter('unread'), { ...n, muted: true })).toBe(false);
    expect(matchesFilter(tabFilter('all'), { ...n, muted: true })).toBe(true);
    expect(matchesFilter(tabFilter('all', { type: 'stage' }), n)).toBe(true);
    expect(matchesFilter(tabFilter('all', { type: 'match' }), n)).toBe(false);
    expect(matchesFilter(tabFilter('all', { related_type: 'stage', related_id: '9' }), n)).toBe(true);
    expect(matchesFilter(tabFilter('all', { related_type: 'stage', related_id: '8' }), n)).toBe(false);
  });

  it('a live notification joins only the lists whose filter it matches', async () => {
    const { WS, store } = await setup([makeNotification(1, { type: 'stage' })]);
    const stage = tabFilter('all', { type: 'stage' });
    const match = tabFilter('all', { type: 'match' });
    store.subscribeList(stage, () => {});
    store.subscribeList(match, () => {});
    await settled(() => store.getList(stage).loaded && store.getList(match).loaded);
    const n = makeNotification(2, { type: 'match' });
    WS.last.receive({ type: 'notification', event_type: 'e', body: {}, notification: n });
    expect(store.getList(stage).items.map((x) => x.id)).toEqual([1]);
    expect(store.getList(match).items.map((x) => x.id)).toEqual([2]);
  });

  it('an `unread` frame puts a known notification back in the unread list, within what it has loaded', async () => {
    const { WS, store } = await setup([1, makeNotification(2, { read_at: 'x' }), 3]);
    const all = tabFilter('all');
    const unread = tabFilter('unread');
    store.subscribeList(all, () => {});
    store.subscribeList(unread, () => {});
    await settled(() => store.getList(all).loaded && store.getList(unread).loaded);
    expect(store.getList(unread).items.map((x) => x.id)).toEqual([3, 1]);
    WS.last.receive({ type: 'unread', ids: [2] });
    expect(store.getList(unread).items.map((x) => x.id)).toEqual([3, 2, 1]);
    WS.last.receive({ type: 'read_all', up_to: 3, read_at: 'now' });
    expect(store.getList(unread).items).toEqual([]);
    expect(store.getList(all).items.every((x) => x.read_at === 'now' && x.seen_at === 'now')).toBe(true);
  });

  it('an `unarchived` frame brings back a notification that had left every list, fetched by id', async () => {
    const { WS, server, store } = await setup([1, 2, 3]);
    const all = tabFilter('all');
    store.subscribeList(all, () => {});
    await settled(() => store.getList(all).loaded);
    server.inbox.get(2)!.archived_at = 'x'; // archived in another tab
    WS.last.receive({ type: 'archived', ids: [2] });
    expect(store.getList(all).items.map((x) => x.id)).toEqual([3, 1]);
    server.inbox.get(2)!.archived_at = null;
    server.calls.length = 0;
    WS.last.receive({ type: 'unarchived', ids: [2] });
    await settled(() => store.getList(all).items.length === 3);
    expect(store.getList(all).items.map((x) => x.id)).toEqual([3, 2, 1]);
    expect(server.calls).toEqual(['GET /notifications?limit=1&before=3']);
  });

  it('an `unread` frame brings back to an unread tab a notification read elsewhere, fetched by id', async () => {
    const { WS, server, store } = await setup([1, 2, 3]);
    const unread = tabFilter('unread');
    store.subscribeList(unread, () => {});
    await settled(() => store.getList(unread).loaded);
    server.inbox.get(1)!.read_at = 'x';
    WS.last.receive({ type: 'read', ids: [1], read_at: 'x' });
    expect(store.getList(unread).items.map((x) => x.id)).toEqual([3, 2]);
    server.inbox.get(1)!.read_at = null;
    WS.last.receive({ type: 'unread', ids: [1] });
    await settled(() => store.getList(unread).items.length === 3);
    expect(store.getList(unread).items.map((x) => x.id)).toEqual([3, 2, 1]);
  });

  it('a notification fetched by id is not placed when another change came meanwhile: the lists are fetched again', async () => {
    const server = fakeServer([1, 2, 3]);
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    // The answer for the one notification is computed at once and delivered only when released.
    const fetch: FetchLike = async (input, init) => {
      const answer = await server.fetch(input, init);
      if (String(input).includes('before=')) await held;
      return answer;
    };
    const WS = createFakeWebSocket();
    const client = new HeraldClient({ url: 'http://h', userId: 'u1', getToken: async () => 't', WebSocket: WS, fetch });
    const store = getInboxStore(client);
    client.connect();
    await tick();
    WS.last.receive(readyFrame());
    const all = tabFilter('all');
    store.subscribeList(all, () => {});
    await settled(() => store.getList(all).loaded);
    server.inbox.get(2)!.archived_at = 'x';
    WS.last.receive({ type: 'archived', ids: [2] });
    server.inbox.get(2)!.archived_at = null;
    WS.last.receive({ type: 'unarchived', ids: [2] });
    await settled(() => server.calls.some((c) => c.includes('before=3')));
    // Archived again before that answer arrives.
    server.inbox.get(2)!.archived_at = 'x';
    WS.last.receive({ type: 'archived', ids: [2] });
    const firstPages = server.calls.filter((c) => c === 'GET /notifications').length;
    release();
    await settled(() => server.calls.filter((c) => c === 'GET /notifications').length > firstPages);
    await settled(() => !store.getList(all).loading);
    expect(store.getList(all).items.map((x) => x.id)).toEqual([3, 1]);
  });

  it('a refetch (resync, reconnect) fetches every page loaded, so rows below the first page are fresh too', async () => {
    const { WS, server, store } = await setup([1, 2, 3, 4, 5, 6, 7]);
    const f = tabFilter('all', { limit: 2 });
    store.subscribeList(f, () => {});
    await settled(() => store.getList(f).loaded);
    await store.fetchMore(f);
    await store.fetchMore(f);
    expect(store.getList(f).items.map((x) => x.id)).toEqual([7, 6, 5, 4, 3, 2]);
    expect(store.getList(f)).toMatchObject({ hasMore: true, nextBefore: 2 });
    // Changed elsewhere while this tab was away (no frame will tell): read, archived, deleted, all below page 1.
    server.inbox.get(4)!.read_at = 'elsewhere';
    server.inbox.get(3)!.archived_at = 'elsewhere';
    server.inbox.delete(2);
    WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 7, since_broadcast: 0 });
    await settled(() => server.count(/^GET \/notifications\?limit=2$/) === 2);
    await settled(() => !store.getList(f).loading);
    expect(server.calls.filter((c) => /before=/.test(c)).at(-1)).toBe('GET /notifications?limit=100&before=6');
    const items = store.getList(f).items;
    expect(items.map((x) => x.id)).toEqual([7, 6, 5, 4, 1]);
    expect(items.find((x) => x.id === 4)!.read_at).toBe('elsewhere');
    expect(store.getList(f)).toMatchObject({ hasMore: false, nextBefore: null });
  });

  it('a refetch stops after MAX_REFETCH_PAGES requests: what lies below is dropped and loads again on demand', async () => {
    const { WS, server, store } = await setup(Array.from({ length: 700 }, (_, i) => i + 1));
    const f = tabFilter('all', { limit: 100 });
    store.subscribeList(f, () => {});
    await settled(() => store.getList(f).loaded);
    for (let i = 0; i < 6; i++) await store.fetchMore(f);
    expect(store.getList(f).items).toHaveLength(700);
    const before = server.calls.length;
    WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 700, since_broadcast: 0 });
    await settled(() => server.calls.length - before === MAX_REFETCH_PAGES && !store.getList(f).loading);
    await tick();
    expect(server.calls.length - before).toBe(MAX_REFETCH_PAGES);
    expect(store.getList(f).items).toHaveLength(600);
    expect(store.getList(f)).toMatchObject({ hasMore: true, nextBefore: 101 });
  });

  it('markAllRead(filter) narrowed by type marks read only the unread ones of that type it knows, never read_all', async () => {
    const { server, store } = await setup([
      makeNotification(1, { type: 'info' }),
      makeNotification(2, { type: 'promo' }),
      makeNotification(3, { type: 'info' }),
      makeNotification(4, { type: 'promo' }),
      makeNotification(5, { type: 'promo', read_at: 'before' }),
    ]);
    const promos = tabFilter('all', { type: 'promo' });
    store.subscribeList(promos, () => {});
    await settled(() => store.getList(promos).loaded);
    await store.markAllRead(promos);
    expect(server.count(/read_all/)).toBe(0);
    expect(server.calls.filter((c) => c.startsWith('POST'))).toEqual(['POST /notifications/batch']);
    expect(server.batches.map((b) => ({ ...b, ids: [...b.ids].sort() }))).toEqual([{ action: 'read', ids: [2, 4] }]);
    expect(server.inbox.get(1)!.read_at).toBeNull();
    expect(server.inbox.get(3)!.read_at).toBeNull();
    expect(store.getList(promos).items.every((n) => n.read_at !== null)).toBe(true);
    // Not narrowed: the server's read_all.
    await store.markAllRead(tabFilter('unread'));
    expect(server.count(/POST \/notifications\/read_all/)).toBe(1);
  });

  it("an action's answer does not undo a newer frame that arrived while it was on its way (another tab's change)", async () => {
    const { WS, server, store } = await setup([makeNotification(1)]);
    const all = tabFilter('all');
    const archived = tabFilter('archived');
    store.subscribeList(all, () => {});
    store.subscribeList(archived, () => {});
    await settled(() => store.getList(all).loaded && store.getList(archived).loaded);
    server.hold();
    const archiving = store.archive(1);
    await settled(() => server.waiting() === 1);
    // This tab's archive commits, then another tab's unarchive: their frames, in commit order, come first.
    WS.last.receive({ type: 'archived', ids: [1] });
    WS.last.receive({ type: 'unarchived', ids: [1] });
    server.release(true);
    await archiving;
    expect(store.getList(all).items.map((n) => [n.id, n.archived_at])).toEqual([[1, null]]);
    expect(store.getList(archived).items).toEqual([]);
    // With no frame meanwhile, the answer is placed as before.
    await store.archive(1);
    expect(store.getList(archived).items.map((n) => n.id)).toEqual([1]);
  });

  it('batch() sends at most MAX_BATCH ids a request, tries every request and rejects with the first failure', async () => {
    const ids = Array.from({ length: 2 * MAX_BATCH + 1 }, (_, i) => i + 1);
    const { server, store } = await setup(ids.map((id) => makeNotification(id, { type: 'promo' })));
    const all = tabFilter('all', { limit: 100 });
    store.subscribeList(all, () => {});
    await settled(() => store.getList(all).loaded);
    await store.batch('archive', ids);
    expect(server.batches.map((b) => b.ids.length)).toEqual([MAX_BATCH, MAX_BATCH, 1]);
    expect(store.getList(all).items).toEqual([]);
    await store.batch('delete', [1, 2]);
    expect(server.inbox.has(1) || server.inbox.has(2)).toBe(false);
    server.fail(503);
    await expect(store.batch('unarchive', ids)).rejects.toMatchObject({ status: 503 });
    expect(server.count(/POST \/notifications\/batch/)).toBe(3 + 1 + 3);
  });

  it('a list nobody shows is not fetched on stale, but is when shown again', async () => {
    const { WS, server, store } = await setup([1]);
    const f = tabFilter('all');
    const off = store.subscribeList(f, () => {});
    await settled(() => store.getList(f).loaded);
    off();
    WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 1, since_broadcast: 0 });
    await tick();
    const lists = /^GET \/notifications(\?|$)/;
    expect(server.count(lists)).toBe(1);
    store.subscribeList(f, () => {});
    await settled(() => server.count(lists) === 2);
  });

  it('a first page fetched again drops what left the server, even items newer than the page', async () => {
    const { WS, server, store } = await setup([1, 2, 3]);
    const f = tabFilter('all');
    store.subscribeList(f, () => {});
    await settled(() => store.getList(f).loaded);
    // Erased on the server (a purge) but for the oldest; then a refetch, while a new one arrives live.
    server.inbox.delete(2);
    server.inbox.delete(3);
    const refetch = store.refreshAll();
    const n = makeNotification(4);
    server.inbox.set(4, n);
    WS.last.receive({ type: 'notification', event_type: 'e', body: {}, notification: n });
    await refetch;
    await settled(() => !store.getList(f).loading);
    expect(store.getList(f).items.map((x) => x.id)).toEqual([4, 1]);
  });

  it('lists put off for the first connect are fetched when the socket cannot open (a server down)', async () => {
    const { WS, server, client, store } = unconnected([1], { backoff: { minDelayMs: 60_000, maxDelayMs: 60_000 } });
    client.connect();
    const f = tabFilter('all');
    store.subscribeList(f, () => {});
    await tick();
    expect(server.count(/^GET \/notifications\?/)).toBe(0); // waiting for `connected`
    WS.last.fail();
    await settled(() => store.getList(f).loaded);
    expect(store.getList(f).items.map((x) => x.id)).toEqual([1]);
    client.close();
  });

  it.each(['a read frame', 'a seen_all frame', "the store's own markRead"] as const)(
    'a first page answered after %s is fetched again, not shown over the newer state',
    async (change) => {
      let late!: ReturnType<typeof lateAnswers>;
      const { WS, server, store } = await setup([1, 2], (s) => (late = lateAnswers(s)).fetch);
      const f = tabFilter('all');
      late.hold();
      store.subscribeList(f, () => {});
      await settled(() => late.waiting() === 1); // the page is computed: 2 unread and unseen
      late.hold(false);
      if (change === 'a read frame') {
        server.inbox.get(2)!.read_at = 'elsewhere';
        WS.last.receive({ type: 'read', ids: [2], read_at: 'elsewhere' });
      } else if (change === 'a seen_all frame') {
        server.inbox.get(2)!.seen_at = 'elsewhere';
        WS.last.receive({ type: 'seen_all', up_to: 2, seen_at: 'elsewhere' });
      } else {
        await store.markRead(2);
      }
      late.release();
      await settled(() => store.getList(f).loaded && !store.getList(f).loading);
      const two = store.getList(f).items.find((n) => n.id === 2)!;
      expect(change === 'a seen_all frame' ? two.seen_at : two.read_at).not.toBeNull();
      expect(server.count(/^GET \/notifications$/)).toBe(2);
    },
  );

  it("a notification pushed while a list's first page is on its way joins that list", async () => {
    let late!: ReturnType<typeof lateAnswers>;
    const { WS, server, store } = await setup([1], (s) => (late = lateAnswers(s)).fetch);
    const f = tabFilter('all');
    late.hold();
    store.subscribeList(f, () => {});
    await settled(() => late.waiting() === 1); // the page has 1 only
    const n = makeNotification(2);
    server.inbox.set(2, n);
    WS.last.receive({ type: 'notification', event_type: 'e', body: {}, notification: n });
    late.hold(false);
    late.release();
    await settled(() => store.getList(f).loaded);
    expect(store.getList(f).items.map((x) => x.id)).toEqual([2, 1]);
  });

  it('a notification pushed during a refetch stays, though its id is below the newest listed (another chain)', async () => {
    // A targeted notification committed after a broadcast with a greater id (two nodes): its id was compared
    // with the list's newest and it vanished until the next refetch.
    let late!: ReturnType<typeof lateAnswers>;
    const { WS, server, store } = await setup([5, 100], (s) => (late = lateAnswers(s)).fetch);
    const f = tabFilter('all');
    store.subscribeList(f, () => {});
    await settled(() => store.getList(f).loaded);
    late.hold();
    const refetch = store.refreshAll();
    await settled(() => server.count(/^GET \/notifications$/) === 2); // the page holds 100 and 5
    await tick();
    late.hold(false);
    const n = makeNotification(95);
    server.inbox.set(95, n);
    WS.last.receive({ type: 'notification', event_type: 'e', body: {}, notification: n });
    while (late.waiting() > 0) late.release();
    await refetch;
    await settled(() => !store.getList(f).loading);
    expect(store.getList(f).items.map((x) => x.id)).toEqual([100, 95, 5]);
  });

  it('lists and counts put off for the first connect fail visibly when the handshake is refused (unauthorized)', async () => {
    const { WS, server, client, store } = unconnected([1]);
    server.fail(401);
    client.connect();
    const f = tabFilter('all');
    store.subscribeList(f, () => {});
    store.subscribeCounts(() => {});
    await tick();
    expect(server.count(/^GET \/notifications(\/counts)?$/)).toBe(0); // waiting for `connected`
    WS.last.refuse(401);
    await settled(() => client.state === 'unauthorized');
    await settled(() => !store.getList(f).loading && store.getCounts().error !== null);
    expect(store.getList(f).error).toMatchObject({ status: 401 });
    expect(store.getCounts().error).toMatchObject({ status: 401 });
    // Shown after that: fetched (and failing) at once, not waiting for a `connected` that will not come.
    const other = tabFilter('unread');
    store.subscribeList(other, () => {});
    await settled(() => store.getList(other).error !== null);
  });

  it('lists and counts put off for the first connect fail visibly when getToken() fails', async () => {
    const { client, store } = unconnected([1], {
      getToken: async () => {
        throw new Error('signed out');
      },
      backoff: { minDelayMs: 60_000, maxDelayMs: 60_000 },
    });
    const f = tabFilter('all');
    store.subscribeList(f, () => {});
    store.subscribeCounts(() => {});
    client.connect();
    await settled(() => !store.getList(f).loading && store.getCounts().error !== null);
    expect(store.getList(f).error).toMatchObject({ code: 'token_error' });
    expect(store.getCounts().error).toMatchObject({ code: 'token_error' });
    client.close();
  });

  it('lists nobody shows are dropped beyond MAX_IDLE_LISTS, the least recently shown first; shown ones stay', async () => {
    const { store } = await setup([makeNotification(1, { type: 't0' })]);
    const shown = tabFilter('all');
    store.subscribeList(shown, () => {});
    const filters = Array.from({ length: MAX_IDLE_LISTS + 3 }, (_, i) => tabFilter('all', { type: `t${i}` }));
    for (const f of filters) {
      const off = store.subscribeList(f, () => {});
      await settled(() => store.getList(f).loaded);
      off();
    }
    // Newest first: reading an old one makes a new (empty) entry, which may drop another.
    for (const f of filters.slice(3).reverse()) expect(store.getList(f).loaded).toBe(true);
    for (const f of filters.slice(0, 3)) expect(store.getList(f).loaded).toBe(false);
    expect(store.getList(shown).loaded).toBe(true);
  });

  it('markAllSeen() does not zero a badge that a newer counts frame set while it was on its way', async () => {
    const { WS, server, store } = await setup([1, 2]);
    store.subscribeCounts(() => {});
    WS.last.receive({ type: 'counts', unread: 2, unseen: 2 });
    server.hold();
    const seeing = store.markAllSeen();
    await settled(() => server.waiting() === 1);
    // Its commit's frames, then a new notification's counts: all before the HTTP answer.
    WS.last.receive({ type: 'seen_all', up_to: 2, seen_at: 'now' });
    WS.last.receive({ type: 'counts', unread: 2, unseen: 0 });
    WS.last.receive({ type: 'counts', unread: 3, unseen: 1 });
    server.release(true);
    await seeing;
    expect(store.getCounts()).toMatchObject({ unread: 3, unseen: 1 });
  });

  it('refreshCounts() does not undo a counts frame that arrived while it was on its way', async () => {
    const { WS, server, store } = await setup([1]);
    store.subscribeCounts(() => {});
    WS.last.receive({ type: 'counts', unread: 1, unseen: 1 });
    server.hold();
    const refreshing = store.refreshCounts();
    await settled(() => server.waiting() === 1);
    WS.last.receive({ type: 'counts', unread: 7, unseen: 7 });
    server.release(true); // answers what the fake inbox holds: 1, 1
    await refreshing;
    expect(store.getCounts()).toMatchObject({ unread: 7, unseen: 7 });
    await store.refreshCounts(); // none meanwhile: the answer is applied
    expect(store.getCounts()).toMatchObject({ unread: 1, unseen: 1 });
  });
});
