/**
 * The product review's findings (notes/review-product.md) against a real gateway: a narrowed "mark all read"
 * (1), pages below the first refetched after a reconnect (2), a REST timeout on a dead network (5), and the
 * reasons of `unauthorized` (9).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  State,
  getInboxStore,
  tabFilter,
  type HeraldClient,
  type Notification,
  type UnauthorizedContext,
} from '../../src';
import {
  mintToken,
  newUser,
  notify,
  postEvent,
  skipReason,
  startGateway,
  tempDir,
  testClient,
  type Gateway,
} from './gateway';

const reason = skipReason('product-review');

/** An availability notification for `user` (type `availability`, related object `availability_week` `week`). */
async function week(gw: Gateway, user: string, n: number): Promise<number> {
  const body = { event_type: 'availability.closed', referee_id: user, week_number: n, total_slots: 1 };
  const results = await postEvent(gw, body, 'sgad.availability', `availability.closed.${user}`);
  const id = results[0]?.notification_ids[0];
  if (results[0]?.status !== 'stored' || id === undefined) throw new Error(`not stored: ${JSON.stringify(results)}`);
  return id;
}

describe.skipIf(reason !== null)('product review findings against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  const clients: HeraldClient<any>[] = [];
  const track = <C extends HeraldClient<any>>(c: C) => (clients.push(c), c);
  const closers: (() => void)[] = [];

  beforeAll(async () => {
    gw = await startGateway(tmp.dir);
  });
  afterEach(() => {
    clients.splice(0).forEach((c) => c.close());
    closers.splice(0).forEach((f) => f());
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  const connected = (c: HeraldClient<any>) =>
    vi.waitFor(() => expect(c.state).toBe(State.Connected), { timeout: 10_000 });

  it('1: "mark all read" in a list narrowed by type marks that type read, and leaves the others unread', async () => {
    const user = newUser();
    const info = await notify(gw, user, 'your invoice');
    const w1 = await week(gw, user, 1);
    const w2 = await week(gw, user, 2);
    const client = track(testClient(gw, user));
    const store = getInboxStore(client);
    client.connect();
    await connected(client);
    const weeks = tabFilter('all', { type: 'availability' });
    store.subscribeList(weeks, () => {});
    await vi.waitFor(() => expect(store.getList(weeks).items.map((n) => n.id)).toEqual([w2, w1]), { timeout: 5000 });
    await store.markAllRead(weeks);
    const all = await client.list();
    const readState = (id: number) => all.items.find((n) => n.id === id)!.read_at !== null;
    expect([readState(w2), readState(w1), readState(info.id)]).toEqual([true, true, false]);
    await vi.waitFor(() => expect(store.getCounts().unread).toBe(1), { timeout: 5000 });
  });

  it('2: after a reconnect, rows below the first page show what changed meanwhile (read, archived, deleted)', async () => {
    const user = newUser();
    const ids: number[] = [];
    for (let i = 0; i < 7; i++) ids.push((await notify(gw, user, `n${i}`)).id);
    const client = track(testClient(gw, user));
    const store = getInboxStore(client);
    client.connect();
    await connected(client);
    const f = tabFilter('all', { limit: 3 });
    store.subscribeList(f, () => {});
    await vi.waitFor(() => expect(store.getList(f).loaded).toBe(true), { timeout: 5000 });
    await store.fetchMore(f);
    await store.fetchMore(f);
    expect(store.getList(f).items).toHaveLength(7);
    // Away (no frames), another device changes the oldest ones, all below the first page.
    client.close();
    const other = testClient(gw, user);
    await other.markRead(ids[0]!);
    await other.archive(ids[1]!);
    await other.delete(ids[2]!);
    client.connect();
    await connected(client);
    const item = (id: number): Notification | undefined => store.getList(f).items.find((n) => n.id === id);
    await vi.waitFor(
      () => {
        expect(item(ids[0]!)?.read_at).not.toBeNull();
        expect(item(ids[1]!)).toBeUndefined();
        expect(item(ids[2]!)).toBeUndefined();
      },
      { timeout: 5000 },
    );
    expect(store.getList(f).items.map((n) => n.id)).toEqual([ids[6], ids[5], ids[4], ids[3], ids[0]]);
    expect(store.getList(f).hasMore).toBe(false);
  });

  it('5: a REST request to a server that never answers (a black hole) rejects with code timeout', async () => {
    const sockets: Socket[] = [];
    const hole: Server = createServer((s) => {
      sockets.push(s);
      s.resume(); // reads the request, never answers
    });
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', () => r()));
    closers.push(() => {
      sockets.forEach((s) => s.destroy());
      hole.close();
    });
    const port = (hole.address() as { port: number }).port;
    const client = testClient({ url: `http://127.0.0.1:${port}` }, newUser(), { requestTimeoutMs: 300 });
    const started = Date.now();
    await expect(client.markRead(1)).rejects.toMatchObject({ status: 0, code: 'timeout' });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("9: an expired token's unauthorized carries the server's reason (token_expired), shown status or not", async () => {
    const user = newUser();
    const token = mintToken(user, -120);
    const client = track(testClient(gw, user, { getToken: async () => token }));
    const events: UnauthorizedContext[] = [];
    client.on('unauthorized', (u) => events.push(u));
    client.connect();
    await vi.waitFor(() => expect(client.state).toBe(State.Unauthorized), { timeout: 10_000 });
    expect(events.map((e) => [e.status, e.via, e.error.code])).toEqual([[401, 'handshake', 'token_expired']]);

    const forged = track(testClient(gw, user, { getToken: async () => mintToken(user, 3600, 'another-secret-16b') }));
    const codes: string[] = [];
    forged.on('unauthorized', (u) => codes.push(u.error.code));
    forged.connect();
    await vi.waitFor(() => expect(codes).toEqual(['invalid_credentials']), { timeout: 10_000 });
  });

  it('9: a getToken that keeps failing ends in unauthorized (via token), not an endless "reconnecting"', async () => {
    const client = track(
      testClient(gw, newUser(), {
        maxTokenFailures: 3,
        getToken: async () => {
          throw new Error('refresh token revoked');
        },
      }),
    );
    const events: UnauthorizedContext[] = [];
    client.on('unauthorized', (u) => events.push(u));
    client.connect();
    await vi.waitFor(() => expect(client.state).toBe(State.Unauthorized), { timeout: 10_000 });
    expect(events.map((e) => [e.status, e.via, e.error.code, e.error.message])).toEqual([
      [0, 'token', 'token_error', 'refresh token revoked'],
    ]);
  });
});
