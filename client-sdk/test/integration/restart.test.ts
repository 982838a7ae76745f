import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { State } from '../../src';
import { mintToken, newUser, notify, skipReason, startGateway, tempDir, testClient, type Gateway } from './gateway';

const reason = skipReason('restart');

describe.skipIf(reason !== null)('surviving a gateway restart', () => {
  const tmp = tempDir();
  const gateways: Gateway[] = [];
  afterAll(async () => {
    await Promise.all(gateways.map((g) => g.stop('SIGKILL')));
    tmp.remove();
  });

  // SIGKILL: the socket just dies (1006). SIGTERM: the gateway drains sessions with close code 1001.
  it.each(['SIGKILL', 'SIGTERM'] as const)(
    'after %s: reconnects to the new process, gets what was posted while down via since, once each',
    async (signal) => {
      // An inbox per case: the other case's second gateway still serves its own (an SQLite inbox is one process's).
      const dir = join(tmp.dir, signal);
      mkdirSync(dir);
      const first = await startGateway(dir);
      gateways.push(first);
      const user = newUser();

      // Record every URL the client opens; hold getToken() while the test wants the client kept away.
      const urls: string[] = [];
      class RecordingWebSocket extends WebSocket {
        constructor(url: string, protocols?: string | string[]) {
          super(url, protocols);
          urls.push(url);
        }
      }
      let gate: Promise<void> = Promise.resolve();
      let tokenCalls = 0;
      const client = testClient(first, user, {
        WebSocket: RecordingWebSocket,
        getToken: async () => {
          tokenCalls++;
          await gate;
          return mintToken(user);
        },
      });
      const ids: number[] = [];
      client.on('notification', (n) => ids.push(n.notification.id));
      try {
        client.connect();
        await vi.waitFor(() => expect(client.state).toBe(State.Connected), { timeout: 5000 });
        const before = await notify(first, user);
        await vi.waitFor(() => expect(ids).toEqual([before.id]), { timeout: 5000 });

        let open!: () => void;
        gate = new Promise((r) => (open = r));
        await first.stop(signal);
        await vi.waitFor(() => expect(client.state).toBe(State.Connecting), { timeout: 5000 });

        const second = await startGateway(dir, first.port);
        gateways.push(second);
        const missed = [await notify(second, user), await notify(second, user), await notify(second, user)];
        expect(ids).toEqual([before.id]); // the client is still held away
        open();

        await vi.waitFor(() => expect(client.state).toBe(State.Connected), { timeout: 10_000 });
        const after = await notify(second, user);
        const expected = [before, ...missed, after].map((n) => n.id);
        await vi.waitFor(() => expect(ids).toEqual(expected), { timeout: 5000 });
        await new Promise((r) => setTimeout(r, 300));
        expect(ids).toEqual(expected); // no duplicates came late

        const resumed = new URL(urls[urls.length - 1]!);
        expect(resumed.searchParams.get('since')).toBe(String(before.id));
        expect(resumed.searchParams.get('since_broadcast')).toBe('0'); // no broadcast in this inbox
        expect(new URL(urls[0]!).searchParams.has('since')).toBe(false);
        expect(tokenCalls).toBeGreaterThanOrEqual(2);
      } finally {
        client.close();
      }
    },
  );
});
