import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  isNotification,
  type Counts,
  type Preferences,
  type SeenAllResult,
  type ClientMessage,
  parseServerFrame,
  ProtocolError,
  type ErrorBody,
  type InboxPage,
  type Notification,
  type ServerFrame,
  type UnreadCount,
} from '../../src/protocol';

const GOLDEN = join(__dirname, '../../../tests/golden');
const text = (name: string) => readFileSync(join(GOLDEN, name), 'utf8');
const json = <T>(name: string) => JSON.parse(text(name)) as T;

describe('golden files', () => {
  const files = readdirSync(GOLDEN).filter((f) => f.endsWith('.json'));
  const frames = files.filter((f) => f.startsWith('frame-'));
  const eventFormat = files.filter((f) => f.startsWith('event-format-'));

  it('are all covered by a test', () => {
    const clients = files.filter((f) => f.startsWith('client-'));
    const others = [
      'counts.json',
      'error.json',
      'inbox-page.json',
      'notification.json',
      'preferences.json',
      'seen-all.json',
      'unread-count.json',
    ];
    expect(files.sort()).toEqual([...frames, ...clients, ...eventFormat, ...others].sort());
  });

  it("event-format files (the seeds' ?format=event shape, not this SDK's) put event_type at the top level", () => {
    expect(eventFormat.length).toBeGreaterThan(0);
    for (const f of eventFormat.filter((f) => !f.includes('pong'))) {
      expect(typeof json<Record<string, unknown>>(f).event_type, f).toBe('string');
    }
    expect(json('event-format-pong.json')).toEqual({ type: 'pong', message: 'Connection alive' });
  });

  it.each(frames)('%s parses as a server frame with its own type', (file) => {
    const frame = parseServerFrame(text(file))!;
    const expected = file
      .replace(/^frame-|\.json$/g, '')
      .replace(/-/g, '_')
      .replace('broadcast', 'notification');
    expect(frame.type).toBe(expected);
    expect(frame).toEqual(JSON.parse(text(file)));
  });

  it('notification frame carries the notification, event type and original body', () => {
    const f = parseServerFrame(text('frame-notification.json')) as Extract<ServerFrame, { type: 'notification' }>;
    expect(f.notification.id).toBe(42);
    expect(f.notification.related_object).toEqual({ type: 'stage', id: '9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d' });
    expect(f.event_type).toBe(f.notification.event_type);
    expect((f.body as { service: string }).service).toBe('core-service');
  });

  it('broadcast has a null user_id', () => {
    const f = parseServerFrame(text('frame-broadcast.json')) as Extract<ServerFrame, { type: 'notification' }>;
    expect(f.notification.user_id).toBeNull();
  });

  it('ready frame gives the ping interval and the latest id of each chain (latest_id the greater)', () => {
    expect(parseServerFrame(text('frame-ready.json'))).toMatchObject({
      latest_id: 43,
      latest_targeted_id: 43,
      latest_broadcast_id: 40,
      ping_interval_ms: 25_000,
    });
  });

  it('replayed, resync and truncated frames carry a cursor per chain', () => {
    expect(parseServerFrame(text('frame-replayed.json'))).toMatchObject({
      up_to: 43,
      up_to_targeted: 43,
      up_to_broadcast: 40,
    });
    expect(parseServerFrame(text('frame-resync.json'))).toMatchObject({
      reason: 'slow_consumer',
      since: 41,
      since_broadcast: 40,
    });
    expect(parseServerFrame(text('frame-truncated.json'))).toMatchObject({
      since: 3,
      since_broadcast: 2,
      oldest_id: 17,
    });
  });

  it('notification.json is a Notification', () => {
    const n = json<Notification>('notification.json');
    expect(isNotification(n)).toBe(true);
    expect(n.read_at).toBeNull();
  });

  it('inbox-page.json is an InboxPage of notifications, newest first', () => {
    const page = json<InboxPage>('inbox-page.json');
    expect(page.items.every(isNotification)).toBe(true);
    expect(page.items.map((n) => n.id)).toEqual([43, 42]);
    expect(page).toMatchObject({ next_before: 42, has_more: true });
  });

  it('notification.json carries the inbox states: seen_at, archived_at, muted', () => {
    const n = json<Notification>('notification.json');
    expect(n).toMatchObject({ seen_at: '2026-01-10T08:20:00.000Z', archived_at: null, muted: false });
  });

  it('counts.json, seen-all.json and preferences.json have the documented fields', () => {
    expect(json<Counts>('counts.json')).toEqual({ unread: 3, unseen: 1 });
    expect(json<SeenAllResult>('seen-all.json')).toEqual({ up_to: 43, seen_at: '2026-01-10T09:00:00.000Z' });
    const prefs = json<Preferences>('preferences.json');
    expect(Object.values(prefs.types).every((v) => v === 'on' || v === 'muted')).toBe(true);
    expect(Object.values(prefs.defaults ?? {}).every((v) => v === 'on' || v === 'muted')).toBe(true);
    expect(prefs.known?.every((t) => typeof t === 'string')).toBe(true);
  });

  it('unread-count.json and error.json have the documented fields', () => {
    expect(json<UnreadCount>('unread-count.json').unread_count).toBe(1);
    const err = json<ErrorBody>('error.json');
    expect(typeof err.error).toBe('string');
    expect(typeof err.message).toBe('string');
  });

  it.each(files.filter((f) => f.startsWith('client-')))('%s is a ClientMessage', (file) => {
    const msg = json<ClientMessage>(file);
    const valid =
      msg.type === 'ping' ||
      (msg.type === 'resume' && Number.isInteger(msg.since) && Number.isInteger(msg.since_broadcast)) ||
      (msg.type === 'auth' && typeof msg.token === 'string');
    expect(valid).toBe(true);
  });

  it('notifications carry prev_id for gap detection', () => {
    expect(json<Notification>('notification.json').prev_id).toBe(40);
    const page = json<InboxPage>('inbox-page.json');
    expect(page.items.map((n) => n.prev_id)).toEqual([39, 40]);
  });
});

describe('parseServerFrame ignores frame types it does not know (a newer server)', () => {
  it.each([
    ['an unknown type', '{"type": "subscribe", "channel": "x"}'],
    ['an inherited property name as type', '{"type": "toString"}'],
  ])('%s → null', (_, input) => {
    expect(parseServerFrame(input)).toBeNull();
  });
});

describe('parseServerFrame rejects', () => {
  it.each([
    ['not JSON', 'ping'],
    ['a JSON array', '[1]'],
    ['no type', '{"up_to": 1}'],
    ['a non-string type', '{"type": 7}'],
    ['a notification without one', '{"type":"notification","event_type":"x","body":null}'],
    [
      'a notification with a string id',
      JSON.stringify({
        ...json<object>('frame-notification.json'),
        notification: { ...json<object>('notification.json'), id: '42' },
      }),
    ],
    ['read ids that are not numbers', '{"type":"read","ids":["1"],"read_at":"2026-01-10T09:00:00.000Z"}'],
    [
      'ready without ping interval',
      '{"type":"ready","session_id":"s","user_id":"u","latest_id":0,"latest_targeted_id":0,"latest_broadcast_id":0}',
    ],
    [
      'ready without the latest id of each chain (a v1 server)',
      '{"type":"ready","session_id":"s","user_id":"u","latest_id":0,"ping_interval_ms":25000}',
    ],
    ['replayed without the broadcast cursor', '{"type":"replayed","up_to":4,"up_to_targeted":4}'],
    ['resync without the broadcast cursor', '{"type":"resync","reason":"slow_consumer","since":4}'],
    ['truncated without oldest_id', '{"type":"truncated","since":4,"since_broadcast":2}'],
  ])('%s', (_, input) => {
    expect(() => parseServerFrame(input)).toThrow(ProtocolError);
  });
});
