/**
 * A client written the way SGAD's front-end is (a bare WebSocket, `switch (message.event_type)`, fields read at
 * the top level, any text answered with a pong), pointed at Herald's `?format=event` — no SDK, only the token
 * added to the URL.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture, mintToken, postEvent, skipReason, startGateway, tempDir, type Gateway } from './gateway';

const reason = skipReason('seeds-frontend');
const REFEREE = '3e7a1b2c-4d5e-4f6a-8b7c-9d0e1f2a3b4c';

type Message = Record<string, any>;

/** SGAD's handler, as its front-end writes it: a switch on `event_type`, fields read at the top level. */
function sgadFrontend(url: string) {
  const seen: string[] = [];
  const messages: Message[] = [];
  let waiters: (() => void)[] = [];
  const ws = new WebSocket(url);
  ws.on('message', (data) => {
    const message = JSON.parse(String(data)) as Message;
    messages.push(message);
    switch (message.event_type) {
      case 'availability.closed':
        seen.push(`closed week ${message.week_number}: ${message.title}`);
        break;
      case 'availability.updated':
        seen.push(`refresh week ${message.week_number}`);
        break;
      case 'notification':
        seen.push(`notification ${message.title}: ${message.message}`);
        break;
      default:
        if (message.type === 'pong') seen.push(`pong ${message.message}`);
    }
    waiters.forEach((w) => w());
    waiters = [];
  });
  const until = async (n: number) => {
    while (seen.length < n) await new Promise<void>((res) => waiters.push(res));
  };
  const opened = new Promise<void>((res, rej) => {
    ws.once('open', () => res());
    ws.once('error', rej);
  });
  return { ws, seen, messages, until, opened };
}

describe.skipIf(reason !== null)("SGAD's front-end against ?format=event", () => {
  const tmp = tempDir();
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(tmp.dir);
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  const publish = async (name: string) => {
    const f = fixture(name);
    await postEvent(gw, f.body, f.exchange, f.routing_key);
  };

  it('switches on event_type and reads the event fields at the top level, live events included', async () => {
    const url = `${gw.url.replace(/^http/, 'ws')}/ws/${REFEREE}?token=${mintToken(REFEREE)}&format=event`;
    const sgad = sgadFrontend(url);
    await sgad.opened;
    await publish('sgad-availability-closed.json');
    await publish('sgad-availability-updated-no-type.json');
    await publish('sgad-notification-user.json');
    await sgad.until(3);
    expect(sgad.seen).toEqual([
      'closed week 42: Your availability for week 42 is closed',
      'refresh week 43',
      'notification Disponibilidad Cerrada: Tu disponibilidad ha sido cerrada',
    ]);
    // Herald's id travels with each stored one, for resume; the live-only refresh has none.
    expect(typeof sgad.messages.find((m) => m.event_type === 'availability.closed')?.id).toBe('number');
    expect(sgad.messages.find((m) => m.event_type === 'availability.updated')?.id).toBeUndefined();

    sgad.ws.send('hello?');
    await sgad.until(4);
    expect(sgad.seen[3]).toBe('pong Connection alive');
    sgad.ws.close();
  });

  it('still needs a token', async () => {
    const ws = new WebSocket(`${gw.url.replace(/^http/, 'ws')}/ws/${REFEREE}?format=event`);
    const status = await new Promise<number>((res) => ws.once('unexpected-response', (_req, r) => res(r.statusCode!)));
    expect(status).toBe(401);
  });
});
