/** Inbox hooks: REST for history, live frames for everything after. */
import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import type { HeraldClient } from '../client';
import { toHeraldError, type HeraldError } from '../errors';
import type { Notification } from '../protocol';
import { State } from '../types';
import { useHeraldClient } from './context';
import { MAX_STALE_PAGES } from '../store';
import { inboxReducer, initialInboxState, type InboxAction } from './inbox-state';

/**
 * Call `refetch` when what was fetched over REST may be out of date: on `connected` (the first connect: what
 * was committed between the fetch on mount and `ready` is neither in the page nor pushed live) and on `stale`
 * (a reconnect, a resync, truncated history). A reconnect emits both in the same tick: they are coalesced
 * into one call, told whether a `stale` event was among them. Returns the unsubscribe.
 */
export function onRefetchNeeded(client: HeraldClient<any>, refetch: (stale: boolean) => void): () => void {
  let queued = false;
  let stale = false;
  let active = true;
  const request = (isStale: boolean) => {
    stale ||= isStale;
    if (queued) return;
    queued = true;
    void Promise.resolve().then(() => {
      queued = false;
      const wasStale = stale;
      stale = false;
      if (active) refetch(wasStale);
    });
  };
  const offs = [
    client.on('stale', () => request(true)),
    client.on('state', ({ newState }) => newState === State.Connected && request(false)),
  ];
  return () => {
    active = false;
    offs.forEach((off) => off());
  };
}

export interface UseNotificationsOptions {
  /** Page size (1..=100). */
  limit?: number;
  /** List unread notifications only. */
  unread?: boolean;
}

export interface UseNotificationsResult {
  /** Newest first, one per id: REST pages merged with live notifications. */
  items: Notification[];
  hasMore: boolean;
  loading: boolean;
  /** The last failed request, cleared by the next successful page. */
  error: HeraldError | null;
  fetchMore: () => Promise<void>;
  markRead: (id: number) => Promise<void>;
  markAllRead: () => Promise<void>;
  remove: (id: number) => Promise<void>;
}

/**
 * The inbox, kept current: the first page on mount and again on every (re)connect and `stale` event (which also
 * picks up reads and deletions the socket did not carry; on `stale` the pages loaded below it are dropped, and
 * load again with `fetchMore`), live notifications, and `read`/`unread`/`read_all`/
 * `archived`/`unarchived`/`deleted` frames (an unarchived notification, or one unread again in an unread-only
 * list, by fetching the first page again).
 * Actions never throw: a failure lands in `error`.
 */
export function useNotifications(opts: UseNotificationsOptions = {}): UseNotificationsResult {
  const client = useHeraldClient();
  const { limit, unread = false } = opts;
  const [state, dispatch] = useReducer(inboxReducer, unread, initialInboxState);
  // A new client (the provider switched user): nothing of the old one is shown, not even for one render.
  const [owner, setOwner] = useState(client);
  if (owner !== client) {
    setOwner(client);
    dispatch({ type: 'reset' });
  }
  const current = useRef(client);
  current.current = client;
  /** Bumped by a `purged` frame: a page asked for before it shows what was erased, and is dropped. */
  const purges = useRef(0);
  /** One set per page request out: the ids pushed live meanwhile (the page may predate them). */
  const arrivals = useRef(new Set<Set<number>>());
  /**
   * Bumped by every change of a listed row this hook applies (a frame, or its own action's answer): a page asked
   * for before it may show the row as it was, and is fetched again rather than laid over the change.
   */
  const changes = useRef(0);
  /**
   * Bumped when the list is cut to a first page (a refetch after `stale`, a purge): an older page asked for before
   * then would land below a cut list and leave a gap its cursor skips, so it is dropped.
   */
  const generation = useRef(0);

  const load = useCallback(
    async (before?: number, truncate = false) => {
      const purge = purges.current;
      const gen = generation.current;
      const mine = () =>
        current.current === client && purges.current === purge && (before === undefined || generation.current === gen);
      dispatch({ type: 'loading' });
      const arrived = new Set<number>();
      arrivals.current.add(arrived);
      try {
        for (let stale = 0; ; stale++) {
          const seen = changes.current;
          const page = await client.list({ limit, before, unread: unread || undefined });
          if (!mine()) return;
          if (changes.current !== seen && stale < MAX_STALE_PAGES) continue;
          if (before === undefined && truncate) generation.current++;
          dispatch({ type: 'page', page, first: before === undefined, truncate, arrived });
          return;
        }
      } catch (e) {
        if (mine()) dispatch({ type: 'error', error: toHeraldError(e, 'request_failed') });
      } finally {
        arrivals.current.delete(arrived);
      }
    },
    [client, limit, unread],
  );

  /** Apply a change of listed rows, and say so to the pages out. */
  const changed = useCallback((action: InboxAction) => {
    changes.current++;
    dispatch(action);
  }, []);

  useEffect(() => {
    void load();
    const offs = [
      client.on('notification', ({ notification }) => {
        for (const arrived of arrivals.current) arrived.add(notification.id);
        dispatch({ type: 'upsert', items: [notification] });
      }),
      client.on('read', ({ ids, readAt }) => changed({ type: 'read', ids, readAt })),
      client.on('read_all', ({ upTo, readAt }) => changed({ type: 'read_all', upTo, readAt })),
      client.on('deleted', ({ ids }) => changed({ type: 'remove', ids })),
      // Archived ones are not listed here; one unarchived (or unread again, for an unread-only list) is not
      // held, so the first page is fetched again to show it.
      client.on('archived', ({ ids }) => changed({ type: 'remove', ids })),
      client.on('unread', ({ ids }) => {
        changes.current++;
        if (unread) void load();
        else dispatch({ type: 'unread', ids });
      }),
      client.on('unarchived', () => {
        changes.current++;
        void load();
      }),
      // Erased on the server: forget everything shown; the first page, fetched again, is the whole truth (an
      // empty one, an empty list; broadcasts are listed again, unread).
      client.on('purged', () => {
        purges.current++;
        generation.current++;
        dispatch({ type: 'reset' });
        void load(undefined, true);
      }),
      // After `stale`, what was loaded below the first page may be out of date too: it is dropped (it loads
      // again with fetchMore).
      onRefetchNeeded(client, (stale) => void load(undefined, stale)),
    ];
    return () => offs.forEach((off) => off());
  }, [client, load, changed]);

  const attempt = useCallback(async (action: () => Promise<void>) => {
    const mine = current.current;
    try {
      await action();
    } catch (e) {
      if (current.current === mine) dispatch({ type: 'error', error: toHeraldError(e, 'request_failed') });
    }
  }, []);

  const { hasMore, loading, nextBefore } = state;
  const fetchMore = useCallback(async () => {
    if (hasMore && !loading && nextBefore !== null) await load(nextBefore);
  }, [hasMore, loading, nextBefore, load]);
  const markRead = useCallback(
    (id: number) =>
      attempt(async () => {
        const n = await client.markRead(id);
        if (current.current === client) changed({ type: 'upsert', items: [n] });
      }),
    [attempt, client, changed],
  );
  const markAllRead = useCallback(
    () =>
      attempt(async () => {
        const { up_to, read_at } = await client.markAllRead();
        if (current.current === client) changed({ type: 'read_all', upTo: up_to, readAt: read_at });
      }),
    [attempt, client, changed],
  );
  const remove = useCallback(
    (id: number) =>
      attempt(async () => {
        await client.delete(id);
        if (current.current === client) changed({ type: 'remove', ids: [id] });
      }),
    [attempt, client, changed],
  );

  return { items: state.items, hasMore, loading, error: state.error, fetchMore, markRead, markAllRead, remove };
}

export interface UseUnreadCountResult {
  count: number;
  loading: boolean;
  error: HeraldError | null;
  refresh: () => Promise<void>;
}

/**
 * The unread count: fetched on mount, on every (re)connect and `stale` event, and after every live frame (at
 * most one request in flight); a live notification bumps it at once, the next answer corrects it.
 */
export function useUnreadCount(): UseUnreadCountResult {
  const client = useHeraldClient();
  const [count, setCount] = useState(0);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<HeraldError | null>(null);
  const busy = useRef<Promise<void> | null>(null);
  const again = useRef(false);
  // A new client (the provider switched user): the old count is not shown, and its answers are dropped.
  const [owner, setOwner] = useState(client);
  if (owner !== client) {
    setOwner(client);
    setCount(0);
    setLoading(true);
    setError(null);
  }
  const current = useRef(client);
  current.current = client;

  const refresh = useCallback((): Promise<void> => {
    if (busy.current) {
      again.current = true;
      return busy.current;
    }
    const run = async () => {
      do {
        again.current = false;
        try {
          const n = await client.unreadCount();
          if (current.current !== client) break;
          setCount(n);
          setError(null);
        } catch (e) {
          if (current.current !== client) break;
          setError(toHeraldError(e, 'request_failed'));
        }
      } while (again.current);
      busy.current = null;
      if (current.current === client) setLoading(false);
      else void refreshRef.current?.(); // a request for the new client may have waited on this one
    };
    busy.current = run();
    return busy.current;
  }, [client]);
  const refreshRef = useRef<typeof refresh | null>(null);
  refreshRef.current = refresh;

  useEffect(() => {
    void refresh();
    const onChange = () => void refresh();
    const offs = [
      client.on('notification', ({ notification }) => {
        if (notification.read_at === null) setCount((c) => c + 1);
        onChange();
      }),
      client.on('read', onChange),
      client.on('unread', onChange),
      client.on('read_all', onChange),
      client.on('archived', onChange),
      client.on('unarchived', onChange),
      client.on('deleted', onChange),
      client.on('purged', onChange),
      onRefetchNeeded(client, onChange),
    ];
    return () => offs.forEach((off) => off());
  }, [client, refresh]);

  return { count, loading, error, refresh };
}
