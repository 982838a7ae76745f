// @vitest-environment jsdom
import { act, cleanup, renderHook, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  HeraldProvider,
  useConnectionState,
  useCounts,
  useInbox,
  useNotifications,
  usePreferences,
  useUnreadCount,
} from '../../src/react';
import WebSocket from 'ws';
import type { FetchLike, WebSocketConstructor } from '../../src';
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

const reason = skipReason('react');

describe.skipIf(reason !== null)('React hooks against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(tmp.dir);
  });
  afterEach(cleanup);
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  function setup(user: string) {
    const client = testClient(gw, user);
    const wrapper = ({ children }: { children: ReactNode }) => (
      <HeraldProvider client={client}>{children}</HeraldProvider>
    );
    const hooks = renderHook(
      () => ({ list: useNotifications({ limit: 2 }), unread: useUnreadCount(), state: useConnectionState() }),
      { wrapper },
    );
    return { client, ...hooks };
  }

  it('lists, pages, merges live notifications and follows actions', async () => {
    const user = newUser();
    const old = [await notify(gw, user), await notify(gw, user), await notify(gw, user)];
    const { client, result } = setup(user);
    try {
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(result.current.list.items.map((n) => n.id)).toEqual([old[2]!.id, old[1]!.id]));
      expect(result.current.list.hasMore).toBe(true);
      await waitFor(() => expect(result.current.unread.count).toBe(3));

      await act(() => result.current.list.fetchMore());
      expect(result.current.list.items.map((n) => n.id)).toEqual([old[2]!.id, old[1]!.id, old[0]!.id]);
      expect(result.current.list.hasMore).toBe(false);

      const live = await notify(gw, user);
      await waitFor(() => expect(result.current.list.items[0]!.id).toBe(live.id), { timeout: 5000 });
      expect(new Set(result.current.list.items.map((n) => n.id)).size).toBe(4);
      await waitFor(() => expect(result.current.unread.count).toBe(4), { timeout: 5000 });

      await act(() => result.current.list.markRead(live.id));
      expect(result.current.list.items[0]!.read_at).not.toBeNull();
      await waitFor(() => expect(result.current.unread.count).toBe(3), { timeout: 5000 });

      await act(() => result.current.list.remove(old[0]!.id));
      expect(result.current.list.items.map((n) => n.id)).not.toContain(old[0]!.id);

      await act(() => result.current.list.markAllRead());
      expect(result.current.list.items.every((n) => n.read_at !== null)).toBe(true);
      await waitFor(() => expect(result.current.unread.count).toBe(0), { timeout: 5000 });
      expect(result.current.list.error).toBeNull();
    } finally {
      client.close();
    }
  });

  it('applies read frames caused by another client of the same user', async () => {
    const user = newUser();
    const n = await notify(gw, user);
    const { client, result } = setup(user);
    const otherTab = testClient(gw, user);
    try {
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(result.current.list.items.map((i) => i.id)).toEqual([n.id]));
      await otherTab.markRead(n.id);
      await waitFor(() => expect(result.current.list.items[0]!.read_at).not.toBeNull(), { timeout: 5000 });
      await waitFor(() => expect(result.current.unread.count).toBe(0), { timeout: 5000 });
    } finally {
      client.close();
    }
  });

  it('HeraldProvider given options follows a new userId: the old session closes, the hooks show the new user', async () => {
    const alice = newUser();
    const bob = newUser();
    const a = [await notify(gw, alice), await notify(gw, alice)];
    const b = await notify(gw, bob);
    const opened: string[] = [];
    const closed: number[] = [];
    function Counting(url: string, protocols?: string | string[]): WebSocket {
      const ws = new WebSocket(url, protocols);
      opened.push(new URL(url).pathname);
      const close = ws.close.bind(ws);
      // Closes the SDK starts, on an open socket: the WebSocket library's own call when the server answers the
      // closing handshake (the socket is closing by then) is not one.
      ws.close = (code?: number, reason?: string) => {
        if (ws.readyState === 1) closed.push(code ?? 0);
        return close(code, reason);
      };
      return ws;
    }
    const Ctor = Counting as unknown as WebSocketConstructor;
    const optionsFor = (userId: string) => ({
      url: gw.url,
      userId,
      getToken: async () => mintToken(userId),
      WebSocket: Ctor,
    });
    let userId = alice;
    const wrapper = ({ children }: { children: ReactNode }) => (
      <HeraldProvider options={optionsFor(userId)}>{children}</HeraldProvider>
    );
    const { result, rerender, unmount } = renderHook(
      () => ({ list: useNotifications(), unread: useUnreadCount(), state: useConnectionState() }),
      { wrapper },
    );
    try {
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(result.current.list.items.map((n) => n.id)).toEqual([a[1]!.id, a[0]!.id]));
      await waitFor(() => expect(result.current.unread.count).toBe(2));

      userId = bob;
      rerender();
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(result.current.list.items.map((n) => n.id)).toEqual([b.id]));
      await waitFor(() => expect(result.current.unread.count).toBe(1));
      expect(opened).toEqual([`/ws/${alice}`, `/ws/${bob}`]);
      await waitFor(() => expect(closed).toEqual([1000])); // alice's session, closed by the client

      const live = await notify(gw, bob);
      await notify(gw, alice); // not bob's: must not show up
      await waitFor(() => expect(result.current.list.items.map((n) => n.id)).toEqual([live.id, b.id]), {
        timeout: 5000,
      });
      await waitFor(() => expect(result.current.unread.count).toBe(2), { timeout: 5000 });
    } finally {
      unmount();
    }
  });

  it('two components on the same list and two on the counts: one list request, no count request, live counts', async () => {
    const user = newUser();
    const first = await notify(gw, user);
    const calls: string[] = [];
    const counting: FetchLike = (input, init) => {
      calls.push(`${init?.method ?? 'GET'} ${new URL(input).pathname.replace(/^.*\/users\/[^/]+/, '')}`);
      return fetch(input, init);
    };
    const client = testClient(gw, user, { fetch: counting });
    const wrapper = ({ children }: { children: ReactNode }) => (
      <HeraldProvider client={client}>{children}</HeraldProvider>
    );
    const { result } = renderHook(
      () => ({ a: useInbox(), b: useInbox(), bell: useCounts(), tab: useCounts(), state: useConnectionState() }),
      { wrapper },
    );
    try {
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(result.current.a.items.map((n) => n.id)).toEqual([first.id]));
      expect(result.current.b.items).toBe(result.current.a.items);
      await waitFor(() => expect(result.current.bell).toMatchObject({ unread: 1, unseen: 1 }));

      const live = await notify(gw, user);
      await waitFor(() => expect(result.current.b.items.map((n) => n.id)).toEqual([live.id, first.id]), {
        timeout: 5000,
      });
      await waitFor(() => expect(result.current.tab).toMatchObject({ unread: 2, unseen: 2 }), { timeout: 5000 });
      await act(async () => void (await result.current.a.markAllSeen()));
      await waitFor(() => expect(result.current.bell).toMatchObject({ unread: 2, unseen: 0 }), { timeout: 5000 });
      expect(calls).toEqual(['GET /notifications', 'POST /notifications/seen_all']);
    } finally {
      client.close();
    }
  });

  it('usePreferences: a type muted through the hook is listed but not pushed live nor counted; back on, it is pushed', async () => {
    const user = newUser();
    /** An `availability` notification (a type the gateway's rules store, so it is `known`). */
    const availability = async (week: number) => {
      const body = { event_type: 'availability.closed', referee_id: user, week_number: week, total_slots: 1 };
      const [r] = await postEvent(gw, body, 'sgad.availability', `availability.closed.${user}`);
      expect(r?.status).toBe('stored');
      return r!.notification_ids[0]!;
    };
    const patches: string[] = [];
    const recording: FetchLike = (input, init) => {
      if (init?.method === 'PATCH') patches.push(String(init.body));
      return fetch(input, init);
    };
    const client = testClient(gw, user, { fetch: recording });
    const pushed: number[] = [];
    client.on('notification', ({ notification }) => pushed.push(notification.id));
    const wrapper = ({ children }: { children: ReactNode }) => (
      <HeraldProvider client={client}>{children}</HeraldProvider>
    );
    const { result } = renderHook(
      () => ({ prefs: usePreferences(), counts: useCounts(), state: useConnectionState() }),
      { wrapper },
    );
    const row = () => result.current.prefs.types.find((r) => r.type === 'availability');
    try {
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(row()).toEqual({ type: 'availability', setting: 'on', source: 'default' }));
      expect(result.current.prefs.types.map((r) => r.type)).toEqual(result.current.prefs.preferences!.known);

      expect(await act(() => result.current.prefs.set('availability', 'muted'))).toBeNull();
      expect(row()).toEqual({ type: 'availability', setting: 'muted', source: 'user' });
      const muted = await availability(1);
      const loud = await notify(gw, user);
      await waitFor(() => expect(pushed).toEqual([loud.id]), { timeout: 5000 });
      await waitFor(() => expect(result.current.counts).toMatchObject({ unread: 1, unseen: 1 }), { timeout: 5000 });
      expect((await client.list()).items.map((n) => [n.id, n.muted])).toEqual([
        [loud.id, false],
        [muted, true],
      ]);

      // Back on, its default: the setting is forgotten, not pinned.
      expect(await act(() => result.current.prefs.set('availability', 'on'))).toBeNull();
      expect(row()).toEqual({ type: 'availability', setting: 'on', source: 'default' });
      expect(patches).toEqual(['{"types":{"availability":"muted"}}', '{"types":{"availability":"default"}}']);
      expect((await client.getPreferences()).types).toEqual({});
      const again = await availability(2);
      await waitFor(() => expect(pushed).toEqual([loud.id, again]), { timeout: 5000 });
      await waitFor(() => expect(result.current.counts).toMatchObject({ unread: 2, unseen: 2 }), { timeout: 5000 });
    } finally {
      client.close();
    }
  });
});
