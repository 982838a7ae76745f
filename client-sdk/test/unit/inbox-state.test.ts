import { describe, expect, it } from 'vitest';
import type { Notification } from '../../src';
import { inboxReducer, initialInboxState, type InboxAction, type InboxState } from '../../src/react/inbox-state';
import { notificationFrame } from '../helpers/fake-websocket';

const n = (id: number, read_at: string | null = null): Notification => ({
  ...notificationFrame(id).notification,
  read_at,
});
const ids = (s: InboxState) => s.items.map((i) => i.id);
const run = (actions: InboxAction[], unreadOnly = false) => actions.reduce(inboxReducer, initialInboxState(unreadOnly));
const page = (items: Notification[], has_more = false, first = true): InboxAction => ({
  type: 'page',
  first,
  page: { items, has_more, next_before: has_more ? items[items.length - 1]!.id : null },
});

describe('inbox reducer', () => {
  it('merges pages and live notifications newest first, one per id', () => {
    const s = run([
      page([n(5), n(4)], true),
      { type: 'upsert', items: [n(6)] },
      { type: 'upsert', items: [n(6)] },
      page([n(3), n(2)], false, false),
    ]);
    expect(ids(s)).toEqual([6, 5, 4, 3, 2]);
    expect(s).toMatchObject({ hasMore: false, nextBefore: null, loading: false, loaded: true });
  });

  it('a refetched first page keeps what was pushed live while it was out, whatever its id', () => {
    // Targeted 95 came after broadcast 100 (two nodes) while the refetch was out: its id is inside the page's span.
    const refetch: InboxAction = { ...page([n(100), n(5)]), arrived: new Set([95]) } as InboxAction;
    const s = run([page([n(100), n(5)]), { type: 'upsert', items: [n(95)] }, refetch]);
    expect(ids(s)).toEqual([100, 95, 5]);
    // Without it, the page's span is the truth: an id it lacks there is gone.
    expect(ids(run([page([n(100), n(95), n(5)]), page([n(100), n(5)])]))).toEqual([100, 5]);
  });

  it('a refetch after a reconnect drops the newest rows changed elsewhere, not only those inside its span', () => {
    // 60 was deleted (or read, in an unread list) on another device while this one slept: the page lacks it and
    // nothing arrived while it was out. It stayed, above the page's newest id, until a later page passed it.
    const refetch = { ...page([n(50), n(40)]), truncate: true, arrived: new Set<number>() } as InboxAction;
    expect(ids(run([page([n(60), n(50), n(40)]), refetch]))).toEqual([50, 40]);
    // What arrived live while it was out stays.
    const withArrival = { ...page([n(50), n(40)]), truncate: true, arrived: new Set([70]) } as InboxAction;
    expect(ids(run([page([n(60), n(50), n(40)]), { type: 'upsert', items: [n(70)] }, withArrival]))).toEqual([
      70, 50, 40,
    ]);
  });

  it('a refetched first page keeps the cursor of older pages and drops what vanished in its span', () => {
    const s = run([
      page([n(5), n(4)], true),
      page([n(3), n(2)], true, false),
      { type: 'upsert', items: [n(9)] }, // arrived live after the refetch was answered
      page([n(8), n(4)], true), // 5 was deleted elsewhere; 3 and 2 are older than the page: kept
    ]);
    expect(ids(s)).toEqual([9, 8, 4, 3, 2]);
    expect(s.nextBefore).toBe(2);
  });

  it('applies read, read_all and deleted', () => {
    let s = run([page([n(3), n(2), n(1)])]);
    s = inboxReducer(s, { type: 'read', ids: [2], readAt: 'r1' });
    expect(s.items.map((i) => i.read_at)).toEqual([null, 'r1', null]);
    s = inboxReducer(s, { type: 'read_all', upTo: 3, readAt: 'r2' });
    expect(s.items.map((i) => i.read_at)).toEqual(['r2', 'r1', 'r2']); // already-read keeps its time
    s = inboxReducer(s, { type: 'remove', ids: [3] });
    expect(ids(s)).toEqual([2, 1]);
  });

  it('an unread-only list drops what gets read', () => {
    let s = run([page([n(3), n(2), n(1)])], true);
    s = inboxReducer(s, { type: 'read', ids: [3], readAt: 'r' });
    expect(ids(s)).toEqual([2, 1]);
    s = inboxReducer(s, { type: 'upsert', items: [n(2, 'r')] }); // markRead's answer
    expect(ids(s)).toEqual([1]);
    s = inboxReducer(s, { type: 'read_all', upTo: 1, readAt: 'r' });
    expect(ids(s)).toEqual([]);
  });

  it('records errors and clears them with the next page', () => {
    const err = Object.assign(new Error('x'), { status: 500, code: 'internal' }) as never;
    let s = run([{ type: 'loading' }, { type: 'error', error: err }]);
    expect(s).toMatchObject({ loading: false, error: err });
    s = inboxReducer(s, page([n(1)]));
    expect(s.error).toBeNull();
  });
});
