import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HeraldClient, HeraldError, State, type HeraldClientOptions, type NotificationContext } from '../../src';
import {
  broadcastFrame,
  createFakeWebSocket,
  notificationFrame,
  readyFrame,
  replayedFrame,
} from '../helpers/fake-websocket';

type Fake = ReturnType<typeof createFakeWebSocket>;

let WS: Fake;
let tokens: number;

function makeClient(extra: Partial<HeraldClientOptions> = {}) {
  tokens = 0;
  const client = new HeraldClient({
    url: 'https://herald.example.com/base/',
    userId: 'u 1',
    getToken: async () => `tok${++tokens}`,
    WebSocket: WS,
    backoff: { minDelayMs: 100, maxDelayMs: 1000 },
    ...extra,
  });
  const states: string[] = [];
  const seen: NotificationContext[] = [];
  client.on('state', ({ oldState, newState }) => states.push(`${oldState}>${newState}`));
  client.on('notification', (n) => seen.push(n));
  return { client, states, seen };
}

/** Let the token promise resolve and the socket "open". */
const settle = () => vi.advanceTimersByTimeAsync(0);

beforeEach(() => {
  vi.useFakeTimers();
  WS = createFakeWebSocket();
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('state machine', () => {
  it('disconnected → connecting → connected, one state event per change', async () => {
    const { client, states } = makeClient();
    expect(client.state).toBe(State.Disconnected);
    client.connect();
    expect(client.state).toBe(State.Connecting);
    client.connect(); // no-op while connecting
    await settle();
    expect(WS.instances).toHaveLength(1);
    WS.last.receive(readyFrame());
    expect(client.state).toBe(State.Connected);
    expect(states).toEqual(['disconnected>connecting', 'connecting>connected']);
  });

  it('builds the ws URL from the http base and user id, and sends the token as the bearer sub-protocol', async () => {
    const { client } = makeClient();
    client.connect();
    await settle();
    const url = new URL(WS.last.url);
    expect(url.protocol).toBe('wss:');
    expect(url.pathname).toBe('/base/ws/u%201');
    expect(url.searchParams.has('token')).toBe(false);
    expect(WS.last.url).not.toContain('tok1');
    expect(WS.last.protocols).toEqual(['bearer', 'tok1']);
    expect(url.searchParams.has('since')).toBe(false);
  });

  it('a user id no inbox can have is refused when the client is made, before any socket or request', () => {
    // The gateway answers these with 400/404, which a browser shows as a network failure: retried forever.
    const bad: (string | number)[] = [
      '',
      'x'.repeat(257),
      'é'.repeat(129),
      'a\nb',
      'tab\there',
      '\u0085',
      1.5,
      2 ** 60,
    ];
    for (const userId of bad) {
      expect(() => makeClient({ userId }), JSON.stringify(userId)).toThrow(RangeError);
    }
    expect(WS.instances).toHaveLength(0);
    // The limits themselves are ids: 256 bytes, non-ASCII text, spaces, integers.
    for (const userId of ['x'.repeat(256), 'é'.repeat(128), 'ユーザー 7', ' padded ', 0, -3, 2 ** 53 - 1]) {
      expect(() => makeClient({ userId }), JSON.stringify(userId)).not.toThrow();
    }
  });

  it('a token that cannot be a sub-protocol (not an HTTP token) goes in the URL instead of failing', async () => {
    const { client } = makeClient({ getToken: async () => 'opaque/token+with=padding' });
    client.connect();
    await settle();
    expect(new URL(WS.last.url).searchParams.get('token')).toBe('opaque/token+with=padding');
    expect(WS.last.protocols).toBeUndefined();
  });

  it('tokenIn: query puts the token in the URL and asks for no sub-protocol (older gateways)', async () => {
    const { client } = makeClient({ tokenIn: 'query' });
    client.connect();
    await settle();
    expect(new URL(WS.last.url).searchParams.get('token')).toBe('tok1');
    expect(WS.last.protocols).toBeUndefined();
  });

  it('connected → connecting on an abnormal close, then back after the backoff delay', async () => {
    const { client, states } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.serverClose(1006);
    expect(client.state).toBe(State.Connecting);
    await vi.advanceTimersByTimeAsync(99);
    expect(WS.instances).toHaveLength(1); // min delay is 100ms
    await vi.advanceTimersByTimeAsync(1000);
    expect(WS.instances).toHaveLength(2);
    WS.last.receive(readyFrame());
    expect(states).toEqual([
      'disconnected>connecting',
      'connecting>connected',
      'connected>connecting',
      'connecting>connected',
    ]);
  });

  it.each([1001, 1011, 1013, 4008, 4009, 1006])('reconnects after close code %i', async (code) => {
    const { client } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.serverClose(code);
    await vi.advanceTimersByTimeAsync(1000);
    expect(WS.instances).toHaveLength(2);
    expect(client.state).toBe(State.Connecting);
  });

  it('stops on close code 1000', async () => {
    const { client, states } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.serverClose(1000);
    expect(client.state).toBe(State.Disconnected);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(WS.instances).toHaveLength(1);
    expect(states.at(-1)).toBe('connected>disconnected');
  });

  it('reports abnormal, internal-error and client-bug closes as errors and still reconnects', async () => {
    const { client } = makeClient();
    const errors: string[] = [];
    client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}:${error.message}`));
    client.connect();
    for (const code of [1008, 1006, 1011, 1001, 4008, 4009]) {
      await vi.advanceTimersByTimeAsync(1000);
      WS.last.receive(readyFrame());
      WS.last.serverClose(code, code === 1008 ? 'flood' : '');
    }
    expect(errors).toEqual([
      'server:close_1008:flood (1008)',
      'transport:close_1006:connection lost or refused (1006)',
      'server:close_1011:server closed the session (1011)',
    ]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(WS.instances).toHaveLength(7);
  });

  it('close() stops for good: closes the socket with 1000 and cancels a pending reconnect', async () => {
    const { client } = makeClient();
    client.connect();
    await settle();
    const first = WS.last;
    first.receive(readyFrame());
    client.close();
    expect(first.closedWith).toEqual({ code: 1000, reason: 'client closed' });
    expect(client.state).toBe(State.Disconnected);

    client.connect();
    await settle();
    WS.last.serverClose(1006); // now waiting to reconnect
    client.close();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(WS.instances).toHaveLength(2);
  });

  it('close() while getToken() is pending opens no socket', async () => {
    let release!: (t: string) => void;
    const { client } = makeClient({ getToken: () => new Promise((r) => (release = r)) });
    client.connect();
    client.close();
    release('late');
    await settle();
    expect(WS.instances).toHaveLength(0);
    expect(client.state).toBe(State.Disconnected);
  });

  it('backs off further with each failed attempt and resets once a session stayed up a ping interval', async () => {
    const delays: number[] = [];
    const { client } = makeClient({ backoff: { minDelayMs: 100, maxDelayMs: 100_000 } });
    vi.spyOn(Math, 'random').mockReturnValue(1);
    client.connect();
    await settle();
    for (let i = 0; i < 4; i++) {
      const before = Date.now();
      const n = WS.instances.length;
      WS.last.fail();
      while (WS.instances.length === n) await vi.advanceTimersByTimeAsync(10);
      delays.push(Date.now() - before);
    }
    expect(delays).toEqual([200, 300, 500, 900]);
    WS.last.receive(readyFrame(0, 1000));
    await vi.advanceTimersByTimeAsync(1000);
    const before = Date.now();
    WS.last.serverClose(1006);
    while (WS.instances.length === 5) await vi.advanceTimersByTimeAsync(10);
    expect(Date.now() - before).toBe(200);
  });

  it('a session closed right after ready (its store timing out) is a failed attempt: the backoff keeps growing', async () => {
    const delays: number[] = [];
    const { client } = makeClient({ backoff: { minDelayMs: 100, maxDelayMs: 100_000 } });
    vi.spyOn(Math, 'random').mockReturnValue(1);
    client.connect();
    await settle();
    for (let i = 0; i < 4; i++) {
      WS.last.receive(readyFrame(0, 25_000));
      WS.last.receive({ type: 'counts', unread: 0, unseen: 0 });
      const before = Date.now();
      const n = WS.instances.length;
      WS.last.serverClose(1013, 'store unavailable');
      while (WS.instances.length === n) await vi.advanceTimersByTimeAsync(10);
      delays.push(Date.now() - before);
    }
    // Before, every `ready` reset it: a reconnect every 0.5–1 s for as long as the store failed.
    expect(delays).toEqual([200, 300, 500, 900]);
  });

  it('an url that is not an absolute http(s) one is refused when the client is made', () => {
    // Before, `/herald` or an unrendered template left the client `connecting` for ever, with an unhandled rejection.
    for (const url of ['', '/herald', '{{ HERALD_URL }}', 'herald.example.com', 'ftp://herald.example.com']) {
      expect(() => makeClient({ url }), url).toThrow(RangeError);
    }
    expect(WS.instances).toHaveLength(0);
    for (const url of ['http://localhost:8080', 'https://herald.example.com/base/']) {
      expect(() => makeClient({ url }), url).not.toThrow();
    }
  });
});

describe('tokens', () => {
  it('calls getToken() for every connect', async () => {
    const { client } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.serverClose(1001);
    await vi.advanceTimersByTimeAsync(1000);
    expect(tokens).toBe(2);
    expect(WS.last.protocols).toEqual(['bearer', 'tok2']);
  });

  it('on 4001 gets a fresh token and reconnects at once', async () => {
    const { client } = makeClient({ backoff: { minDelayMs: 5000, maxDelayMs: 5000 } });
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.serverClose(4001, 'token expired');
    await settle();
    expect(WS.instances).toHaveLength(2);
    expect(WS.last.protocols).toEqual(['bearer', 'tok2']);
    // A second 4001 before the session got ready again waits for the backoff (no tight loop).
    WS.last.serverClose(4001);
    await settle();
    expect(WS.instances).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(5000);
    expect(WS.instances).toHaveLength(3);
  });

  it('a failing getToken() is reported and retried with backoff', async () => {
    let calls = 0;
    const { client } = makeClient({
      getToken: async () => {
        if (++calls === 1) throw new Error('auth server down');
        return 'ok';
      },
    });
    const errors: string[] = [];
    client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}:${error.message}`));
    client.connect();
    await settle();
    expect(errors).toEqual(['token:token_error:auth server down']);
    expect(WS.instances).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(WS.instances).toHaveLength(1);
  });
});

describe('a token service that never answers', () => {
  it('a getToken() that never settles is given up after connectTimeoutMs and retried with backoff', async () => {
    let calls = 0;
    const { client } = makeClient({
      connectTimeoutMs: 2000,
      getToken: () => (++calls === 1 ? new Promise<string>(() => {}) : Promise.resolve('t')),
    });
    const errors: string[] = [];
    client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}`));
    client.connect();
    await vi.advanceTimersByTimeAsync(2000 + 1000);
    expect(errors).toEqual(['token:timeout']);
    expect(WS.instances).toHaveLength(1);
    WS.last.receive(readyFrame());
    expect(client.state).toBe(State.Connected);
  });
});

describe('resume: one cursor per chain', () => {
  it('first connect has no since; the position is ready’s latest ids; reconnects resume from the cursors', async () => {
    const { client, seen } = makeClient();
    client.connect();
    await settle();
    expect(WS.last.since()).toBeNull();
    expect(WS.last.sinceBroadcast()).toBeNull();
    WS.last.receive(readyFrame(40, 25_000, 38));
    expect(client.position).toEqual({ targeted: 40, broadcast: 38 });
    WS.last.receive(notificationFrame(41));
    WS.last.receive(broadcastFrame(42, 38));
    WS.last.receive(notificationFrame(43, 'x', {}, 41));
    WS.last.serverClose(4009);
    await vi.advanceTimersByTimeAsync(1000);
    expect(WS.last.since()).toBe(43);
    expect(WS.last.sinceBroadcast()).toBe(42);
    expect(seen.map((n) => n.notification.id)).toEqual([41, 42, 43]);
  });

  it('the URL carries both cursors, which differ when the chains do', async () => {
    const { client } = makeClient({ since: { targeted: 7, broadcast: 12 } });
    client.connect();
    await settle();
    const url = new URL(WS.last.url);
    expect(url.searchParams.get('since')).toBe('7');
    expect(url.searchParams.get('since_broadcast')).toBe('12');
  });

  it('a v1 since (one id) resumes both chains from it', async () => {
    const { client } = makeClient({ since: 10 });
    client.connect();
    await settle();
    expect(WS.last.since()).toBe(10);
    expect(WS.last.sinceBroadcast()).toBe(10);
    expect(client.position).toEqual({ targeted: 10, broadcast: 10 });
  });

  it('a live-only event is surfaced as `live`, not as a notification, and moves no cursor', async () => {
    const { client, seen } = makeClient();
    const live: unknown[] = [];
    client.on('live', (e) => live.push(e));
    client.connect();
    await settle();
    WS.last.receive(readyFrame(10, 25_000, 11));
    WS.last.receive({
      type: 'event',
      event_type: 'availability.updated',
      title: 'Your availability for week 43 was updated',
      content: '',
      body: { week_number: 43 },
    });
    expect(live).toEqual([
      {
        eventType: 'availability.updated',
        title: 'Your availability for week 43 was updated',
        content: '',
        body: { week_number: 43 },
      },
    ]);
    expect(seen).toHaveLength(0);
    expect(client.position).toEqual({ targeted: 10, broadcast: 11 });
  });

  it('a broadcast overtaking a targeted notification with a smaller id: both are delivered', async () => {
    const { client, seen } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame(10, 25_000, 11));
    WS.last.receive(broadcastFrame(13, 11)); // committed on this node
    WS.last.receive(notificationFrame(12, 'x', {}, 10)); // committed earlier on another node, crossed Redis late
    expect(seen.map((n) => n.notification.id)).toEqual([13, 12]);
    expect(client.position).toEqual({ targeted: 12, broadcast: 13 });
    expect(client.lastSeenId).toBe(13);
    expect(WS.instances).toHaveLength(1); // no reconnect
  });

  it('drops a duplicate per chain: replay overlapping live frames, and ids at or below the chain cursor', async () => {
    const { client, seen } = makeClient({ since: { targeted: 10, broadcast: 20 } });
    client.connect();
    await settle();
    const ws = WS.last;
    ws.receive(readyFrame(12, 25_000, 21));
    ws.receive(notificationFrame(11));
    ws.receive(notificationFrame(12));
    ws.receive(notificationFrame(12)); // replayed and pushed live
    ws.receive(notificationFrame(9)); // below the targeted cursor
    ws.receive(broadcastFrame(20, 19)); // at the broadcast cursor
    ws.receive(broadcastFrame(21, 20));
    ws.receive(broadcastFrame(21, 20));
    ws.receive(replayedFrame(12, 21));
    ws.receive(notificationFrame(13));
    expect(seen.map((n) => n.notification.id)).toEqual([11, 12, 21, 13]);
    expect(client.position).toEqual({ targeted: 13, broadcast: 21 });
  });

  it('a replayed frame moves each cursor even when nothing was replayed', async () => {
    const { client } = makeClient({ since: 5 });
    client.connect();
    await settle();
    WS.last.receive(readyFrame(8, 25_000, 6));
    WS.last.receive(replayedFrame(8, 6));
    WS.last.serverClose(1011);
    await vi.advanceTimersByTimeAsync(1000);
    expect(WS.last.since()).toBe(8);
    expect(WS.last.sinceBroadcast()).toBe(6);
  });

  it('keeps the position across close() and connect()', async () => {
    const { client } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3, 25_000, 2));
    WS.last.receive(notificationFrame(4));
    client.close();
    client.connect();
    await settle();
    expect(WS.last.since()).toBe(4);
    expect(WS.last.sinceBroadcast()).toBe(2);
  });
});

describe('gaps are the server’s job', () => {
  it('a notification whose prev_id is above its chain cursor is delivered, without a reconnect', async () => {
    const { client, seen } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame(10));
    WS.last.receive(notificationFrame(11, 'x', {}, 10));
    WS.last.receive(notificationFrame(14, 'x', {}, 12)); // 12 was deleted, or the server replayed it before
    expect(seen.map((n) => n.notification.id)).toEqual([11, 14]);
    expect(WS.instances).toHaveLength(1);
    expect(WS.last.closedWith).toBeNull();
  });

  it('a resync replays from the server’s position: what this client already has is dropped', async () => {
    const { client, seen } = makeClient();
    client.connect();
    await settle();
    WS.last.receive(readyFrame(1));
    WS.last.receive(notificationFrame(2));
    WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 1, since_broadcast: 0 });
    WS.last.receive(notificationFrame(2));
    WS.last.receive(notificationFrame(5, 'x', {}, 4)); // 3, 4 deleted meanwhile
    WS.last.receive(replayedFrame(5, 0));
    expect(seen.map((n) => n.notification.id)).toEqual([2, 5]);
    expect(WS.instances).toHaveLength(1);
    expect(client.position).toEqual({ targeted: 5, broadcast: 0 });
  });
});

describe('stale: refetch counts and pages', () => {
  const staleOf = (client: HeraldClient) => {
    const reasons: string[] = [];
    client.on('stale', ({ reason }) => reasons.push(reason));
    return reasons;
  };

  it('is not emitted on the first connect, and is on every ready after a reconnect', async () => {
    const { client } = makeClient();
    const reasons = staleOf(client);
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3));
    expect(reasons).toEqual([]);
    for (const code of [1006, 4009]) {
      WS.last.serverClose(code);
      await vi.advanceTimersByTimeAsync(1000);
      WS.last.receive(readyFrame(3));
      WS.last.receive(replayedFrame(3));
    }
    expect(reasons).toEqual(['reconnect', 'reconnect']);
  });

  it('is emitted after close() and connect() again (the app kept its page)', async () => {
    const { client } = makeClient();
    const reasons = staleOf(client);
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3));
    client.close();
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3));
    expect(reasons).toEqual(['reconnect']);
  });

  it('is emitted on resync (read state is not replayed)', async () => {
    const { client } = makeClient();
    const reasons = staleOf(client);
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3));
    WS.last.receive({ type: 'resync', reason: 'transport_lost', since: 3, since_broadcast: 0 });
    WS.last.receive(replayedFrame(3));
    WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 3, since_broadcast: 0 });
    expect(reasons).toEqual(['resync', 'resync']);
  });

  it('is emitted on truncated (a first connect from a saved position older than the history)', async () => {
    const { client, seen } = makeClient({ since: { targeted: 3, broadcast: 2 } });
    const reasons = staleOf(client);
    client.connect();
    await settle();
    WS.last.receive(readyFrame(20, 25_000, 2));
    WS.last.receive({ type: 'truncated', since: 3, since_broadcast: 2, oldest_id: 17 });
    WS.last.receive(notificationFrame(17, 'x', {}, 9));
    WS.last.receive(replayedFrame(20, 2));
    expect(reasons).toEqual(['truncated']);
    expect(seen.map((n) => n.notification.id)).toEqual([17]);
    expect(client.position).toEqual({ targeted: 20, broadcast: 2 });
  });

  it('is emitted once for a reconnect whose replay is truncated; a resync during a catch-up still counts', async () => {
    const { client } = makeClient();
    const reasons = staleOf(client);
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3));
    WS.last.serverClose(1001);
    await vi.advanceTimersByTimeAsync(1000);
    WS.last.receive(readyFrame(30));
    WS.last.receive({ type: 'truncated', since: 3, since_broadcast: 0, oldest_id: 17 });
    // Frames dropped after the app's refetch started: read state may have changed since.
    WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 20, since_broadcast: 0 });
    WS.last.receive(replayedFrame(30));
    expect(reasons).toEqual(['reconnect', 'resync']);
  });

  it('a truncated after replayed rows is announced, though the reconnect asked for a refetch already', async () => {
    // Retention pruned ahead of the replay after the app's refetch started: its page may hold rows now gone.
    const { client } = makeClient();
    const reasons = staleOf(client);
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3));
    WS.last.serverClose(1001);
    await vi.advanceTimersByTimeAsync(1000);
    WS.last.receive(readyFrame(30));
    WS.last.receive(notificationFrame(4, 'x'));
    WS.last.receive({ type: 'truncated', since: 4, since_broadcast: 0, oldest_id: 17 });
    WS.last.receive(notificationFrame(17, 'x'));
    WS.last.receive(replayedFrame(30));
    expect(reasons).toEqual(['reconnect', 'truncated']);
  });

  it('each truncated of a live session (silent replays end without replayed) is announced', async () => {
    const { client } = makeClient();
    const reasons = staleOf(client);
    client.connect();
    await settle();
    WS.last.receive(readyFrame(3));
    const gaps: [number, number][] = [
      [3, 10],
      [12, 20],
    ];
    for (const [since, oldest] of gaps) {
      WS.last.receive({ type: 'truncated', since, since_broadcast: 0, oldest_id: oldest });
      WS.last.receive(notificationFrame(oldest, 'x', {}, 0));
      WS.last.receive(notificationFrame(oldest + 2, 'x', {}, oldest));
    }
    expect(reasons).toEqual(['truncated', 'truncated']);
  });
});

describe('close codes 1013 and 4029', () => {
  it('1013 (store unavailable) is reported and followed by a reconnect with the usual backoff', async () => {
    const { client } = makeClient();
    const errors: string[] = [];
    client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}`));
    vi.spyOn(Math, 'random').mockReturnValue(0);
    client.connect();
    await settle();
    WS.last.serverClose(1013, 'store unavailable');
    expect(errors).toEqual(['server:close_1013']);
    await vi.advanceTimersByTimeAsync(100); // min delay
    expect(WS.instances).toHaveLength(2);
  });

  it('4029 (too many sessions) waits a long backoff: at least half the maximum delay', async () => {
    const { client } = makeClient({ backoff: { minDelayMs: 100, maxDelayMs: 10_000 } });
    const errors: string[] = [];
    client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}`));
    vi.spyOn(Math, 'random').mockReturnValue(0);
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.serverClose(4029, 'too many sessions');
    expect(errors).toEqual(['server:close_4029']);
    await vi.advanceTimersByTimeAsync(4999);
    expect(WS.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(WS.instances).toHaveLength(2);
  });
});

describe('unauthorized (a refused handshake) is terminal', () => {
  const probeFetch = (status: number | 'network', error = 'x') =>
    vi.fn(async (_url: string, _init?: RequestInit) => {
      if (status === 'network') throw new TypeError('fetch failed');
      return new Response(JSON.stringify({ error, message: 'y' }), { status });
    });

  it('a 401 shown by the WebSocket implementation stops reconnecting and emits unauthorized', async () => {
    WS.autoOpen = false;
    const fetch = probeFetch(200);
    const { client, states } = makeClient({ fetch });
    const events: string[] = [];
    client.on('unauthorized', ({ status, via, error }) => events.push(`${status} ${via} ${error.code}`));
    client.connect();
    await settle();
    WS.last.refuse(401);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(WS.instances).toHaveLength(1);
    expect(client.state).toBe(State.Unauthorized);
    expect(events).toEqual(['401 handshake unauthorized']);
    expect(states).toEqual(['disconnected>connecting', 'connecting>unauthorized']);
    // The status was known; the probe only looks for the server's reason (here it answered 200: none).
    expect(fetch).toHaveBeenCalledTimes(1);
  });

  it("unauthorized carries the server's reason (token_expired) from the probe's body, shown status or not", async () => {
    WS.autoOpen = false;
    for (const how of ['refuse', 'fail'] as const) {
      WS = createFakeWebSocket();
      WS.autoOpen = false;
      const { client } = makeClient({ fetch: probeFetch(401, 'token_expired') });
      const events: string[] = [];
      client.on('unauthorized', ({ status, via, error }) => events.push(`${status} ${via} ${error.code}`));
      const messages: string[] = [];
      client.on('unauthorized', ({ error }) => messages.push(error.message));
      client.connect();
      await settle();
      if (how === 'refuse') WS.last.refuse(401);
      else WS.last.fail();
      await settle();
      expect(events).toEqual([`401 ${how === 'refuse' ? 'handshake' : 'probe'} token_expired`]);
      expect(messages[0]).toMatch(/: y$/); // the server's own message, shown status or not
      expect(client.state).toBe(State.Unauthorized);
    }
  });

  it('a 403 (another user, a foreign Origin) is terminal too', async () => {
    WS.autoOpen = false;
    const { client } = makeClient({ fetch: probeFetch(200) });
    const messages: string[] = [];
    client.on('unauthorized', ({ error }) => messages.push(error.message));
    client.connect();
    await settle();
    WS.last.refuse(403);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(WS.instances).toHaveLength(1);
    expect(client.state).toBe(State.Unauthorized);
    // The same token reads the inbox over REST: the refusal is the page's Origin, and the message says so.
    expect(messages).toHaveLength(1);
    expect(messages[0]).toContain('websocket.allowed_origins');
  });

  it('browsers hide the status: a close before open is probed over REST with the same token, 401 → unauthorized', async () => {
    WS.autoOpen = false;
    const fetch = probeFetch(401);
    const { client } = makeClient({ fetch });
    const via: string[] = [];
    client.on('unauthorized', (u) => via.push(u.via));
    client.connect();
    await settle();
    WS.last.fail();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(WS.instances).toHaveLength(1);
    expect(client.state).toBe(State.Unauthorized);
    expect(via).toEqual(['probe']);
    const [url, init] = fetch.mock.calls[0]!;
    expect(url).toBe('https://herald.example.com/base/api/v1/users/u%201/notifications/unread_count');
    expect((init!.headers as Record<string, string>).authorization).toBe('Bearer tok1');
  });

  it('a probe that does not answer 401/403 (server down, 200) means a failure: reconnect with backoff', async () => {
    for (const answer of ['network', 200, 503] as const) {
      WS = createFakeWebSocket();
      WS.autoOpen = false;
      const { client } = makeClient({ fetch: probeFetch(answer) });
      client.connect();
      await settle();
      WS.last.fail();
      await vi.advanceTimersByTimeAsync(2000);
      expect(WS.instances.length).toBeGreaterThan(1);
      expect(client.state).toBe(State.Connecting);
      client.close();
    }
  });

  it('a close after open is not probed (a dropped session, not a refusal)', async () => {
    const fetch = probeFetch(401);
    const { client } = makeClient({ fetch });
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.fail();
    await vi.advanceTimersByTimeAsync(2000);
    expect(fetch).not.toHaveBeenCalled();
    expect(WS.instances).toHaveLength(2);
  });

  it('connect() after unauthorized tries again (with a fresh token)', async () => {
    WS.autoOpen = false;
    const { client } = makeClient({ fetch: probeFetch(200) });
    client.connect();
    await settle();
    WS.last.refuse(401);
    await settle();
    expect(client.state).toBe(State.Unauthorized);
    client.connect();
    await settle();
    expect(WS.instances).toHaveLength(2);
    expect(WS.last.protocols).toEqual(['bearer', 'tok2']);
    WS.last.open();
    WS.last.receive(readyFrame());
    expect(client.state).toBe(State.Connected);
  });
});

describe('connect timeout', () => {
  it('a socket that does not open within connectTimeoutMs is closed and retried with backoff', async () => {
    WS.autoOpen = false;
    const { client } = makeClient({ connectTimeoutMs: 3000, fetch: vi.fn() });
    const errors: string[] = [];
    client.on('error', ({ error }) => errors.push(error.code));
    client.connect();
    await settle();
    await vi.advanceTimersByTimeAsync(2999);
    expect(WS.last.closedWith).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(WS.instances[0]!.closedWith).not.toBeNull();
    expect(errors).toEqual(['connect_timeout']);
    expect(client.state).toBe(State.Connecting);
    await vi.advanceTimersByTimeAsync(1100); // backoff: at most min + min·2⁰ = 200 ms here
    expect(WS.instances).toHaveLength(2);
    WS.last.open();
    WS.last.receive(readyFrame());
    expect(client.state).toBe(State.Connected);
  });

  it('defaults to 10 s, and a socket that opens in time is not touched', async () => {
    WS.autoOpen = false;
    const { client } = makeClient({ fetch: vi.fn() });
    client.connect();
    await settle();
    await vi.advanceTimersByTimeAsync(9999);
    expect(WS.instances).toHaveLength(1);
    WS.last.open();
    await vi.advanceTimersByTimeAsync(5000);
    expect(WS.last.closedWith).toBeNull();
    expect(WS.instances).toHaveLength(1);

    WS.instances.length = 0;
    const second = makeClient({ fetch: vi.fn() }).client;
    second.connect();
    await settle();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(WS.instances[0]!.closedWith).not.toBeNull();
  });
});

it('resync and truncated frames are surfaced as their own events', async () => {
  const { client } = makeClient();
  const got: unknown[] = [];
  client.on('resync', (r) => got.push(['resync', r]));
  client.on('truncated', (t) => got.push(['truncated', t]));
  client.connect();
  await settle();
  WS.last.receive(readyFrame(3));
  WS.last.receive({ type: 'resync', reason: 'slow_consumer', since: 3, since_broadcast: 1 });
  WS.last.receive({ type: 'truncated', since: 3, since_broadcast: 1, oldest_id: 9 });
  expect(got).toEqual([
    ['resync', { reason: 'slow_consumer', since: 3, sinceBroadcast: 1 }],
    ['truncated', { since: 3, sinceBroadcast: 1, oldestId: 9 }],
  ]);
});

it('ignores a frame of an unknown type (a newer server), logging it in debug', async () => {
  const debug = vi.spyOn(console, 'debug').mockImplementation(() => {});
  const { client, seen } = makeClient({ debug: true });
  const errors: string[] = [];
  client.on('error', ({ error }) => errors.push(error.code));
  client.connect();
  await settle();
  WS.last.receive(readyFrame());
  WS.last.receive({ type: 'presence', online: ['u2'] });
  WS.last.receive(notificationFrame(1));
  expect(errors).toEqual([]);
  expect(seen).toHaveLength(1);
  expect(client.state).toBe(State.Connected);
  expect(debug.mock.calls.some((args) => args.join(' ').includes('unknown type'))).toBe(true);
});

describe('token refresh on an open session', () => {
  it('token_expiring → getToken() → auth message on the same socket, no reconnect', async () => {
    const { client } = makeClient();
    client.connect();
    await settle();
    const ws = WS.last;
    ws.receive(readyFrame());
    ws.receive({ type: 'token_expiring', expires_at: 1767000000 });
    ws.receive({ type: 'token_expiring', expires_at: 1767000000 }); // while one refresh is running: ignored
    await settle();
    expect(ws.sent.map((m) => JSON.parse(m))).toEqual([{ type: 'auth', token: 'tok2' }]);
    ws.receive({ type: 'auth_ok', expires_at: 1767003600 });
    expect(client.state).toBe(State.Connected);
    expect(WS.instances).toHaveLength(1);
  });

  it('a failed refresh is reported; the 4001 that follows reconnects with a fresh token', async () => {
    let calls = 0;
    const { client } = makeClient({
      getToken: async () => {
        if (++calls === 2) throw new Error('offline');
        return `tok${calls}`;
      },
    });
    const errors: string[] = [];
    client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}`));
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.receive({ type: 'token_expiring', expires_at: 1 });
    await settle();
    expect(errors).toEqual(['token:token_error']);
    WS.last.serverClose(4001);
    await settle();
    expect(WS.last.protocols).toEqual(['bearer', 'tok3']);
  });
});

describe('events', () => {
  it('maps frames to typed events', async () => {
    const { client } = makeClient();
    const got: unknown[] = [];
    client.on('read', (e) => got.push(['read', e]));
    client.on('read_all', (e) => got.push(['read_all', e]));
    client.on('deleted', (e) => got.push(['deleted', e]));
    client.on('purged', (e) => got.push(['purged', e]));
    client.on('error', (e) => got.push(['error', e.kind, e.error.code]));
    client.connect();
    await settle();
    const ws = WS.last;
    ws.receive(readyFrame());
    ws.receive({ type: 'read', ids: [1, 2], read_at: 't' });
    ws.receive({ type: 'read_all', up_to: 7, read_at: 't' });
    ws.receive({ type: 'deleted', ids: [3] });
    ws.receive({ type: 'purged' });
    ws.receive({ type: 'error', code: 'bad_message', message: 'nope' });
    ws.receive('not json');
    ws.receive({ type: 'pong' });
    expect(got).toEqual([
      ['read', { ids: [1, 2], readAt: 't' }],
      ['read_all', { upTo: 7, readAt: 't' }],
      ['deleted', { ids: [3] }],
      ['purged', {}],
      ['error', 'server', 'bad_message'],
      ['error', 'protocol', 'bad_frame'],
    ]);
  });

  it('notification events carry the event type and body; on() returns an unsubscribe', async () => {
    type Bodies = { 'stage.accepted': { payload: { stage_id: string } } };
    const client = new HeraldClient<Bodies>({ url: 'http://h', userId: 1, getToken: async () => 't', WebSocket: WS });
    const stageIds: string[] = [];
    const off = client.on('notification', (n) => {
      if (n.eventType === 'stage.accepted') stageIds.push(n.body.payload.stage_id);
    });
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.receive(notificationFrame(1, 'stage.accepted', { payload: { stage_id: 's1' } }));
    off();
    WS.last.receive(notificationFrame(2, 'stage.accepted', { payload: { stage_id: 's2' } }));
    expect(stageIds).toEqual(['s1']);
  });

  it('a throwing listener does not break delivery to the others', async () => {
    const { client, seen } = makeClient();
    const spy = vi.spyOn(console, 'error').mockImplementation(() => {});
    client.on('notification', () => {
      throw new Error('boom');
    });
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.receive(notificationFrame(1));
    expect(seen).toHaveLength(1);
    expect(spy).toHaveBeenCalledOnce();
  });
});

describe('dead-link detection', () => {
  /** A connected client whose server pings every 1000 ms, the error codes it reports, and its socket. */
  async function connectedEvery1000ms() {
    const { client } = makeClient();
    const errors: string[] = [];
    client.on('error', ({ error }) => errors.push(error.code));
    client.connect();
    await settle();
    const ws = WS.last;
    ws.receive(readyFrame(0, 1000));
    return { client, errors, ws };
  }

  it('sends a text ping every interval and reconnects when one goes unanswered for an interval', async () => {
    const { client, errors, ws } = await connectedEvery1000ms();
    await vi.advanceTimersByTimeAsync(1000);
    expect(ws.sent).toEqual(['ping']);
    ws.receive({ type: 'pong' }); // traffic: the link is alive
    await vi.advanceTimersByTimeAsync(1500);
    expect(WS.instances).toHaveLength(1);
    expect(client.state).toBe(State.Connected);
    await vi.advanceTimersByTimeAsync(600); // the ping at 2000 ms got no answer by 3000 ms
    expect(ws.closedWith?.code).toBe(4000);
    expect(errors).toEqual(['dead_link']);
    expect(client.state).toBe(State.Connecting);
    await vi.advanceTimersByTimeAsync(1000);
    expect(WS.instances).toHaveLength(2);
  });

  it('a background tab whose timers are throttled (a ping a minute) keeps a quiet live link; an unanswered ping still drops it', async () => {
    // Chrome's intensive throttling: chained timers of a tab hidden for 5 minutes run about once a minute.
    const fakeSetInterval = globalThis.setInterval;
    vi.spyOn(globalThis, 'setInterval').mockImplementation(((fn: () => void, ms?: number) =>
      fakeSetInterval(fn, Math.max(ms ?? 0, 60_000))) as typeof setInterval);
    const { client, errors, ws } = await connectedEvery1000ms();
    for (let i = 1; i <= 10; i++) {
      await vi.advanceTimersByTimeAsync(60_000);
      expect(ws.sent).toHaveLength(i);
      ws.receive({ type: 'pong' }); // the server answers at once; nothing else is said
    }
    expect(errors).toEqual([]);
    expect(WS.instances).toHaveLength(1);
    expect(client.state).toBe(State.Connected);
    // A ping with no answer within one interval: the link is dead.
    await vi.advanceTimersByTimeAsync(60_000 + 1000);
    expect(errors).toEqual(['dead_link']);
    expect(ws.closedWith?.code).toBe(4000);
  });

  it('a dead-link timer that fires late (a frozen page, a machine asleep) waits one more interval for the answer', async () => {
    const { client, errors, ws } = await connectedEvery1000ms();
    await vi.advanceTimersByTimeAsync(1000); // a ping: answer due by 2000 ms
    expect(ws.sent).toEqual(['ping']);
    vi.setSystemTime(Date.now() + 10 * 60_000); // the page was frozen for 10 minutes
    await vi.advanceTimersByTimeAsync(1000);
    expect(errors).toEqual([]);
    ws.receive({ type: 'pong' }); // the answer, queued behind the timer
    await vi.advanceTimersByTimeAsync(1000);
    expect(errors).toEqual([]);
    expect(client.state).toBe(State.Connected);
  });

  it('a socket that never answers is dropped after 2× the default interval', async () => {
    const { client } = makeClient();
    client.connect();
    await settle();
    await vi.advanceTimersByTimeAsync(50_000);
    expect(WS.instances[0]!.closedWith?.code).toBe(4000);
    expect(client.state).toBe(State.Connecting);
  });

  it('ignores a dropped socket that closes late', async () => {
    const { client } = makeClient();
    client.connect();
    await settle();
    const first = WS.last;
    first.receive(readyFrame(0, 1000));
    await vi.advanceTimersByTimeAsync(2000); // dead: dropped
    await vi.advanceTimersByTimeAsync(1000); // reconnected
    WS.last.receive(readyFrame(0, 1000));
    expect(WS.instances).toHaveLength(2);
    first.onclose?.({ code: 1006, reason: '' }); // handlers were detached: nothing happens
    expect(client.state).toBe(State.Connected);
  });
});

describe('a getToken that keeps failing', () => {
  it('stops in unauthorized (via token, status 0) after maxTokenFailures failures in a row', async () => {
    const { client, states } = makeClient({
      maxTokenFailures: 3,
      getToken: async () => {
        throw new Error('refresh token revoked');
      },
    });
    const got: string[] = [];
    client.on('unauthorized', ({ status, via, error }) => got.push(`${status} ${via} ${error.message}`));
    client.on('error', ({ kind }) => got.push(kind));
    client.connect();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(got).toEqual(['token', 'token', 'token', '0 token refresh token revoked']);
    expect(client.state).toBe(State.Unauthorized);
    expect(states.at(-1)).toBe('connecting>unauthorized');
    expect(WS.instances).toHaveLength(0);
  });

  it('a token service out of reach (fetch TypeError, abort, 5xx/408/429) is retried for ever, not taken for a refusal', async () => {
    const unreachable: unknown[] = [
      new TypeError('fetch failed'),
      Object.assign(new Error('aborted'), { name: 'AbortError' }),
      new HeraldError(503, 'unavailable', 'token service restarting'),
      Object.assign(new Error('Bad Gateway'), { status: 502 }),
      { status: 429 },
    ];
    let calls = 0;
    const { client } = makeClient({
      maxTokenFailures: 2,
      getToken: async () => {
        throw unreachable[calls++ % unreachable.length];
      },
    });
    const refused: string[] = [];
    client.on('unauthorized', ({ via }) => refused.push(via));
    client.connect();
    await vi.advanceTimersByTimeAsync(120_000);
    expect(calls).toBeGreaterThan(10);
    expect(refused).toEqual([]);
    expect(client.state).toBe(State.Connecting);
    client.close();
    // A refusal (an error with a 401, or any other error) still counts.
    for (const e of [new HeraldError(401, 'unauthorized', 'signed out'), new Error('no session')]) {
      const other = makeClient({
        maxTokenFailures: 2,
        getToken: async () => {
          throw e;
        },
      }).client;
      other.connect();
      await vi.advanceTimersByTimeAsync(30_000);
      expect(other.state).toBe(State.Unauthorized);
    }
  });

  it('a token that works resets the count; the default is 5; 0 retries for ever', async () => {
    let fail = 0;
    const { client } = makeClient({
      getToken: async () => {
        if (fail-- > 0) throw new Error('flaky');
        return 'tok';
      },
    });
    fail = 4;
    client.connect();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(client.state).toBe(State.Connecting); // 4 failures, then a socket
    expect(WS.instances).toHaveLength(1);
    WS.last.receive(readyFrame());
    fail = 4;
    WS.last.fail();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(WS.instances).toHaveLength(2); // 4 more (not 8): still going
    client.close();

    const forever = makeClient({
      maxTokenFailures: 0,
      getToken: async () => {
        throw new Error('down');
      },
    }).client;
    forever.connect();
    await vi.advanceTimersByTimeAsync(120_000);
    expect(forever.state).toBe(State.Connecting);
    forever.close();
  });
});

describe('browser offline event', () => {
  it('drops a live session at once: connecting (not connected), a transport error offline, then retries', async () => {
    const target = new EventTarget();
    vi.stubGlobal('window', target);
    try {
      const { client } = makeClient();
      const errors: string[] = [];
      client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}`));
      client.connect();
      await settle();
      WS.last.receive(readyFrame());
      expect(client.state).toBe(State.Connected);
      target.dispatchEvent(new Event('offline'));
      expect(client.state).toBe(State.Connecting);
      expect(errors).toEqual(['transport:offline']);
      expect(WS.instances[0]!.readyState).toBe(3);
      await vi.advanceTimersByTimeAsync(1000);
      expect(WS.instances).toHaveLength(2);
      client.close();
      target.dispatchEvent(new Event('offline')); // listener removed
      expect(errors).toEqual(['transport:offline']);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('online gives up an attempt stuck opening (made while offline) and opens a fresh one', async () => {
    const target = new EventTarget();
    vi.stubGlobal('window', target);
    try {
      WS.autoOpen = false;
      const { client } = makeClient();
      client.connect();
      await settle();
      expect(WS.instances).toHaveLength(1);
      target.dispatchEvent(new Event('online'));
      await settle();
      expect(WS.instances).toHaveLength(2);
      expect(WS.instances[0]!.readyState).toBe(3);
      client.close();
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe('browser online event', () => {
  it('skips the backoff wait when the browser comes back online', async () => {
    const target = new EventTarget();
    vi.stubGlobal('window', target);
    try {
      const { client } = makeClient({ backoff: { minDelayMs: 10_000, maxDelayMs: 10_000 } });
      client.connect();
      await settle();
      WS.last.fail();
      expect(WS.instances).toHaveLength(1);
      target.dispatchEvent(new Event('online'));
      await settle();
      expect(WS.instances).toHaveLength(2);
      client.close();
      target.dispatchEvent(new Event('online')); // listener removed
      await settle();
      expect(WS.instances).toHaveLength(2);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

it('without any WebSocket implementation, reports an error and stays disconnected', async () => {
  vi.stubGlobal('WebSocket', undefined);
  try {
    const client = new HeraldClient({ url: 'http://h', userId: 'u', getToken: async () => 't' });
    const errors: string[] = [];
    client.on('error', ({ error }) => errors.push(error.code));
    client.connect();
    await settle();
    expect(errors).toEqual(['no_websocket']);
    expect(client.state).toBe(State.Disconnected);
  } finally {
    vi.unstubAllGlobals();
  }
});

describe('inbox state frames (issue 17)', () => {
  it('counts, unread, archived, unarchived and seen_all frames become events; malformed ones are protocol errors', async () => {
    const { client } = makeClient();
    const got: string[] = [];
    client.on('counts', ({ unread, unseen }) => got.push(`counts ${unread}/${unseen}`));
    client.on('unread', ({ ids }) => got.push(`unread ${ids}`));
    client.on('archived', ({ ids }) => got.push(`archived ${ids}`));
    client.on('unarchived', ({ ids }) => got.push(`unarchived ${ids}`));
    client.on('seen_all', ({ upTo, seenAt }) => got.push(`seen_all ${upTo} ${seenAt}`));
    client.on('error', ({ kind, error }) => got.push(`error ${kind} ${error.code}`));
    client.connect();
    await settle();
    WS.last.receive(readyFrame());
    WS.last.receive({ type: 'counts', unread: 3, unseen: 2 });
    WS.last.receive({ type: 'unread', ids: [4, 5] });
    WS.last.receive({ type: 'archived', ids: [6] });
    WS.last.receive({ type: 'unarchived', ids: [6] });
    WS.last.receive({ type: 'seen_all', up_to: 9, seen_at: '2026-01-10T09:00:00.000Z' });
    WS.last.receive({ type: 'counts', unread: 'many' });
    expect(got).toEqual([
      'counts 3/2',
      'unread 4,5',
      'archived 6',
      'unarchived 6',
      'seen_all 9 2026-01-10T09:00:00.000Z',
      'error protocol bad_frame',
    ]);
    client.close();
  });
});
