/** Hooks on the client's one inbox store: every component that uses them shares its requests and state. */
import { useCallback, useMemo, useSyncExternalStore } from 'react';
import { toHeraldError, type HeraldError } from '../errors';
import type { Notification } from '../protocol';
import { getInboxStore, tabFilter, type CountsState, type InboxStore, type InboxTab } from '../store';
import { useHeraldClient } from './context';

/** The provider's client's inbox store (one per client). */
export function useInboxStore(): InboxStore {
  return getInboxStore(useHeraldClient());
}

export interface UseCountsResult extends CountsState {
  /** Fetch the counts over REST (they normally arrive in `counts` frames). */
  refresh: () => Promise<void>;
}

/** `{ unread, unseen }`, pushed by the server (`counts` frames): no request follows a live frame. */
export function useCounts(): UseCountsResult {
  const store = useInboxStore();
  const counts = useSyncExternalStore(store.subscribeCounts, store.getCounts, store.getCounts);
  const refresh = useCallback(() => store.refreshCounts(), [store]);
  return useMemo(() => ({ ...counts, refresh }), [counts, refresh]);
}

export interface UseInboxOptions {
  /** `all` (default), `unread`, or `archived`. */
  tab?: InboxTab;
  /** Only notifications of this type. */
  type?: string;
  /** Only notifications about objects of this type (with `relatedId`: about that object). */
  relatedType?: string;
  relatedId?: string;
  /** Page size (1..=100; default 20). */
  limit?: number;
}

export interface UseInboxResult {
  /** Newest first, one per id: pages merged with live notifications. */
  items: readonly Notification[];
  hasMore: boolean;
  loading: boolean;
  /** A page arrived at least once (before that, `items` is empty because nothing is known yet). */
  loaded: boolean;
  /**
   * The last failed page request (the first page, `fetchMore`, `refresh`, a refetch after a reconnect), cleared
   * by the next page. Actions do not set it: each resolves to its own error.
   */
  error: HeraldError | null;
  fetchMore: () => Promise<void>;
  refresh: () => Promise<void>;
  /**
   * Actions never throw: they resolve to the error, or null when they worked. `markAllRead` on a list narrowed by
   * `type` or `relatedType`/`relatedId` marks read only the unread notifications it matches that the store has
   * loaded (the server's `read_all` takes no filter); otherwise everything (`read_all`).
   */
  markRead: (id: number) => Promise<HeraldError | null>;
  markUnread: (id: number) => Promise<HeraldError | null>;
  archive: (id: number) => Promise<HeraldError | null>;
  unarchive: (id: number) => Promise<HeraldError | null>;
  markAllRead: () => Promise<HeraldError | null>;
  markAllSeen: () => Promise<HeraldError | null>;
  remove: (id: number) => Promise<HeraldError | null>;
}

async function attempt(action: () => Promise<void>): Promise<HeraldError | null> {
  try {
    await action();
    return null;
  } catch (e) {
    return toHeraldError(e, 'request_failed');
  }
}

/**
 * One list of the inbox (a tab, optionally narrowed by type or related object), kept current by the shared
 * store: components showing the same list share one fetch.
 */
export function useInbox(opts: UseInboxOptions = {}): UseInboxResult {
  const store = useInboxStore();
  const { tab = 'all', type, relatedType, relatedId, limit } = opts;
  const filter = useMemo(
    () => tabFilter(tab, { type, related_type: relatedType, related_id: relatedId, limit }),
    [tab, type, relatedType, relatedId, limit],
  );
  const subscribe = useCallback((onChange: () => void) => store.subscribeList(filter, onChange), [store, filter]);
  const get = useCallback(() => store.getList(filter), [store, filter]);
  const state = useSyncExternalStore(subscribe, get, get);
  return useMemo(
    () => ({
      ...state,
      fetchMore: () => store.fetchMore(filter),
      refresh: () => store.refresh(filter),
      markRead: (id: number) => attempt(() => store.markRead(id)),
      markUnread: (id: number) => attempt(() => store.markUnread(id)),
      archive: (id: number) => attempt(() => store.archive(id)),
      unarchive: (id: number) => attempt(() => store.unarchive(id)),
      markAllRead: () => attempt(() => store.markAllRead(filter)),
      markAllSeen: () => attempt(() => store.markAllSeen()),
      remove: (id: number) => attempt(() => store.remove(id)),
    }),
    [state, store, filter],
  );
}
