/** A scriptable WebSocket: the test plays the server. Each call returns a class with its own instance list. */
import type { WebSocketLike } from '../../src/types';

export interface FakeSocket extends WebSocketLike {
  url: string;
  /** The sub-protocols the client asked for (`['bearer', <jwt>]` by default). */
  protocols?: string | string[];
  sent: string[];
  closedWith: { code?: number; reason?: string } | null;
  /** Server side: send a frame (objects are JSON-encoded). */
  receive(frame: unknown): void;
  /** Server side: close with a code. */
  serverClose(code: number, reason?: string): void;
  /** Transport failure before or after open (what a refused handshake looks like to a browser). */
  fail(): void;
  /** A handshake refused with an HTTP status, as the `ws` package reports it (error message, then 1006). */
  refuse(status: number): void;
  /** Server side: accept the handshake (only needed when `autoOpen` is false). */
  open(): void;
  /** The targeted cursor of the URL (`since`), or null. */
  since(): number | null;
  /** The broadcast cursor of the URL (`since_broadcast`), or null. */
  sinceBroadcast(): number | null;
}

export function createFakeWebSocket() {
  const instances: FakeSocket[] = [];
  class FakeWebSocket implements FakeSocket {
    static instances = instances;
    /** Open each socket on the next microtask (a reachable server); false: stay connecting until `open()`. */
    static autoOpen = true;
    static get last(): FakeSocket {
      const ws = instances[instances.length - 1];
      if (!ws) throw new Error('no socket was opened');
      return ws;
    }
    readyState = 0;
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: { data: unknown }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;
    sent: string[] = [];
    closedWith: { code?: number; reason?: string } | null = null;
    constructor(
      public url: string,
      public protocols?: string | string[],
    ) {
      instances.push(this);
      // Open "immediately" like a local server would, but asynchronously like a real socket.
      if (FakeWebSocket.autoOpen) queueMicrotask(() => this.open());
    }
    open(): void {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    }
    refuse(status: number): void {
      this.readyState = 3;
      this.onerror?.({ message: `Unexpected server response: ${status}` });
      this.onclose?.({ code: 1006, reason: '' });
    }
    send(data: string): void {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(data);
    }
    close(code?: number, reason?: string): void {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    receive(frame: unknown): void {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }
    serverClose(code: number, reason = ''): void {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    fail(): void {
      this.readyState = 3;
      this.onerror?.({});
      this.onclose?.({ code: 1006, reason: '' });
    }
    since(): number | null {
      return this.param('since');
    }
    sinceBroadcast(): number | null {
      return this.param('since_broadcast');
    }
    private param(name: string): number | null {
      const s = new URL(this.url).searchParams.get(name);
      return s === null ? null : Number(s);
    }
  }
  return FakeWebSocket;
}

/**
 * A targeted notification frame for `u1`; `prevId` defaults to `id - 1` (an unbroken stream of consecutive ids).
 * `userId` null makes it a broadcast (see {@link broadcastFrame}).
 */
export function notificationFrame(
  id: number,
  eventType = 'test.event',
  body: unknown = { n: id },
  prevId = id - 1,
  userId: string | null = 'u1',
) {
  return {
    type: 'notification',
    event_type: eventType,
    body,
    notification: {
      id,
      prev_id: prevId,
      user_id: userId,
      type: 'info',
      title: `title ${id}`,
      content: `content ${id}`,
      event_type: eventType,
      source: null,
      related_object: null,
      data: null,
      created_at: '2026-01-10T08:15:00.123Z',
      read_at: null as string | null,
      seen_at: null as string | null,
      archived_at: null as string | null,
      muted: false,
    },
  };
}

/** A broadcast (`user_id` null) notification frame; `prevId` is the previous broadcast. */
export function broadcastFrame(id: number, prevId = 0) {
  return notificationFrame(id, 'system.notice', { n: id }, prevId, null);
}

/** `latestTargeted` and `latestBroadcast` are the chains' newest ids (`latest_id` is the greater). */
export function readyFrame(latestTargeted = 0, pingIntervalMs = 25_000, latestBroadcast = 0) {
  return {
    type: 'ready',
    session_id: 's-1',
    user_id: 'u1',
    latest_id: Math.max(latestTargeted, latestBroadcast),
    latest_targeted_id: latestTargeted,
    latest_broadcast_id: latestBroadcast,
    ping_interval_ms: pingIntervalMs,
  };
}

/** The end of a replay: the session's position is (`targeted`, `broadcast`). */
export function replayedFrame(targeted: number, broadcast = 0) {
  return {
    type: 'replayed',
    up_to: Math.max(targeted, broadcast),
    up_to_targeted: targeted,
    up_to_broadcast: broadcast,
  };
}
