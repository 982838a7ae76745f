/**
 * Issue 17 against a real gateway: the REST methods of contract A and C (unread, archive, unarchive, seen_all,
 * counts, list filters, preferences), the new frames reaching a live session, and the shared inbox store fed by
 * `counts` frames (the REST requests are counted).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { HeraldError, State, getInboxStore, type FetchLike, type HeraldClient } from '../../src';
import { newUser, notify, postEvent, skipReason, startGateway, tempDir, testClient, type Gateway } from './gateway';

const reason = skipReason('inbox-states');

/** An availability notification for `user` (type `availability`, related object `availability_week` `week`). */
async function week(gw: Gateway, user: string, week: number): Promise<number> {
  const body = { event_type: 'availability.closed', referee_id: user, week_number: week, total_slots: 1 };
  const results = await postEvent(gw, body, 'sgad.availability', `availability.closed.${user}`);
  const id = results[0]?.notification_ids[0];
  if (results[0]?.status !== 'stored' || id === undefined) throw new Error(`not stored: ${JSON.stringify(results)}`);
  return id;
}

/** `fetch` that records each request as `METHOD /path?query` (the path after `/users/{id}`). */
function countingFetch(): { fetch: FetchLike; calls: string[]; count: (re: RegExp) => number } {
  const calls: string[] = [];
  const fetchFn: FetchLike = (input, init) => {
    const url = new URL(input);
    calls.push(`${init?.method ?? 'GET'} ${url.pathname.replace(/^.*\/users\/[^/]+/, '')}${url.search}`);
    return fetch(input, init);
  };
  return { fetch: fetchFn, calls, count: (re) => calls.filter((c) => re.test(c)).length };
}

async function connected(client: HeraldClient<any>): Promise<void> {
  client.connect();
  await vi.waitFor(() => expect(client.state).toBe(State.Connected), { timeout: 5000 });
}

describe.skipIf(reason !== null)('inbox states against a real gateway (contract A, B, C)', () => {
  const tmp = tempDir();
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(tmp.dir);
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  it('markUnread, archive, unarchive, markAllSeen and counts over REST', async () => {
    const user = newUser();
    const a = await notify(gw, user);
    const b = await notify(gw, user);
    const client = testClient(gw, user);
    expect(await client.counts()).toEqual({ unread: 2, unseen: 2 });

    const read = await client.markRead(a.id);
    expect(read.read_at).not.toBeNull();
    expect(read.seen_at).not.toBeNull(); // reading implies seeing
    expect(await client.counts()).toEqual({ unread: 1, unseen: 1 });
    const unread = await client.markUnread(a.id);
    expect(unread).toMatchObject({ id: a.id, read_at: null });
    expect(await client.counts()).toEqual({ unread: 2, unseen: 1 });

    const seen = await client.markAllSeen();
    expect(seen.up_to).toBeGreaterThanOrEqual(b.id);
    expect(typeof seen.seen_at).toBe('string');
    expect(await client.counts()).toEqual({ unread: 2, unseen: 0 });

    const archived = await client.archive(b.id);
    expect(archived.archived_at).not.toBeNull();
    expect(await client.counts()).toEqual({ unread: 1, unseen: 0 }); // archived ones count in neither
    expect((await client.list()).items.map((n) => n.id)).toEqual([a.id]);
    expect((await client.list({ archived: true })).items.map((n) => n.id)).toEqual([b.id]);
    const back = await client.unarchive(b.id);
    expect(back.archived_at).toBeNull();
    expect((await client.list()).items.map((n) => n.id)).toEqual([b.id, a.id]);
    expect(await client.counts()).toEqual({ unread: 2, unseen: 0 });
    expect(await client.unreadCount()).toBe(2); // the old endpoint agrees

    const missing = await client.archive(987_654_321).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(HeraldError);
    expect(missing).toMatchObject({ status: 404, code: 'not_found' });
  });

  it('lists filtered by type and by related object', async () => {
    const user = newUser();
    const other = await notify(gw, user);
    const w1 = await week(gw, user, 1);
    const w2 = await week(gw, user, 2);
    const client = testClient(gw, user);
    const all = await client.list();
    expect(all.items.map((n) => n.id)).toEqual([w2, w1, other.id]);
    const type = all.items[0]!.type;
    expect(all.items[2]!.type).not.toBe(type);

    expect((await client.list({ type })).items.map((n) => n.id)).toEqual([w2, w1]);
    expect((await client.list({ related_type: 'availability_week' })).items.map((n) => n.id)).toEqual([w2, w1]);
    expect((await client.list({ related_type: 'availability_week', related_id: '1' })).items.map((n) => n.id)).toEqual([
      w1,
    ]);
    await client.markRead(w2);
    expect((await client.list({ type, unread: true })).items.map((n) => n.id)).toEqual([w1]);
  });

  it('preferences: get the defaults, mute a type (stored, listed as muted, not pushed, not counted), unmute', async () => {
    const user = newUser();
    const client = testClient(gw, user);
    const initial = await client.getPreferences();
    expect(initial).toEqual({ types: {}, defaults: expect.any(Object), known: expect.any(Array) });
    expect(initial.known).toContain('availability');

    const set = await client.setPreferences({ availability: 'muted' });
    expect(set.types).toEqual({ availability: 'muted' });
    expect((await client.getPreferences()).types).toEqual({ availability: 'muted' });

    const pushed: number[] = [];
    client.on('notification', ({ notification }) => pushed.push(notification.id));
    await connected(client);
    try {
      const muted = await week(gw, user, 7);
      const loud = await notify(gw, user);
      await vi.waitFor(() => expect(pushed).toEqual([loud.id]), { timeout: 5000 });
      const listed = (await client.list()).items;
      expect(listed.map((n) => [n.id, n.muted])).toEqual([
        [loud.id, false],
        [muted, true],
      ]);
      expect(await client.counts()).toEqual({ unread: 1, unseen: 1 });
    } finally {
      client.close();
    }

    const bad = await client.setPreferences({ availability: 'loud' as unknown as 'on' }).catch((e: unknown) => e);
    expect(bad).toMatchObject({ name: 'HeraldError', status: 400 });
    expect((await client.setPreferences({})).types).toEqual({});

    // A patch changes only the types it names; `default` forgets one.
    await client.setPreferences({ availability: 'muted', stage: 'on' });
    const patched = await client.patchPreferences({ stage: 'default', evaluation: 'muted' });
    expect(patched.types).toEqual({ availability: 'muted', evaluation: 'muted' });
    expect((await client.getPreferences()).types).toEqual(patched.types);
  });

  it('counts, unread, archived, unarchived and seen_all frames reach a live session', async () => {
    const user = newUser();
    const n = await notify(gw, user);
    const client = testClient(gw, user);
    const other = testClient(gw, user); // another tab, over REST
    const frames: string[] = [];
    client.on('counts', ({ unread, unseen }) => frames.push(`counts ${unread}/${unseen}`));
    client.on('unread', ({ ids }) => frames.push(`unread ${ids.join(',')}`));
    client.on('archived', ({ ids }) => frames.push(`archived ${ids.join(',')}`));
    client.on('unarchived', ({ ids }) => frames.push(`unarchived ${ids.join(',')}`));
    client.on('seen_all', ({ upTo }) => frames.push(`seen_all ${upTo >= n.id}`));
    client.on('read', ({ ids }) => frames.push(`read ${ids.join(',')}`));
    /** Frames from `from` on, sorted: a change's own frame and its `counts` frame may come in either order. */
    const since = (from: number) => frames.slice(from).sort();
    await connected(client);
    try {
      await vi.waitFor(() => expect(frames).toEqual(['counts 1/1']), { timeout: 5000 }); // after `ready`
      await other.markRead(n.id);
      await vi.waitFor(() => expect(since(1)).toEqual([`read ${n.id}`, 'counts 0/0'].sort()), { timeout: 5000 });
      await other.markUnread(n.id);
      await vi.waitFor(() => expect(since(3)).toEqual([`unread ${n.id}`, 'counts 1/0'].sort()), { timeout: 5000 });
      await other.archive(n.id);
      await vi.waitFor(() => expect(since(5)).toEqual([`archived ${n.id}`, 'counts 0/0'].sort()), { timeout: 5000 });
      await other.unarchive(n.id);
      await vi.waitFor(() => expect(since(7)).toEqual([`unarchived ${n.id}`, 'counts 1/0'].sort()), {
        timeout: 5000,
      });
      await notify(gw, user);
      await vi.waitFor(() => expect(since(9)).toEqual(['counts 2/1'].sort()), { timeout: 5000 });
      await other.markAllSeen();
      await vi.waitFor(() => expect(since(10)).toEqual(['seen_all true', 'counts 2/0'].sort()), { timeout: 5000 });
    } finally {
      client.close();
    }
  });

  it('the shared store: counts follow the counts frames with no REST count request; two lists, one fetch', async () => {
    const user = newUser();
    await notify(gw, user);
    const http = countingFetch();
    const client = testClient(gw, user, { fetch: http.fetch });
    const store = getInboxStore(client);
    // Two components showing the same list and two showing the counts, mounted before the client connects.
    const offs = [
      store.subscribeList({ limit: 20 }, () => {}),
      store.subscribeList({ limit: 20 }, () => {}),
      store.subscribeCounts(() => {}),
      store.subscribeCounts(() => {}),
    ];
    await connected(client);
    try {
      await vi.waitFor(() => expect(store.getList({ limit: 20 }).items).toHaveLength(1), { timeout: 5000 });
      await vi.waitFor(() => expect(store.getCounts()).toMatchObject({ unread: 1, unseen: 1, loaded: true }));

      // A burst of live notifications and reads from "another tab": the counts follow, REST is not asked.
      const other = testClient(gw, user);
      const ids: number[] = [];
      for (let i = 0; i < 5; i++) ids.push((await notify(gw, user)).id);
      await vi.waitFor(() => expect(store.getCounts()).toMatchObject({ unread: 6, unseen: 6 }), { timeout: 5000 });
      await other.markRead(ids[0]!);
      await other.markAllSeen();
      await vi.waitFor(() => expect(store.getCounts()).toMatchObject({ unread: 5, unseen: 0 }), { timeout: 5000 });
      await vi.waitFor(() => expect(store.getList({ limit: 20 }).items).toHaveLength(6));
      expect(store.getList({ limit: 20 }).items.find((n) => n.id === ids[0])?.read_at).not.toBeNull();

      expect(http.count(/counts|unread_count/)).toBe(0);
      expect(http.count(/^GET \/notifications\?/)).toBe(1); // one list fetch for both subscribers
      expect(http.calls).toEqual(['GET /notifications?limit=20']);

      // The store's own actions: REST, and the list follows without a refetch.
      await store.archive(ids[1]!);
      expect(store.getList({ limit: 20 }).items.map((n) => n.id)).not.toContain(ids[1]);
      await vi.waitFor(() => expect(store.getCounts().unread).toBe(4), { timeout: 5000 });
      expect(http.count(/^GET /)).toBe(1);
    } finally {
      offs.forEach((off) => off());
      client.close();
    }
  });
});
