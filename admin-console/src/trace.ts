// A trace (contract D) as a timeline an operator reads top to bottom: received → rule → stored → published →
// per-recipient delivery, or the step where it stopped and why.

import type { Delivery, Trace } from './api';
import { after } from './format';

export type Tone = 'ok' | 'warn' | 'fail' | 'skip';

export interface Step {
  title: string;
  detail: string;
  tone: Tone;
  /** Time after reception, when the step has its own time. */
  at?: string;
}

const DELIVERY_REASON: Record<string, [Tone, string]> = {
  offline: ['warn', 'offline: no session open; it waits in the inbox and is replayed when they connect'],
  muted: ['warn', 'muted by their preferences: stored, listed, not pushed'],
  outbox_overflow: ['fail', 'the session’s outbox was full: the frame was dropped and the session resyncs'],
  closed: ['warn', 'the session closed before the write'],
};

function deliveryStep(d: Delivery, receivedAt: string): Step {
  const at = after(receivedAt, d.at);
  if (d.reason) {
    const [tone, text] = DELIVERY_REASON[d.reason] ?? ['warn', d.reason];
    return { title: `Not delivered to ${d.user_id}`, detail: `${text} (node ${d.node})`, tone, at };
  }
  const n = d.sessions_written;
  return {
    title: `Delivered to ${d.user_id}`,
    detail: `queued for ${n} session${n === 1 ? '' : 's'} on node ${d.node}`,
    tone: n > 0 ? 'ok' : 'warn',
    at,
  };
}

/** The steps of one trace; `user`: show that recipient's delivery only (a search by user). */
export function timeline(t: Trace, user?: string): Step[] {
  const steps: Step[] = [];
  const where = [t.exchange && `exchange ${t.exchange}`, t.routing_key && `routing key ${t.routing_key}`]
    .filter(Boolean)
    .join(', ');
  steps.push({
    title: `Received over ${t.transport.toUpperCase()}`,
    detail: [where, t.producer && `from key ${t.producer}`, t.event_type && `type ${t.event_type}`]
      .filter(Boolean)
      .join(' · '),
    tone: 'ok',
  });
  if (t.dedupe === 'duplicate' || t.outcome === 'duplicate') {
    steps.push({
      title: 'Duplicate',
      detail: 'this event id was already stored: not stored or pushed again',
      tone: 'warn',
    });
    return steps;
  }
  switch (t.outcome) {
    case 'unmatched':
      steps.push({ title: 'No rule matched', detail: t.reason ?? 'no rule matches this event: not stored', tone: 'fail' });
      return steps;
    case 'ignored':
      steps.push({ title: `Rule ${t.rule ?? '?'}`, detail: 'the rule ignores this event: acknowledged, not stored', tone: 'skip' });
      return steps;
    case 'dead_lettered':
      steps.push({
        title: t.rule ? `Rule ${t.rule}: dead-lettered` : 'Dead-lettered',
        detail: t.reason ?? 'sent to the dead-letter queue',
        tone: 'fail',
      });
      return steps;
    case 'held_for_retry':
      steps.push({
        title: `Rule ${t.rule ?? '?'}: held for a retry`,
        detail: t.reason ?? 'its recipient alias is not known yet: the next try is a trace of its own',
        tone: 'warn',
      });
      return steps;
    case 'unresolved':
      steps.push({
        title: `Rule ${t.rule ?? '?'}: recipient unknown`,
        detail: t.reason ?? 'addressed through an alias no user is known for yet',
        tone: 'fail',
      });
      return steps;
  }
  steps.push({ title: `Rule ${t.rule ?? '?'}`, detail: recipientsText(t.recipients), tone: 'ok' });
  if (t.outcome === 'purged') {
    steps.push({ title: 'Inbox erased', detail: recipientsText(t.recipients), tone: 'ok' });
    return steps;
  }
  if (t.outcome === 'live_only') {
    steps.push({ title: 'Live only', detail: 'pushed to open sessions, not stored', tone: 'ok' });
  } else {
    const ids = t.notification_ids.map((i) => `#${i}`).join(', ');
    steps.push({ title: 'Stored', detail: ids ? `notification ${ids}` : 'nothing stored', tone: ids ? 'ok' : 'warn' });
  }
  steps.push({
    title: 'Published',
    detail: t.published_to.length ? `to node ${t.published_to.join(', ')}` : 'to no node (no session anywhere)',
    tone: t.published_to.length ? 'ok' : 'skip',
  });
  const deliveries = user ? t.deliveries.filter((d) => d.user_id === user) : t.deliveries;
  for (const d of deliveries) steps.push(deliveryStep(d, t.received_at));
  const delivered = new Set(t.deliveries.map((d) => d.user_id));
  const addressed = (r: string) => t.recipients.includes(r) || t.recipients.includes('everyone');
  const waiting = (user ? [user] : t.recipients).filter((r) => r !== 'everyone' && addressed(r) && !delivered.has(r));
  for (const r of waiting) {
    steps.push({
      title: `Not delivered to ${r}`,
      detail: 'no node held a session for them: it waits in the inbox',
      tone: 'warn',
    });
  }
  for (const s of t.seen.filter((x) => !user || x.user_id === user)) {
    steps.push({ title: `Seen by ${s.user_id}`, detail: '', tone: 'ok', at: after(t.received_at, s.seen_at) });
  }
  for (const r of t.read.filter((x) => !user || x.user_id === user)) {
    steps.push({ title: `Read by ${r.user_id}`, detail: '', tone: 'ok', at: after(t.received_at, r.read_at) });
  }
  return steps;
}

function recipientsText(rs: string[]): string {
  if (rs.length === 0) return 'no recipient';
  if (rs.includes('everyone')) return 'to everyone';
  const shown = rs.slice(0, 5).join(', ');
  return `to ${shown}${rs.length > 5 ? ` and ${rs.length - 5} more` : ''}`;
}

/** One sentence: what became of the event (for `user`, whether they got it and if not, why). */
export function verdict(t: Trace, user?: string): { tone: Tone; text: string } {
  const steps = timeline(t, user);
  // Held for a retry: this try stopped there, whoever is asking (its recipients are not known yet).
  const held = t.outcome === 'held_for_retry';
  const stopped = held || steps.some((s) => s.tone === 'fail');
  if (user && !stopped && !t.recipients.includes(user) && !t.recipients.includes('everyone'))
    return { tone: 'warn', text: `${user} is not a recipient of this event` };
  const last = steps[steps.length - 1]!;
  const stop =
    steps.find((s) => s.tone === 'fail') ??
    (held ? last : user ? steps.find((s) => s.title.startsWith('Not delivered')) : undefined);
  if (stop) return { tone: stop.tone, text: `${stop.title}: ${stop.detail}` };
  if (user) {
    const got = steps.find((s) => s.title === `Delivered to ${user}`);
    if (got) return { tone: 'ok', text: `${got.title}, ${got.detail}` };
  }
  return { tone: last.tone, text: last.detail ? `${last.title}: ${last.detail}` : last.title };
}
