/**
 * Issue 17's handshake behaviours against a real gateway: the token in `Sec-WebSocket-Protocol`, a refused token
 * stopping for good (`unauthorized`), a connect timeout, and frames of unknown types ignored.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { State, type HeraldClient, type UnauthorizedContext, type WebSocketConstructor } from '../../src';
import { mintToken, newUser, notify, skipReason, startGateway, tempDir, testClient, type Gateway } from './gateway';

const reason = skipReason('handshake');

/** `ws`, recording what the client asked for: every URL and sub-protocol list, one entry per attempt. */
function recordingWebSocket(hideStatus = false) {
  const attempts: { url: string; protocols: string | string[] | undefined }[] = [];
  const onerror = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onerror')!;
  function Recording(url: string, protocols?: string | string[]): WebSocket {
    const ws = new WebSocket(url, protocols);
    attempts.push({ url, protocols });
    // A browser shows no HTTP status for a refused handshake: with `hideStatus` the error event carries nothing.
    if (hideStatus) {
      Object.defineProperty(ws, 'onerror', {
        get: () => onerror.get!.call(ws),
        set: (fn: ((ev: unknown) => void) | null) => onerror.set!.call(ws, fn ? () => fn({}) : null),
      });
    }
    return ws;
  }
  return { attempts, WebSocket: Recording as unknown as WebSocketConstructor };
}

describe.skipIf(reason !== null)('the handshake against a real gateway', () => {
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
  /** Several backoff periods (50…500 ms in testClient): a client that still retries would try again. */
  const severalBackoffs = () => new Promise((r) => setTimeout(r, 1500));

  it('sends the token in Sec-WebSocket-Protocol, never in the URL, and the gateway authenticates it', async () => {
    const user = newUser();
    const rec = recordingWebSocket();
    const token = mintToken(user);
    const client = track(testClient(gw, user, { WebSocket: rec.WebSocket, getToken: async () => token }));
    const got: number[] = [];
    client.on('notification', (n) => got.push(n.notification.id));
    client.connect();
    await connected(client);
    const { id } = await notify(gw, user);
    await vi.waitFor(() => expect(got).toEqual([id]), { timeout: 5000 });
    expect(rec.attempts).toHaveLength(1);
    expect(rec.attempts[0]!.url).not.toContain(token);
    expect(new URL(rec.attempts[0]!.url).searchParams.has('token')).toBe(false);
    expect(rec.attempts[0]!.protocols).toEqual(['bearer', token]);
    expect(gw.output()).not.toContain(token);
  });

  it('tokenIn: query still authenticates through ?token= (older gateways)', async () => {
    const user = newUser();
    const rec = recordingWebSocket();
    const client = track(testClient(gw, user, { WebSocket: rec.WebSocket, tokenIn: 'query' }));
    client.connect();
    await connected(client);
    expect(new URL(rec.attempts[0]!.url).searchParams.get('token')).toMatch(/^ey/);
    expect(rec.attempts[0]!.protocols).toBeUndefined();
  });

  for (const hideStatus of [false, true]) {
    const how = hideStatus ? 'status hidden as in a browser: found by the REST probe' : 'status shown by ws';
    it(`a token the gateway refuses (401) stops reconnecting after one attempt (${how})`, async () => {
      const user = newUser();
      const rec = recordingWebSocket(hideStatus);
      let tokens = 0;
      const client = track(
        testClient(gw, user, {
          WebSocket: rec.WebSocket,
          getToken: async () => (tokens++, mintToken(user, 3600, 'not-the-gateway-secret-at-all')),
        }),
      );
      const events: UnauthorizedContext[] = [];
      client.on('unauthorized', (u) => events.push(u));
      client.connect();
      await vi.waitFor(() => expect(client.state).toBe(State.Unauthorized), { timeout: 10_000 });
      await severalBackoffs();
      expect(rec.attempts).toHaveLength(1);
      expect(tokens).toBe(1);
      expect(client.state).toBe(State.Unauthorized);
      expect(events.map((e) => [e.status, e.via])).toEqual([[401, hideStatus ? 'probe' : 'handshake']]);
    });
  }

  it('an expired token (401) and a token for another user (403) are both terminal', async () => {
    const user = newUser();
    for (const [token, status] of [
      [mintToken(user, -120), 401],
      [mintToken(newUser()), 403],
    ] as const) {
      const rec = recordingWebSocket();
      const client = track(testClient(gw, user, { WebSocket: rec.WebSocket, getToken: async () => token }));
      const statuses: number[] = [];
      client.on('unauthorized', (u) => statuses.push(u.status));
      client.connect();
      await vi.waitFor(() => expect(client.state).toBe(State.Unauthorized), { timeout: 10_000 });
      await severalBackoffs();
      expect(rec.attempts).toHaveLength(1);
      expect(statuses).toEqual([status]);
    }
  });

  it('a server down is not unauthorized: the client keeps retrying', async () => {
    // A port nothing listens on: connection refused, and the REST probe fails too.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const rec = recordingWebSocket(true);
    const client = track(testClient({ url: `http://127.0.0.1:${port}` }, newUser(), { WebSocket: rec.WebSocket }));
    client.connect();
    await vi.waitFor(() => expect(rec.attempts.length).toBeGreaterThanOrEqual(3), { timeout: 10_000 });
    expect(client.state).toBe(State.Connecting);
  });

  it('a server that accepts TCP but never answers the upgrade: each socket times out and is retried', async () => {
    const sockets: Socket[] = [];
    let closedByClient = 0;
    // Accepts, reads the upgrade request, never writes a byte.
    const silent: Server = createServer((s) => {
      sockets.push(s);
      s.resume();
      s.on('close', () => closedByClient++);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    closers.push(() => {
      sockets.forEach((s) => s.destroy());
      silent.close();
    });
    const port = (silent.address() as { port: number }).port;
    const client = track(testClient({ url: `http://127.0.0.1:${port}` }, newUser(), { connectTimeoutMs: 300 }));
    const errors: string[] = [];
    client.on('error', ({ error }) => errors.push(error.code));
    client.connect();
    await vi.waitFor(() => expect(sockets.length).toBeGreaterThanOrEqual(3), { timeout: 15_000 });
    expect(errors.filter((c) => c === 'connect_timeout').length).toBeGreaterThanOrEqual(2);
    expect(client.state).toBe(State.Connecting);
    // The timed-out sockets were closed by the client (the server never closes one).
    await vi.waitFor(() => expect(closedByClient).toBeGreaterThanOrEqual(2), { timeout: 5000 });
  });

  it('frames of unknown types from a newer server are ignored: the session works on, no error', async () => {
    // A proxy in front of the real gateway that adds frames this SDK does not know before every real one.
    const proxy = new WebSocketServer({
      port: 0,
      host: '127.0.0.1',
      handleProtocols: (p) => (p.has('bearer') ? 'bearer' : false),
    });
    await new Promise<void>((r) => proxy.once('listening', () => r()));
    closers.push(() => proxy.close());
    proxy.on('connection', (down, req) => {
      const protocols = String(req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((p) => p.trim())
        .filter(Boolean);
      const up = new WebSocket(`${gw.url.replace(/^http/, 'ws')}${req.url}`, protocols);
      const pending: string[] = [];
      up.on('open', () => pending.splice(0).forEach((m) => up.send(m)));
      up.on('message', (data) => {
        down.send(JSON.stringify({ type: 'presence', online: ['someone'], v: 2 }));
        down.send(data.toString());
      });
      up.on('close', () => down.close());
      down.on('message', (data) =>
        up.readyState === WebSocket.OPEN ? up.send(data.toString()) : pending.push(data.toString()),
      );
      down.on('close', () => up.close());
    });
    const port = (proxy.address() as { port: number }).port;
    const user = newUser();
    const client = track(testClient({ url: `http://127.0.0.1:${port}` }, user));
    const errors: string[] = [];
    const got: number[] = [];
    const states: string[] = [];
    client.on('error', ({ error }) => errors.push(error.code));
    client.on('notification', (n) => got.push(n.notification.id));
    client.on('state', ({ newState }) => states.push(newState));
    client.connect();
    await connected(client);
    const { id } = await notify(gw, user);
    await vi.waitFor(() => expect(got).toEqual([id]), { timeout: 5000 });
    expect(errors).toEqual([]);
    expect(states).toEqual(['connecting', 'connected']);
  });
});
