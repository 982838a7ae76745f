/**
 * The two delivery chains against a real gateway: the client resumes with one cursor per chain, and the replay
 * holds exactly what it missed in each (no more, no less).
 */
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { State, type HeraldClient, type StaleContext } from '../../src';
import {
  broadcast,
  mintToken,
  newUser,
  notify,
  skipReason,
  startGateway,
  tempDir,
  testClient,
  type Gateway,
} from './gateway';

const reason = skipReason('chains');

/** A `ws` WebSocket that records every URL opened and lets the test cut the live one (a lost network). */
function recordingWebSocket() {
  const opened: { url: string; ws: WebSocket }[] = [];
  class RecordingWebSocket extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      opened.push({ url, ws: this });
    }
  }
  const params = (i: number) => new URL(opened.at(i)!.url).searchParams;
  return { RecordingWebSocket, opened, params, cut: () => opened.at(-1)!.ws.terminate() };
}

describe.skipIf(reason !== null)('two delivery chains against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  const clients: HeraldClient<any>[] = [];
  const track = <C extends HeraldClient<any>>(c: C) => (clients.push(c), c);

  beforeAll(async () => {
    gw = await startGateway(tmp.dir);
  });
  afterEach(() => {
    clients.splice(0).forEach((c) => c.close());
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  const connected = (c: HeraldClient<any>) =>
    vi.waitFor(() => expect(c.state).toBe(State.Connected), { timeout: 10_000 });

  it('a reconnect with both cursors replays exactly what was missed across both chains, then stale', async () => {
    const user = newUser();
    const rec = recordingWebSocket();
    let gate: Promise<void> = Promise.resolve();
    const client = track(
      testClient(gw, user, {
        WebSocket: rec.RecordingWebSocket,
        getToken: async () => {
          await gate;
          return mintToken(user);
        },
      }),
    );
    const ids: number[] = [];
    const stale: StaleContext['reason'][] = [];
    client.on('notification', (n) => ids.push(n.notification.id));
    client.on('stale', ({ reason }) => stale.push(reason));
    client.connect();
    await connected(client);
    expect(rec.params(0).has('since')).toBe(false);

    const t1 = await notify(gw, user);
    const b1 = await broadcast(gw);
    await vi.waitFor(() => expect(ids).toEqual([t1.id, b1.id]), { timeout: 5000 });
    expect(client.position).toEqual({ targeted: t1.id, broadcast: b1.id });

    // Kept away (the token is held) while both chains move on.
    let open!: () => void;
    gate = new Promise((r) => (open = r));
    rec.cut();
    await vi.waitFor(() => expect(client.state).toBe(State.Connecting), { timeout: 5000 });
    const t2 = await notify(gw, user);
    const b2 = await broadcast(gw);
    const t3 = await notify(gw, user);
    await notify(gw, newUser()); // someone else's: not in this inbox
    expect(ids).toEqual([t1.id, b1.id]);
    open();

    await connected(client);
    const missed = [t2.id, b2.id, t3.id];
    await vi.waitFor(() => expect(ids).toEqual([t1.id, b1.id, ...missed]), { timeout: 5000 });
    expect(rec.params(-1).get('since')).toBe(String(t1.id));
    expect(rec.params(-1).get('since_broadcast')).toBe(String(b1.id));
    expect(stale).toEqual(['reconnect']);

    // Live again, on both chains; nothing replayed twice arrives late.
    const t4 = await notify(gw, user);
    const b3 = await broadcast(gw);
    await vi.waitFor(() => expect(ids).toEqual([t1.id, b1.id, ...missed, t4.id, b3.id]), { timeout: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    expect(ids).toHaveLength(7);
    expect(client.position).toEqual({ targeted: t4.id, broadcast: b3.id });
  });

  it('a position with a targeted cursor below the broadcast one replays the targeted notification between them', async () => {
    const user = newUser();
    const t1 = await notify(gw, user);
    const t2 = await notify(gw, user); // the one a single cursor at b1 misses
    const b1 = await broadcast(gw);
    const t3 = await notify(gw, user);
    const b2 = await broadcast(gw);
    expect(t1.id < t2.id && t2.id < b1.id && b1.id < t3.id && t3.id < b2.id).toBe(true);

    // Where a client stands after a broadcast overtook t2 on its way from another node: t1 and b1 received.
    const rec = recordingWebSocket();
    const client = track(
      testClient(gw, user, { WebSocket: rec.RecordingWebSocket, since: { targeted: t1.id, broadcast: b1.id } }),
    );
    const ids: number[] = [];
    const stale: string[] = [];
    client.on('notification', (n) => ids.push(n.notification.id));
    client.on('stale', ({ reason }) => stale.push(reason));
    client.connect();
    await connected(client);
    await vi.waitFor(() => expect(ids).toEqual([t2.id, t3.id, b2.id]), { timeout: 5000 });
    expect(rec.params(0).get('since')).toBe(String(t1.id));
    expect(rec.params(0).get('since_broadcast')).toBe(String(b1.id));
    await vi.waitFor(() => expect(client.position).toEqual({ targeted: t3.id, broadcast: b2.id }));
    expect(stale).toEqual([]); // a first connect: nothing was fetched before it
    client.close();

    // The v1 form (one id for both chains) resumes from b1 in both: t2 is lost to it.
    const v1 = track(testClient(gw, user, { since: b1.id }));
    const v1Ids: number[] = [];
    v1.on('notification', (n) => v1Ids.push(n.notification.id));
    v1.connect();
    await connected(v1);
    await vi.waitFor(() => expect(v1Ids).toEqual([t3.id, b2.id]), { timeout: 5000 });
  });
});

describe.skipIf(reason !== null)('too many sessions against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(tmp.dir, 0, '[websocket]\nmax_sessions_per_user = 1\n');
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  it('a session beyond max_sessions_per_user is closed with 4029: reported, and not retried at once', async () => {
    const user = newUser();
    const first = testClient(gw, user);
    const rec = recordingWebSocket();
    const second = testClient(gw, user, {
      WebSocket: rec.RecordingWebSocket,
      backoff: { minDelayMs: 50, maxDelayMs: 60_000 },
    });
    try {
      first.connect();
      await vi.waitFor(() => expect(first.state).toBe(State.Connected), { timeout: 10_000 });
      const errors: string[] = [];
      second.on('error', ({ error }) => errors.push(error.code));
      second.connect();
      await vi.waitFor(() => expect(errors).toContain('close_4029'), { timeout: 5000 });
      await new Promise((r) => setTimeout(r, 1000)); // the short backoff would have retried many times by now
      expect(rec.opened).toHaveLength(1);
      expect(second.state).toBe(State.Connecting);
      expect(first.state).toBe(State.Connected);
    } finally {
      first.close();
      second.close();
    }
  });
});
