/**
 * The inbox list as React state: a pure reducer, so merging REST pages with live frames is testable alone.
 * Items are kept newest first (by id), one per id.
 */
import type { HeraldError } from '../errors';
import type { InboxPage, Notification } from '../protocol';

export interface InboxState {
  items: Notification[];
  hasMore: boolean;
  /** Cursor for the next older page. */
  nextBefore: number | null;
  loading: boolean;
  error: HeraldError | null;
  /** A page has arrived at least once. */
  loaded: boolean;
  /** The list shows unread notifications only: read ones leave it. */
  unreadOnly: boolean;
}

export type InboxAction =
  | { type: 'loading' }
  | { type: 'error'; error: HeraldError }
  /**
   * `first`: a fresh first page. `truncate` (with `first`): the pages loaded below it may be out of date (a
   * refetch after a reconnect): they are dropped, and the list goes on from the page's cursor. `arrived`: ids
   * pushed live while the request was out, kept though the page lacks them (ids of the two chains are not
   * ordered with each other: a targeted one may come after a broadcast with a greater id).
   */
  | { type: 'page'; page: InboxPage; first: boolean; truncate?: boolean; arrived?: ReadonlySet<number> }
  | { type: 'upsert'; items: Notification[] }
  | { type: 'read'; ids: number[]; readAt: string }
  | { type: 'unread'; ids: number[] }
  | { type: 'read_all'; upTo: number; readAt: string }
  | { type: 'remove'; ids: number[] }
  /** Another client (user) took over: forget everything shown. */
  | { type: 'reset' };

export function initialInboxState(unreadOnly = false): InboxState {
  return { items: [], hasMore: false, nextBefore: null, loading: true, error: null, loaded: false, unreadOnly };
}

function merge(current: Notification[], incoming: Notification[]): Notification[] {
  const byId = new Map(current.map((n) => [n.id, n]));
  for (const n of incoming) byId.set(n.id, n);
  return [...byId.values()].sort((a, b) => b.id - a.id);
}

export function inboxReducer(state: InboxState, action: InboxAction): InboxState {
  switch (action.type) {
    case 'reset':
      return initialInboxState(state.unreadOnly);
    case 'loading':
      return { ...state, loading: true };
    case 'error':
      return { ...state, loading: false, error: action.error };
    case 'page': {
      const { page } = action;
      let items = state.items;
      if (action.first && page.items.length > 0) {
        // A fresh first page is the truth for the ids it spans: what it lacks there was deleted (or read,
        // for an unread-only list) while we were not listening. What arrived live while it was out is kept: by
        // `arrived` when the caller tracked it (then an id above the page's newest that did not arrive meanwhile
        // is one deleted, read or archived elsewhere), else by id, above the page's newest.
        const ids = new Set(page.items.map((n) => n.id));
        const newest = page.items[0]!.id;
        const oldest = page.has_more && !action.truncate ? page.items[page.items.length - 1]!.id : -Infinity;
        const arrived = action.arrived;
        const live = arrived ? (n: Notification) => arrived.has(n.id) : (n: Notification) => n.id > newest;
        items = items.filter((n) => ids.has(n.id) || n.id < oldest || live(n));
      } else if (action.first && action.truncate) {
        items = [];
      }
      items = merge(items, page.items);
      // Refetching the first page must not lose the cursor of pages already loaded below it.
      const keepCursor = action.first && state.loaded && !action.truncate;
      return {
        ...state,
        items,
        loading: false,
        error: null,
        loaded: true,
        hasMore: keepCursor ? state.hasMore : page.has_more,
        nextBefore: keepCursor ? state.nextBefore : page.next_before,
      };
    }
    case 'upsert': {
      const incoming = state.unreadOnly ? action.items.filter((n) => n.read_at === null) : action.items;
      const gone = state.unreadOnly ? action.items.filter((n) => n.read_at !== null).map((n) => n.id) : [];
      return {
        ...state,
        items: merge(
          state.items.filter((n) => !gone.includes(n.id)),
          incoming,
        ),
      };
    }
    case 'read':
    case 'read_all': {
      const hit = (n: Notification) =>
        n.read_at === null && (action.type === 'read' ? action.ids.includes(n.id) : n.id <= action.upTo);
      const items = state.unreadOnly
        ? state.items.filter((n) => !hit(n))
        : state.items.map((n) => (hit(n) ? { ...n, read_at: action.readAt } : n));
      return { ...state, items };
    }
    case 'unread':
      return {
        ...state,
        items: state.items.map((n) => (action.ids.includes(n.id) ? { ...n, read_at: null } : n)),
      };
    case 'remove':
      return { ...state, items: state.items.filter((n) => !action.ids.includes(n.id)) };
  }
}
