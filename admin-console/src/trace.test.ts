import { describe, expect, it } from 'vitest';
import type { Trace } from './api';
import { timeline, verdict } from './trace';

const base: Trace = {
  trace_id: 't1',
  event_id: 'evt-1',
  received_at: '2026-11-29T04:00:00Z',
  transport: 'http',
  exchange: null,
  routing_key: 'user.registered',
  producer: 'billing',
  event_type: 'user.registered',
  dedupe: 'new',
  rule: 'welcome',
  outcome: 'stored',
  reason: null,
  recipients: ['alice', 'bob'],
  notification_ids: [7, 8],
  published_to: ['node-a'],
  deliveries: [
    { user_id: 'alice', node: 'node-a', online: true, sessions_written: 2, reason: null, at: '2026-11-29T04:00:00.004Z' },
    { user_id: 'bob', node: 'node-a', online: false, sessions_written: 0, reason: 'offline', at: '2026-11-29T04:00:00.004Z' },
  ],
  read: [{ user_id: 'alice', read_at: '2026-11-29T04:01:00Z' }],
  seen: [],
};

describe('a trace as a timeline', () => {
  it('reads received → rule → stored → published → each recipient', () => {
    const titles = timeline(base).map((s) => s.title);
    expect(titles).toEqual([
      'Received over HTTP',
      'Rule welcome',
      'Stored',
      'Published',
      'Delivered to alice',
      'Not delivered to bob',
      'Read by alice',
    ]);
    expect(timeline(base)[4]!.detail).toBe('queued for 2 sessions on node node-a');
    expect(timeline(base)[4]!.at).toBe('+4 ms');
  });
  it('answers why a user did not get it', () => {
    const v = verdict(base, 'bob');
    expect(v.tone).toBe('warn');
    expect(v.text).toMatch(/^Not delivered to bob: offline/);
    expect(verdict(base, 'alice')).toEqual({ tone: 'ok', text: 'Delivered to alice, queued for 2 sessions on node node-a' });
  });
  it('stops at the step that failed, with the reason', () => {
    const unmatched = { ...base, rule: null, outcome: 'unmatched', reason: null, recipients: [], deliveries: [] };
    expect(timeline(unmatched).map((s) => s.title)).toEqual(['Received over HTTP', 'No rule matched']);
    expect(verdict(unmatched, 'bob').tone).toBe('fail');
    const dead = { ...base, transport: 'amqp', outcome: 'dead_lettered', reason: 'missing_user_id: no user id at user_id' };
    expect(verdict(dead).text).toBe('Rule welcome: dead-lettered: missing_user_id: no user id at user_id');
    const held = {
      ...base,
      transport: 'amqp',
      outcome: 'held_for_retry',
      recipients: [],
      deliveries: [],
      reason: 'unresolved_recipient: no user for student s1; retry 1 of 6, back in 10 s',
    };
    expect(timeline(held).map((s) => s.title)).toEqual(['Received over AMQP', 'Rule welcome: held for a retry']);
    expect(verdict(held, 'bob')).toEqual({
      tone: 'warn',
      text: 'Rule welcome: held for a retry: unresolved_recipient: no user for student s1; retry 1 of 6, back in 10 s',
    });
    const dup = { ...base, dedupe: 'duplicate', outcome: 'duplicate' };
    expect(timeline(dup).map((s) => s.title)).toEqual(['Received over HTTP', 'Duplicate']);
  });
  it('names muted and overflowing deliveries, and recipients no node held', () => {
    const t: Trace = {
      ...base,
      recipients: ['alice', 'bob', 'carol'],
      deliveries: [
        { ...base.deliveries[0]!, reason: 'muted', sessions_written: 0 },
        { ...base.deliveries[0]!, user_id: 'bob', reason: 'outbox_overflow', sessions_written: 0 },
      ],
    };
    const steps = timeline(t);
    expect(steps.find((s) => s.title === 'Not delivered to alice')!.detail).toMatch(/muted/);
    expect(steps.find((s) => s.title === 'Not delivered to bob')!.tone).toBe('fail');
    expect(steps.find((s) => s.title === 'Not delivered to carol')!.detail).toMatch(/waits in the inbox/);
  });
  it('says when the searched user is not a recipient', () => {
    expect(verdict(base, 'zoe').text).toBe('zoe is not a recipient of this event');
  });
});
