// The dry-run box: the pasted event must be JSON before it is sent; the answer as one sentence.

import type { DryRunResult } from './api';

export type DryRunBody = { event: unknown; routing_key?: string; exchange?: string };

/** The request body, or a message saying what is wrong with the pasted text. */
export function parseEventInput(text: string, routingKey: string, exchange: string): { body: DryRunBody } | { error: string } {
  if (!text.trim()) return { error: 'Paste an event (JSON).' };
  let event: unknown;
  try {
    event = JSON.parse(text);
  } catch (e) {
    return { error: `The event is not JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  const body: DryRunBody = { event };
  if (routingKey.trim()) body.routing_key = routingKey.trim();
  if (exchange.trim()) body.exchange = exchange.trim();
  return { body };
}

/** What the rules would do, in one sentence. */
export function dryRunHeadline(r: DryRunResult): string {
  const v = r.verdict;
  switch (v.outcome) {
    case 'stored':
      return `Rule ${v.rule} matches: a notification for ${v.recipients?.join(', ')} would be stored and pushed.`;
    case 'live':
      return `Rule ${v.rule} matches: pushed live to ${v.recipients?.join(', ')}, not stored.`;
    case 'purged':
      return `Rule ${v.rule} matches: the inbox of ${v.users?.join(', ')} would be erased.`;
    case 'ignored':
      return `Rule ${v.rule} matches and ignores it: acknowledged, not stored.`;
    case 'unmatched':
      return r.transport === 'amqp'
        ? 'No rule matches: over AMQP it would be dead-lettered (unmatched).'
        : 'No rule matches: HTTP ingest would answer 422 `unmatched`, nothing stored.';
    case 'dead_letter':
      return `It would be dead-lettered (${v.reason}): ${v.message}`;
  }
}
