/** The user's notification preferences as React state: loaded on mount, changed optimistically. */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { toHeraldError, type HeraldError } from '../errors';
import type { PreferenceChange, PreferenceValue, Preferences } from '../protocol';
import { useHeraldClient } from './context';

/** One notification type as a settings page shows it. */
export interface PreferenceRow {
  type: string;
  /** What applies: the user's setting, else the configured default, else `on`. */
  setting: PreferenceValue;
  /** `user`: the user set it; `default`: the configured default applies. */
  source: 'user' | 'default';
}

export interface UsePreferencesResult {
  /** The preferences with the changes not answered yet applied; null until the first answer. */
  preferences: Preferences | null;
  /** Every type `known`, set by the user or given a default, sorted, with what applies to it. */
  types: PreferenceRow[];
  /** A load (on mount, `refresh`) is under way. */
  loading: boolean;
  /** The last failed load, cleared by the next answer. `set` does not put its failures here: it returns them. */
  error: HeraldError | null;
  refresh: () => Promise<void>;
  /**
   * Shows the change at once and sends it (`PATCH`); resolves to null when it was stored, or to the error after
   * putting the type back. Never throws. Changes are sent one at a time, in order, so none undoes another. A
   * type turned to its default (`on`, or what `defaults` says) is sent as `default`: the user's setting is
   * forgotten rather than pinned.
   */
  set: (type: string, setting: PreferenceChange) => Promise<HeraldError | null>;
}

/** What applies to `type` in `p`. */
export function preferenceRow(p: Preferences, type: string): PreferenceRow {
  const own = p.types[type];
  return { type, setting: own ?? p.defaults?.[type] ?? 'on', source: own ? 'user' : 'default' };
}

function rows(p: Preferences | null): PreferenceRow[] {
  if (!p) return [];
  const all = new Set([...(p.known ?? []), ...Object.keys(p.types), ...Object.keys(p.defaults ?? {})]);
  return [...all].sort().map((t) => preferenceRow(p, t));
}

interface Pending {
  id: number;
  type: string;
  change: PreferenceChange;
}

interface State {
  /** The last answer. */
  server: Preferences | null;
  /** Changes sent or waiting to be sent, oldest first: shown over `server` until answered. */
  pending: Pending[];
  loading: boolean;
  error: HeraldError | null;
}

const initial: State = { server: null, pending: [], loading: true, error: null };

function applyPending(server: Preferences | null, pending: Pending[]): Preferences | null {
  if (!server || pending.length === 0) return server;
  const types = { ...server.types };
  for (const { type, change } of pending) {
    if (change === 'default') delete types[type];
    else types[type] = change;
  }
  return { ...server, types };
}

/** Runs jobs one after another (a job never rejects). */
function serial(): <T>(job: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return (job) => {
    const run = tail.then(job);
    tail = run;
    return run;
  };
}

/**
 * The provider's user's notification preferences (`getPreferences()` on mount), with `set` to change one type
 * (`patchPreferences`). Follows a new client (another user) at once: nothing of the old one is shown, and its
 * late answers are dropped.
 */
export function usePreferences(): UsePreferencesResult {
  const client = useHeraldClient();
  const [state, setState] = useState(initial);
  const [owner, setOwner] = useState(client);
  if (owner !== client) {
    setOwner(client);
    setState(initial);
  }
  const current = useRef(client);
  current.current = client;
  // Per client: its requests, one at a time (so each answer includes every change sent before it), and the
  // defaults of its last answer (null before one).
  const queue = useMemo(() => ({ run: serial(), defaults: null as Preferences['defaults'] | null }), [client]);
  const nextId = useRef(0);
  const update = useCallback(
    (fn: (s: State) => State) => {
      if (current.current === client) setState(fn);
    },
    [client],
  );
  const answered = useCallback(
    (server: Preferences, fn: (s: State) => Pending[] = (s) => s.pending) => {
      queue.defaults = server.defaults ?? {};
      update((s) => ({ ...s, server, pending: fn(s), loading: false, error: null }));
    },
    [queue, update],
  );

  const refresh = useCallback(
    () =>
      queue.run(async () => {
        update((s) => ({ ...s, loading: true }));
        try {
          answered(await client.getPreferences());
        } catch (e) {
          update((s) => ({ ...s, loading: false, error: toHeraldError(e, 'request_failed') }));
        }
      }),
    [client, queue, update, answered],
  );

  useEffect(() => {
    void refresh();
  }, [refresh]);

  const set = useCallback(
    (type: string, setting: PreferenceChange): Promise<HeraldError | null> => {
      // Back to its default: forget the user's setting instead of pinning it (decided again when sent, in case
      // the defaults were not known yet).
      const toChange = (): PreferenceChange =>
        queue.defaults && setting === (queue.defaults[type] ?? 'on') ? 'default' : setting;
      const id = ++nextId.current;
      update((s) => ({ ...s, pending: [...s.pending, { id, type, change: toChange() }] }));
      const done = (s: State) => s.pending.filter((p) => p.id !== id);
      return queue.run(async () => {
        try {
          answered(await client.patchPreferences({ [type]: toChange() }), done);
          return null;
        } catch (e) {
          update((s) => ({ ...s, pending: done(s) }));
          return toHeraldError(e, 'request_failed');
        }
      });
    },
    [client, queue, update, answered],
  );

  const preferences = useMemo(() => applyPending(state.server, state.pending), [state.server, state.pending]);
  const types = useMemo(() => rows(preferences), [preferences]);
  const { loading, error } = state;
  return useMemo(
    () => ({ preferences, types, loading, error, refresh, set }),
    [preferences, types, loading, error, refresh, set],
  );
}
