/** Compile-time checks (run by `npm run typecheck`); at run time these are trivial. */
import { describe, expectTypeOf, it } from 'vitest';
import WebSocketNode from 'ws';
import { HeraldClient, type NotificationContext, type WebSocketConstructor } from '../../src';

describe('types', () => {
  it('the ws package and the DOM WebSocket fit the WebSocket option', () => {
    expectTypeOf(WebSocketNode).toExtend<WebSocketConstructor>();
    expectTypeOf<typeof globalThis.WebSocket>().toExtend<WebSocketConstructor>();
  });

  it('a body map narrows `body` by `eventType`', () => {
    type Bodies = {
      'stage.accepted': { payload: { stage_id: string } };
      'student.created': { payload: { user_id: number } };
    };
    const client = new HeraldClient<Bodies>({ url: 'http://h', userId: 'u', getToken: async () => 't' });
    client.on('notification', (n) => {
      if (n.eventType === 'stage.accepted') expectTypeOf(n.body.payload.stage_id).toEqualTypeOf<string>();
      else expectTypeOf(n.body.payload.user_id).toEqualTypeOf<number>();
    });
    expectTypeOf<NotificationContext['body']>().toEqualTypeOf<unknown>();
    expectTypeOf<NotificationContext['eventType']>().toEqualTypeOf<string>();
  });
});
