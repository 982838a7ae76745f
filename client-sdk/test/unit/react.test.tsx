// @vitest-environment jsdom
import { act, cleanup, render, renderHook, screen, waitFor } from '@testing-library/react';
import { StrictMode, useLayoutEffect, type ReactNode } from 'react';
import { afterEach, describe, expect, it } from 'vitest';
import { HeraldClient, type FetchLike, type Notification } from '../../src';
import { HeraldProvider, useConnectionState, useNotifications, useUnreadCount } from '../../src/react';
import { createFakeWebSocket, notificationFrame, readyFrame } from '../helpers/fake-websocket';

/** An in-memory inbox behind a fake fetch: just enough of the REST API. */
function fakeServer(initial: number[]) {
  const inbox = new Map<number, Notification>(initial.map((id) => [id, notificationFrame(id).notification]));
  const json = (b: unknown, status = 200) => new Response(JSON.stringify(b), { status });
  /** Requests served, by path ('' for a page, '/unread_count', …). */
  const calls: string[] = [];
  const fetch: FetchLike = async (input, init) => {
    const url = new URL(input);
    calls.push(url.pathname.replace(/^.*\/notifications/, ''));
    const path = url.pathname.replace(/^.*\/notifications/, '');
    const method = init?.method ?? 'GET';
    const sorted = [...inbox.values()].sort((a, b) => b.id - a.id);
    if (method === 'GET' && path === '') {
      const limit = Number(url.searchParams.get('limit') ?? 20);
      const before = Number(url.searchParams.get('before') ?? Infinity);
      const unread = url.searchParams.get('unread') === 'true';
      const all = sorted.filter((n) => n.id < before && !n.archived_at && (!unread || !n.read_at));
      const items = all.slice(0, limit);
      const has_more = all.length > limit;
      return json({ items, has_more, next_before: has_more ? items[items.length - 1]!.id : null });
    }
    if (path === '/unread_count')
      return json({ unread_count: sorted.filter((n) => !n.read_at && !n.archived_at).length });
    if (path === '/read_all') {
      sorted.forEach((n) => (n.read_at ??= 'now'));
      return json({ up_to: sorted[0]?.id ?? 0, read_at: 'now' });
    }
    const m = /^\/(\d+)(\/read)?$/.exec(path);
    const n = m && inbox.get(Number(m[1]));
    if (!n) return json({ error: 'not_found', message: 'no such notification' }, 404);
    if (method === 'DELETE') {
      inbox.delete(n.id);
      return new Response(null, { status: 204 });
    }
    n.read_at = 'now';
    return json(n);
  };
  return { inbox, fetch, calls };
}

/** `held`: the requests `hold()` holds back (answered as the server is when asked, released together). */
function setup(initial: number[], held: (url: URL) => boolean = () => false) {
  const WS = createFakeWebSocket();
  const server = fakeServer(initial);
  let gate: Promise<void> | null = null;
  const fetch: FetchLike = async (input, init) => {
    const answer = await server.fetch(input, init);
    if (gate && held(new URL(input))) await gate;
    return answer;
  };
  /** Hold the `held` requests from now on; call what it returns to let them (and later ones) through. */
  const hold = () => {
    let release!: () => void;
    gate = new Promise((r) => (release = r));
    return () => {
      gate = null;
      release();
    };
  };
  const client = new HeraldClient({
    url: 'http://h',
    userId: 'u1',
    getToken: async () => 't',
    WebSocket: WS,
    fetch,
  });
  const wrapper = ({ children }: { children: ReactNode }) => (
    <HeraldProvider client={client}>{children}</HeraldProvider>
  );
  const push = (id: number) => {
    server.inbox.set(id, notificationFrame(id).notification);
    act(() => WS.last.receive(notificationFrame(id)));
  };
  return { WS, client, server, wrapper, push, hold };
}

afterEach(cleanup);

describe('React bindings', () => {
  it('useConnectionState follows the client', async () => {
    const { WS, client, wrapper } = setup([]);
    const { result } = renderHook(() => useConnectionState(), { wrapper });
    expect(result.current).toBe('connecting');
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame()));
    expect(result.current).toBe('connected');
    act(() => client.close());
    expect(result.current).toBe('disconnected');
  });

  it('useNotifications pages, merges live notifications, and applies frames and actions', async () => {
    const { WS, wrapper, push, server } = setup([1, 2, 3]);
    const { result } = renderHook(() => useNotifications({ limit: 2 }), { wrapper });
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([3, 2]));
    expect(result.current.hasMore).toBe(true);
    await act(() => result.current.fetchMore());
    expect(result.current.items.map((n) => n.id)).toEqual([3, 2, 1]);
    expect(result.current.hasMore).toBe(false);

    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(3)));
    push(4);
    push(4);
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([4, 3, 2, 1]));

    act(() => WS.last.receive({ type: 'read', ids: [4], read_at: 'elsewhere' }));
    expect(result.current.items[0]!.read_at).toBe('elsewhere');
    act(() => WS.last.receive({ type: 'deleted', ids: [1] }));
    server.inbox.delete(1);
    expect(result.current.items.map((n) => n.id)).toEqual([4, 3, 2]);

    await act(() => result.current.markRead(3));
    expect(result.current.items.find((n) => n.id === 3)!.read_at).toBe('now');
    await act(() => result.current.remove(2));
    expect(result.current.items.map((n) => n.id)).toEqual([4, 3]);
    await act(() => result.current.markAllRead());
    expect(result.current.items.every((n) => n.read_at !== null)).toBe(true);

    await act(() => result.current.remove(99));
    expect(result.current.error).toMatchObject({ status: 404, code: 'not_found' });
  });

  it('useNotifications after purged shows only what the server lists again: an empty first page is an empty list', async () => {
    const { WS, wrapper, server } = setup([1, 2, 3]);
    const { result } = renderHook(() => useNotifications(), { wrapper });
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([3, 2, 1]));
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(3)));
    // Erased but for a broadcast (listed again): the targeted ones above it are gone too.
    server.inbox.delete(2);
    server.inbox.delete(3);
    act(() => WS.last.receive({ type: 'purged' }));
    await waitFor(() => expect(result.current.loading).toBe(false));
    expect(result.current.items.map((n) => n.id)).toEqual([1]);
    // Nothing left at all.
    server.inbox.clear();
    act(() => WS.last.receive({ type: 'purged' }));
    await waitFor(() => expect(result.current.loading).toBe(false));
    expect(result.current.items).toEqual([]);
  });

  it('useNotifications after stale: the pages below the first are dropped (they were not refetched), then load fresh', async () => {
    const { WS, wrapper, server } = setup([1, 2, 3]);
    const { result } = renderHook(() => useNotifications({ limit: 2 }), { wrapper });
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(3)));
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([3, 2]));
    await act(() => result.current.fetchMore());
    expect(result.current.items.map((n) => n.id)).toEqual([3, 2, 1]);
    server.inbox.get(1)!.read_at = 'elsewhere'; // no frame says so (this session dropped frames)
    act(() => WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 3, since_broadcast: 0 }));
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([3, 2]));
    expect(result.current.hasMore).toBe(true);
    await act(() => result.current.fetchMore());
    expect(result.current.items.find((n) => n.id === 1)!.read_at).toBe('elsewhere');
  });

  it('useNotifications: a page out while a frame changes a listed row is fetched again, not laid over the change', async () => {
    const { WS, wrapper, server, hold } = setup([1, 2, 3], (url) => url.pathname.endsWith('/notifications'));
    const { result } = renderHook(() => useNotifications(), { wrapper });
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(3)));
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([3, 2, 1]));
    const release = hold();
    const pages = server.calls.filter((c) => c === '').length;
    act(() => WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 3, since_broadcast: 0 }));
    await waitFor(() => expect(server.calls.filter((c) => c === '').length).toBe(pages + 1));
    // While that page is out (it still holds 2, unread 3): 2 is deleted, 3 read, on another device.
    server.inbox.delete(2);
    server.inbox.get(3)!.read_at = 'elsewhere';
    act(() => WS.last.receive({ type: 'deleted', ids: [2] }));
    act(() => WS.last.receive({ type: 'read', ids: [3], read_at: 'elsewhere' }));
    expect(result.current.items.map((n) => n.id)).toEqual([3, 1]);
    release();
    await waitFor(() => expect(result.current.loading).toBe(false));
    expect(result.current.items.map((n) => n.id)).toEqual([3, 1]);
    expect(result.current.items[0]!.read_at).toBe('elsewhere');
  });

  it('useNotifications: an older page that lands after a refetch cut the list is dropped, leaving no gap', async () => {
    const { WS, wrapper, hold } = setup([1, 2, 3, 4, 5, 6], (url) => url.searchParams.has('before'));
    const { result } = renderHook(() => useNotifications({ limit: 2 }), { wrapper });
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(6)));
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([6, 5]));
    await act(() => result.current.fetchMore());
    expect(result.current.items.map((n) => n.id)).toEqual([6, 5, 4, 3]);
    const release = hold();
    let more!: Promise<void>;
    act(() => void (more = result.current.fetchMore())); // the page before 3, held
    act(() => WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 6, since_broadcast: 0 }));
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual([6, 5]));
    release();
    await act(() => more);
    expect(result.current.items.map((n) => n.id)).toEqual([6, 5]);
    await act(() => result.current.fetchMore());
    expect(result.current.items.map((n) => n.id)).toEqual([6, 5, 4, 3]);
  });

  it('useUnreadCount loads over REST and follows live frames', async () => {
    const { WS, wrapper, push, server } = setup([1, 2]);
    const { result } = renderHook(() => useUnreadCount(), { wrapper });
    await waitFor(() => expect(result.current).toMatchObject({ count: 2, loading: false }));
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(2)));
    push(3);
    await waitFor(() => expect(result.current.count).toBe(3));
    server.inbox.forEach((n) => (n.read_at = 'x'));
    act(() => WS.last.receive({ type: 'read_all', up_to: 3, read_at: 'x' }));
    await waitFor(() => expect(result.current.count).toBe(0));
  });

  it('useNotifications and useUnreadCount follow unread, archived and unarchived frames from other tabs', async () => {
    const { WS, wrapper, server } = setup([1, 2, 3]);
    const { result } = renderHook(
      () => ({ all: useNotifications(), unread: useNotifications({ unread: true }), count: useUnreadCount() }),
      { wrapper },
    );
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(3)));
    await waitFor(() => expect(result.current.count.count).toBe(3));
    const ids = (items: Notification[]) => items.map((n) => n.id);
    const at = (id: number) => server.inbox.get(id)!;

    at(1).read_at = 'x';
    act(() => WS.last.receive({ type: 'read', ids: [1], read_at: 'x' }));
    await waitFor(() => expect(result.current.count.count).toBe(2));
    expect(ids(result.current.unread.items)).toEqual([3, 2]);
    at(1).read_at = null;
    act(() => WS.last.receive({ type: 'unread', ids: [1] }));
    await waitFor(() => expect(ids(result.current.unread.items)).toEqual([3, 2, 1]));
    expect(result.current.all.items.find((n) => n.id === 1)!.read_at).toBeNull();
    await waitFor(() => expect(result.current.count.count).toBe(3));

    at(2).archived_at = 'x';
    act(() => WS.last.receive({ type: 'archived', ids: [2] }));
    expect(ids(result.current.all.items)).toEqual([3, 1]);
    await waitFor(() => expect(result.current.count.count).toBe(2));
    at(2).archived_at = null;
    act(() => WS.last.receive({ type: 'unarchived', ids: [2] }));
    await waitFor(() => expect(ids(result.current.all.items)).toEqual([3, 2, 1]));
    await waitFor(() => expect(result.current.count.count).toBe(3));
  });

  it('a reconnect refetches the page and the count once each (connected and stale are coalesced)', async () => {
    const { WS, wrapper, server } = setup([1, 2]);
    const { result } = renderHook(() => ({ list: useNotifications(), unread: useUnreadCount() }), { wrapper });
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(2)));
    await waitFor(() => expect(result.current.unread.count).toBe(2));
    await new Promise((r) => setTimeout(r, 20));
    const pages = () => server.calls.filter((c) => c === '').length;
    const counts = () => server.calls.filter((c) => c === '/unread_count').length;
    const [pagesBefore, countsBefore] = [pages(), counts()];

    // Read elsewhere while this tab was away: no `read` frame will say so.
    server.inbox.forEach((n) => (n.read_at = 'elsewhere'));
    act(() => WS.last.serverClose(1006));
    await waitFor(() => expect(WS.instances).toHaveLength(2), { timeout: 3000 });
    act(() => WS.last.receive(readyFrame(2)));
    await waitFor(() => expect(result.current.unread.count).toBe(0));
    await waitFor(() => expect(result.current.list.items.every((n) => n.read_at === 'elsewhere')).toBe(true));
    await new Promise((r) => setTimeout(r, 20));
    expect(pages() - pagesBefore).toBe(1);
    expect(counts() - countsBefore).toBe(1);
  });

  it('a resync refetches the page and the count (read state is not replayed)', async () => {
    const { WS, wrapper, server } = setup([1, 2, 3]);
    const { result } = renderHook(() => ({ list: useNotifications(), unread: useUnreadCount() }), { wrapper });
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame(3)));
    await waitFor(() => expect(result.current.unread.count).toBe(3));
    // Read and deleted elsewhere; the frames saying so were dropped with the overflowing queue.
    server.inbox.get(1)!.read_at = 'elsewhere';
    server.inbox.delete(2);
    act(() => WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 3, since_broadcast: 0 }));
    await waitFor(() => expect(result.current.unread.count).toBe(1));
    await waitFor(() =>
      expect(result.current.list.items.map((n) => [n.id, n.read_at])).toEqual([
        [3, null],
        [1, 'elsewhere'],
      ]),
    );
  });

  it('a provider given options owns its client: connects on mount, closes on unmount', async () => {
    const WS = createFakeWebSocket();
    function Status() {
      return <p>{useConnectionState()}</p>;
    }
    const { unmount } = render(
      <HeraldProvider options={{ url: 'http://h', userId: 'u', getToken: async () => 't', WebSocket: WS }}>
        <Status />
      </HeraldProvider>,
    );
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    act(() => WS.last.receive(readyFrame()));
    expect(screen.getByText('connected')).toBeTruthy();
    unmount();
    expect(WS.last.closedWith?.code).toBe(1000);
  });

  describe('HeraldProvider given options follows them', () => {
    /** Two users' inboxes behind one fetch, routed by the user id in the path. */
    function twoUsers() {
      const servers: Record<string, ReturnType<typeof fakeServer>> = {
        alice: fakeServer([1, 2]),
        bob: fakeServer([7]),
      };
      const fetch: FetchLike = (input, init) => {
        const user = /\/users\/([^/]+)\//.exec(new URL(input).pathname)![1]!;
        return servers[user]!.fetch(input, init);
      };
      return { servers, fetch };
    }
    const userOf = (url: string) => new URL(url).pathname.split('/').pop();

    function App(props: { userId: string; getToken: () => Promise<string>; WS: any; fetch: FetchLike; url?: string }) {
      return (
        <HeraldProvider
          options={{
            url: props.url ?? 'http://h',
            userId: props.userId,
            getToken: props.getToken,
            WebSocket: props.WS,
            fetch: props.fetch,
          }}
        >
          <Probe />
        </HeraldProvider>
      );
    }
    const seen: { ids: number[]; count: number; state: string }[] = [];
    function Probe() {
      const { items } = useNotifications();
      const { count } = useUnreadCount();
      const state = useConnectionState();
      // What was committed (a render React discards, as after a state reset during render, is not shown).
      useLayoutEffect(() => void seen.push({ ids: items.map((n) => n.id), count, state }));
      return <p data-testid="probe">{`${state} ${count} ${items.map((n) => n.id).join(',')}`}</p>;
    }
    const text = () => screen.getByTestId('probe').textContent;

    it('a new userId closes the old client and opens a new one; the hooks show only the new user', async () => {
      const WS = createFakeWebSocket();
      const { fetch } = twoUsers();
      const getToken = async () => 't';
      const { rerender } = render(<App userId="alice" getToken={getToken} WS={WS} fetch={fetch} />);
      await waitFor(() => expect(WS.instances).toHaveLength(1));
      act(() => WS.last.receive(readyFrame()));
      await waitFor(() => expect(text()).toBe('connected 2 2,1'));

      seen.length = 0;
      rerender(<App userId="bob" getToken={getToken} WS={WS} fetch={fetch} />);
      expect(WS.instances[0]!.closedWith?.code).toBe(1000);
      await waitFor(() => expect(WS.instances).toHaveLength(2));
      expect(userOf(WS.last.url)).toBe('bob');
      act(() => WS.last.receive(readyFrame()));
      await waitFor(() => expect(text()).toBe('connected 1 7'));
      // Never a render with alice's items or count under the new client.
      expect(seen.every((r) => r.ids.every((id) => id === 7) && r.count <= 1)).toBe(true);
      // A live frame on alice's old socket reaches nobody.
      act(() => WS.instances[0]!.receive(notificationFrame(3)));
      expect(text()).toBe('connected 1 7');
    });

    it('a new url opens a new client too; the same values in a new object (and a new getToken) do not', async () => {
      const WS = createFakeWebSocket();
      const { fetch } = twoUsers();
      let token = 't1';
      const { rerender } = render(<App userId="alice" getToken={async () => token} WS={WS} fetch={fetch} />);
      await waitFor(() => expect(WS.instances).toHaveLength(1));
      act(() => WS.last.receive(readyFrame()));
      token = 't2';
      rerender(<App userId="alice" getToken={async () => token} WS={WS} fetch={fetch} />);
      rerender(<App userId="alice" getToken={async () => token} WS={WS} fetch={fetch} />);
      expect(WS.instances).toHaveLength(1);
      expect(WS.last.closedWith).toBeNull();
      // The latest getToken is the one used on the next connect.
      act(() => WS.last.serverClose(4001));
      await waitFor(() => expect(WS.instances).toHaveLength(2));
      expect(WS.last.protocols).toEqual(['bearer', 't2']);

      rerender(<App userId="alice" getToken={async () => token} WS={WS} fetch={fetch} url="http://other" />);
      await waitFor(() => expect(WS.instances).toHaveLength(3));
      expect(WS.instances[1]!.closedWith?.code).toBe(1000);
      expect(new URL(WS.last.url).host).toBe('other');
    });

    it('in StrictMode a switch leaves exactly one socket open, for the new user', async () => {
      const WS = createFakeWebSocket();
      const { fetch } = twoUsers();
      const getToken = async () => 't';
      const app = (userId: string) => (
        <StrictMode>
          <App userId={userId} getToken={getToken} WS={WS} fetch={fetch} />
        </StrictMode>
      );
      const { rerender, unmount } = render(app('alice'));
      await waitFor(() => expect(WS.instances.filter((w) => w.closedWith === null)).toHaveLength(1));
      rerender(app('bob'));
      await waitFor(() => expect(WS.instances.some((w) => userOf(w.url) === 'bob')).toBe(true));
      await new Promise((r) => setTimeout(r, 50)); // let any stray connect land
      const open = WS.instances.filter((w) => w.closedWith === null);
      expect(open.map((w) => userOf(w.url))).toEqual(['bob']);
      unmount();
      expect(WS.instances.every((w) => w.closedWith !== null)).toBe(true);
    });

    it('unauthorized is exposed by useConnectionState; a new getToken makes the client connect again', async () => {
      const WS = createFakeWebSocket();
      WS.autoOpen = false;
      const { fetch } = twoUsers();
      const { rerender } = render(<App userId="alice" getToken={async () => 'bad'} WS={WS} fetch={fetch} />);
      await waitFor(() => expect(WS.instances).toHaveLength(1));
      act(() => WS.last.refuse(401));
      await waitFor(() => expect(text()).toMatch(/^unauthorized /));
      rerender(<App userId="alice" getToken={async () => 'good'} WS={WS} fetch={fetch} />);
      await waitFor(() => expect(WS.instances).toHaveLength(2));
      expect(WS.last.protocols).toEqual(['bearer', 'good']);
      act(() => WS.last.open());
      act(() => WS.last.receive(readyFrame()));
      await waitFor(() => expect(text()).toMatch(/^connected /));
    });
  });

  describe('outside a provider', () => {
    it('hooks outside a provider throw a clear error', () => {
      expect(() => renderHook(() => useConnectionState())).toThrow(/inside <HeraldProvider>/);
    });
  });
});
