/** A scriptable WebSocket: the test plays the server. Each call returns a class with its own instance list. */
import type { WebSocketLike } from '../../src/types';

export interface FakeSocket extends WebSocketLike {
  url: string;
  sent: string[];
  closedWith: { code?: number; reason?: string } | null;
  /** Server side: send a frame (objects are JSON-encoded). */
  receive(frame: unknown): void;
  /** Server side: close with a code. */
  serverClose(code: number, reason?: string): void;
  /** Transport failure before or after open (what a refused handshake looks like to a browser). */
  fail(): void;
  since(): number | null;
}

export function createFakeWebSocket() {
  const instances: FakeSocket[] = [];
  class FakeWebSocket implements FakeSocket {
    static instances = instances;
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
    constructor(public url: string) {
      instances.push(this);
      // Open "immediately" like a local server would, but asynchronously like a real socket.
      queueMicrotask(() => {
        if (this.readyState !== 0) return;
        this.readyState = 1;
        this.onopen?.({});
      });
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
      const s = new URL(this.url).searchParams.get('since');
      return s === null ? null : Number(s);
    }
  }
  return FakeWebSocket;
}

/** A notification frame; `prevId` defaults to `id - 1` (an unbroken stream of consecutive ids). */
export function notificationFrame(id: number, eventType = 'test.event', body: unknown = { n: id }, prevId = id - 1) {
  return {
    type: 'notification',
    event_type: eventType,
    body,
    notification: {
      id,
      prev_id: prevId,
      user_id: 'u1',
      type: 'info',
      title: `title ${id}`,
      content: `content ${id}`,
      event_type: eventType,
      source: null,
      related_object: null,
      data: null,
      created_at: '2026-01-10T08:15:00.123Z',
      read_at: null,
    },
  };
}

export function readyFrame(latestId = 0, pingIntervalMs = 25_000) {
  return { type: 'ready', session_id: 's-1', user_id: 'u1', latest_id: latestId, ping_interval_ms: pingIntervalMs };
}
