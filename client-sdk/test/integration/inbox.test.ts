import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { HeraldError, State, type ReadContext } from '../../src';
import { mintToken, newUser, notify, skipReason, startGateway, tempDir, testClient, type Gateway } from './gateway';

const reason = skipReason('inbox');

describe.skipIf(reason !== null)('REST inbox against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(tmp.dir);
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  it('pages newest first with limit and before', async () => {
    const user = newUser();
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push((await notify(gw, user)).id);
    const client = testClient(gw, user);

    const p1 = await client.list({ limit: 2 });
    expect(p1.items.map((n) => n.id)).toEqual([ids[4], ids[3]]);
    expect(p1).toMatchObject({ has_more: true, next_before: ids[3] });
    const p2 = await client.list({ limit: 2, before: p1.next_before! });
    expect(p2.items.map((n) => n.id)).toEqual([ids[2], ids[1]]);
    const p3 = await client.list({ limit: 2, before: p2.next_before! });
    expect(p3.items.map((n) => n.id)).toEqual([ids[0]]);
    expect(p3).toMatchObject({ has_more: false, next_before: null });
    expect((await client.list()).items).toHaveLength(5);
  });

  it('unread count, markRead, unread filter, markAllRead and delete', async () => {
    const user = newUser();
    const a = await notify(gw, user);
    const b = await notify(gw, user);
    const c = await notify(gw, user);
    const client = testClient(gw, user);
    expect(await client.unreadCount()).toBe(3);

    const read = await client.markRead(b.id);
    expect(read).toMatchObject({ id: b.id, user_id: user });
    expect(read.read_at).not.toBeNull();
    expect(await client.unreadCount()).toBe(2);
    expect((await client.list({ unread: true })).items.map((n) => n.id)).toEqual([c.id, a.id]);

    const all = await client.markAllRead();
    expect(all.up_to).toBeGreaterThanOrEqual(c.id);
    expect(await client.unreadCount()).toBe(0);

    await client.delete(a.id);
    expect((await client.list()).items.map((n) => n.id)).toEqual([c.id, b.id]);
  });

  it('batch: one action on several notifications, the unknown ones named back, one frame to a live session', async () => {
    const user = newUser();
    const [a, b, c] = [await notify(gw, user), await notify(gw, user), await notify(gw, user)];
    const client = testClient(gw, user);
    const frames: string[] = [];
    client.on('archived', ({ ids }) => frames.push(`archived ${ids.join(',')}`));
    client.connect();
    try {
      await vi.waitFor(() => expect(client.state).toBe(State.Connected), { timeout: 5000 });
      const done = await client.batch('archive', [a.id, 987_654_321, c.id]);
      expect(done).toMatchObject({ action: 'archive', ids: [a.id, c.id], not_found: [987_654_321] });
      expect(done.items.every((n) => n.archived_at !== null)).toBe(true);
      expect((await client.list()).items.map((n) => n.id)).toEqual([b.id]);
      expect(await client.unreadCount()).toBe(1);
      await vi.waitFor(() => expect(frames).toEqual([`archived ${a.id},${c.id}`]), { timeout: 5000 });
      await expect(client.batch('read', [])).rejects.toMatchObject({ status: 400, code: 'bad_request' });
    } finally {
      client.close();
    }
  });

  it('errors are HeraldErrors with the server code', async () => {
    const user = newUser();
    const client = testClient(gw, user);
    const missing = await client.delete(987_654_321).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(HeraldError);
    expect(missing).toMatchObject({ status: 404 });
    expect((missing as HeraldError).code).toMatch(/\w+/);

    const other = testClient(gw, user, { getToken: async () => mintToken(newUser()) });
    await expect(other.list()).rejects.toMatchObject({ name: 'HeraldError', status: 403 });
    const bad = testClient(gw, user, { getToken: async () => 'not-a-jwt' });
    await expect(bad.unreadCount()).rejects.toMatchObject({ status: 401 });
  });

  it('a user reading faster than the gateway allows gets rate_limited with the seconds to wait', async () => {
    const dir = tempDir();
    // The config file's [server] table is the helper's: the limits go in the environment the gateway inherits.
    process.env.HERALD__SERVER__USER_READS_PER_SECOND = '1';
    process.env.HERALD__SERVER__USER_READS_BURST = '5';
    const limited = await startGateway(dir.dir).finally(() => {
      delete process.env.HERALD__SERVER__USER_READS_PER_SECOND;
      delete process.env.HERALD__SERVER__USER_READS_BURST;
    });
    try {
      const client = testClient(limited, newUser());
      await client.list({ unread: true }); // a filtered list: the whole burst
      const refused = await client.unreadCount().catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(HeraldError);
      expect(refused).toMatchObject({ status: 429, code: 'rate_limited' });
      expect((refused as HeraldError).retryAfterSecs).toBeGreaterThanOrEqual(1);
    } finally {
      await limited.stop();
      dir.remove();
    }
  });

  it('read, read_all and deleted done over REST reach a live session', async () => {
    const user = newUser();
    const [x, y] = [await notify(gw, user), await notify(gw, user)];
    const client = testClient(gw, user);
    const frames: string[] = [];
    client.on('read', ({ ids }: ReadContext) => frames.push(`read ${ids.join(',')}`));
    client.on('read_all', ({ upTo }) => frames.push(`read_all ${upTo >= y.id}`));
    client.on('deleted', ({ ids }) => frames.push(`deleted ${ids.join(',')}`));
    client.connect();
    try {
      await vi.waitFor(() => expect(client.state).toBe(State.Connected), { timeout: 5000 });
      await client.markRead(x.id);
      await client.markAllRead();
      await client.delete(y.id);
      await vi.waitFor(() => expect(frames).toEqual([`read ${x.id}`, 'read_all true', `deleted ${y.id}`]), {
        timeout: 5000,
      });
    } finally {
      client.close();
    }
  });
});
