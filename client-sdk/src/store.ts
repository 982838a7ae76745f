/**
 * The inbox store: ONE per client (see {@link getInboxStore}), shared by every hook and component that shows the
 * inbox, so several of them mounted at once cost one request per distinct list, not one each.
 *
 * Invariants:
 * - Counts come from the server's `counts` frames (sent after `ready`, after each `replayed`, and whenever they
 *   change): no REST request follows a live frame. REST `counts()` is asked only when no frame can bring them
 *   (the client is disconnected, or the store was created after the frame went by). After a `resync` the counts
 *   come in the `counts` frame that follows the replay (`replayed`), as after every reconnect.
 * - One list per distinct filter (tab + type + related object + page size), fetched once however many
 *   subscribers it has. A list nobody shows is kept (and patched) for when it is shown again, but only the
 *   {@link MAX_IDLE_LISTS} most recently shown of them: older ones are dropped. Its pages are fetched again on the first `connected` (what was committed between the
 *   fetch and `ready` was neither in the page nor pushed live) and on every `stale` event (reconnect, resync,
 *   truncated history): once per event, for the lists someone shows; the others are refetched when shown again.
 *   A refetch goes down to the oldest item the list had loaded (at most {@link MAX_REFETCH_PAGES} requests;
 *   what lies below is dropped and loads again with `fetchMore`), so no row shown keeps a state from before.
 * - Live frames (`notification`, `read`, `unread`, `read_all`, `seen_all`, `archived`, `unarchived`, `deleted`)
 *   and the answers of the store's own actions patch every list: a notification that stops matching a list's
 *   filter leaves it; one that starts matching joins it when its id falls within what the list has loaded. An
 *   `unread` or `unarchived` frame naming one no list holds (it had left them all) fetches it by id to place it.
 *   A live notification also joins a list whose first page is on its way (the page may not have it).
 * - A first page answered after a change (a frame but `notification`, or an action's answer) is not applied: it
 *   may predate the change, so it is fetched again (at most {@link MAX_STALE_PAGES} times in a row).
 * - A REST value of the counts (`refreshCounts()`, `markAllSeen()`'s unseen 0) is applied only if no `counts`
 *   frame arrived while the request was out: the frame is as new, or newer.
 * - Before the first `connected`, lists and counts wait for it, unless the socket cannot open (a `transport` or
 *   `token` error, state `unauthorized`): then they are fetched over REST, and fail visibly if need be.
 * - Snapshots (`getCounts()`, `getList()`) are immutable and replaced on change (React's useSyncExternalStore).
 */
import type { HeraldClient } from './client';
import { toHeraldError, type HeraldError } from './errors';
import { MAX_BATCH, type BatchAction, type InboxPage, type Notification } from './protocol';
import { State } from './types';

/** The three tabs of an inbox. */
export type InboxTab = 'all' | 'unread' | 'archived';

/** What a list shows: the query parameters of `GET …/notifications` (but `before`). */
export interface InboxFilter {
  /** Unread notifications only. */
  unread?: boolean;
  /** Archived notifications only (otherwise they are left out). */
  archived?: boolean;
  type?: string;
  related_type?: string;
  related_id?: string;
  /** Page size (1..=100, server default 20). */
  limit?: number;
}

/** Whether `f` narrows the inbox by type or related object (not only by tab). */
export function isNarrowed(f: InboxFilter): boolean {
  return f.type !== undefined || f.related_type !== undefined || f.related_id !== undefined;
}

/** The filter of a tab, narrowed by `extra`. */
export function tabFilter(tab: InboxTab, extra: Omit<InboxFilter, 'unread' | 'archived'> = {}): InboxFilter {
  return { ...extra, unread: tab === 'unread' || undefined, archived: tab === 'archived' || undefined };
}

export interface ListState {
  /** Newest first, one per id. */
  items: readonly Notification[];
  hasMore: boolean;
  /** Cursor of the next older page. */
  nextBefore: number | null;
  loading: boolean;
  /** A page has arrived at least once. */
  loaded: boolean;
  /** The last failed request, cleared by the next page. */
  error: HeraldError | null;
}

export interface CountsState {
  unread: number;
  unseen: number;
  /** Counts arrived (a frame or a REST answer) at least once. */
  loaded: boolean;
  error: HeraldError | null;
}

interface Entry {
  /** Its key in the store's map. */
  key: string;
  filter: InboxFilter;
  state: ListState;
  subscribers: number;
  listeners: Set<() => void>;
  /** Bumped by each first-page fetch: an older answer is dropped. */
  epoch: number;
  /** A first-page fetch is under way. */
  inflight: boolean;
  /** Something asked for a fresh first page while one was in flight (its answer may predate the change). */
  again: boolean;
  /** Needs its first page fetched again when next shown. */
  dirty: boolean;
}

const INITIAL_LIST: ListState = {
  items: [],
  hasMore: false,
  nextBefore: null,
  loading: true,
  loaded: false,
  error: null,
};

function keyOf(f: InboxFilter): string {
  return JSON.stringify([
    !!f.unread,
    !!f.archived,
    f.type ?? null,
    f.related_type ?? null,
    f.related_id ?? null,
    f.limit ?? null,
  ]);
}

/** Would `GET …/notifications` with filter `f` list `n`? */
export function matchesFilter(f: InboxFilter, n: Notification): boolean {
  if (f.archived ? n.archived_at == null : n.archived_at != null) return false;
  // The unread list is what the unread count counts: muted notifications are in neither.
  if (f.unread && (n.read_at !== null || n.muted)) return false;
  if (f.type !== undefined && n.type !== f.type) return false;
  if (f.related_type !== undefined && n.related_object?.type !== f.related_type) return false;
  if (f.related_id !== undefined && n.related_object?.id !== f.related_id) return false;
  return true;
}

function byIdDesc(a: Notification, b: Notification): number {
  return b.id - a.id;
}

/** Lists nobody shows that are kept (patched by live frames) for when they are shown again; older ones are dropped. */
export const MAX_IDLE_LISTS = 8;
/** A first page answered after a change is fetched again, at most this many times in a row (then applied). */
export const MAX_STALE_PAGES = 3;
/** Most ids of one frame fetched one by one; beyond, the lists' first pages are fetched again. */
const MAX_FETCHED_BY_ID = 5;
/** Most requests of one refetch of a list (its first page, then pages of {@link MAX_PAGE} down to its oldest). */
export const MAX_REFETCH_PAGES = 6;
/** The server's largest page. */
const MAX_PAGE = 100;

const stores = new WeakMap<HeraldClient<any>, InboxStore>();

/** The inbox store of `client`, created on first use (one per client). */
export function getInboxStore(client: HeraldClient<any>): InboxStore {
  let store = stores.get(client);
  if (!store) {
    store = new InboxStore(client);
    stores.set(client, store);
  }
  return store;
}

export class InboxStore {
  private readonly _lists = new Map<string, Entry>();
  private _counts: CountsState = { unread: 0, unseen: 0, loaded: false, error: null };
  private readonly _countListeners = new Set<() => void>();
  private _countsInflight: Promise<void> | null = null;
  /** `counts` frames so far: a REST value asked before the last one is older. */
  private _countsFrames = 0;
  /** A `connected` state was seen: lists fetched while connecting wait for it, fetched after do not. */
  private _everConnected: boolean;
  /** The first connect failed (`transport` or `token` error, `unauthorized`): nothing waits for `connected`. */
  private _connectFailed = false;
  private _refetchQueued = false;
  /**
   * Changes of notifications so far (frames but `notification`, and the answers of the store's own actions): a
   * fetch answered after another change may be out of date.
   */
  private _changes = 0;
  /**
   * While actions are in flight: the last frame (its `_changes`) naming each id, and the last one naming them all
   * (`read_all`, `seen_all`, `purged`). An action's answer older than such a frame is not placed: the server sends
   * frames in commit order, so the frame is newer (another tab's change committed after this one).
   */
  private _framed = new Map<number, number>();
  private _framedAll = 0;
  private _acting = 0;

  /** Use {@link getInboxStore}: a second store for the same client would fetch everything twice. */
  constructor(readonly client: HeraldClient<any>) {
    this._everConnected = client.state === State.Connected;
    client.on('counts', ({ unread, unseen }) => {
      this._countsFrames++;
      this._setCounts({ unread, unseen, loaded: true, error: null });
    });
    for (const frame of [
      'read',
      'unread',
      'read_all',
      'seen_all',
      'archived',
      'unarchived',
      'deleted',
      'purged',
    ] as const)
      client.on(frame, () => this._changes++);
    for (const frame of ['read', 'unread', 'archived', 'unarchived', 'deleted'] as const)
      client.on(frame, ({ ids }) => {
        if (this._acting > 0) for (const id of ids) this._framed.set(id, this._changes);
      });
    for (const frame of ['read_all', 'seen_all', 'purged'] as const)
      client.on(frame, () => {
        if (this._acting > 0) this._framedAll = this._changes;
      });
    client.on('notification', ({ notification }) => this._place([notification], true));
    client.on('read', ({ ids, readAt }) =>
      this._patch(
        (n) => ids.includes(n.id) && n.read_at === null,
        (n) => ({ ...n, read_at: readAt, seen_at: n.seen_at ?? readAt }),
      ),
    );
    client.on('unread', ({ ids }) => {
      this._patch(
        (n) => ids.includes(n.id),
        (n) => ({ ...n, read_at: null }),
      );
      this._fetchUnknown(ids, true);
    });
    client.on('read_all', ({ upTo, readAt }) => this._readAll(upTo, readAt));
    client.on('seen_all', ({ upTo, seenAt }) => this._seenAll(upTo, seenAt));
    client.on('archived', ({ ids }) => {
      const at = new Date().toISOString(); // the frame carries no time; the REST answer has the exact one
      this._patch(
        (n) => ids.includes(n.id) && n.archived_at == null,
        (n) => ({ ...n, archived_at: at }),
      );
    });
    client.on('unarchived', ({ ids }) => {
      this._patch(
        (n) => ids.includes(n.id),
        (n) => ({ ...n, archived_at: null }),
      );
      this._fetchUnknown(ids, false);
    });
    client.on('deleted', ({ ids }) => this._removeIds(ids));
    client.on('purged', () => this._refetchAll());
    // The lists, once per event; the counts come in the `counts` frame that follows each `replayed`.
    client.on('stale', () => this._refetchAll());
    client.on('state', ({ newState }) => {
      // Refused (a handshake, or getToken() failing for good): no `connected` will come.
      if (newState === State.Unauthorized) return this._connectFailedNow();
      if (newState !== State.Connected) return;
      const first = !this._everConnected;
      this._everConnected = true;
      // The first `ready`: fetch (again) what was fetched, or put off, before it. Later ones come with `stale`.
      if (first) this._refetchAll();
    });
    // The socket cannot open (a server down, no token): fetch over REST what waited for it, and fail visibly if
    // need be.
    client.on('error', ({ kind }) => {
      if ((kind === 'transport' || kind === 'token') && !this._everConnected) this._connectFailedNow();
    });
  }

  /** Whether a first fetch should wait for the first `connected` (which fetches it). */
  private _waitForConnect(): boolean {
    return this.client.state === State.Connecting && !this._everConnected && !this._connectFailed;
  }

  /** The first connect failed: fetch over REST the lists and counts that waited for it. */
  private _connectFailedNow(): void {
    this._connectFailed = true;
    for (const e of this._lists.values())
      if (e.subscribers > 0 && !e.state.loaded && !e.inflight) void this._loadFirst(e);
    if (this._countListeners.size > 0 && !this._counts.loaded) void this.refreshCounts();
  }

  // --- counts ---

  getCounts = (): CountsState => this._counts;

  subscribeCounts = (listener: () => void): (() => void) => {
    this._countListeners.add(listener);
    // No frame will bring them: a client that is not connecting, or a store created after the frame went by.
    // Decided a tick later: a provider connects its client in an effect that runs after its children's.
    // An unauthorized client is asked too: the request fails, and the error shows.
    queueMicrotask(() => {
      if (!this._counts.loaded && this._countListeners.size > 0 && !this._waitForConnect()) void this.refreshCounts();
    });
    return () => this._countListeners.delete(listener);
  };

  /**
   * Fetch the counts over REST (one request at a time). The answer is dropped if a `counts` frame arrived
   * meanwhile (it is as new, or newer).
   */
  refreshCounts(): Promise<void> {
    if (this._countsInflight) return this._countsInflight;
    const run = async () => {
      const frames = this._countsFrames;
      try {
        const c = await this.client.counts();
        if (this._countsFrames === frames)
          this._setCounts({ unread: c.unread, unseen: c.unseen, loaded: true, error: null });
      } catch (e) {
        this._setCounts({ ...this._counts, error: toHeraldError(e, 'request_failed') });
      } finally {
        this._countsInflight = null;
      }
    };
    this._countsInflight = run();
    return this._countsInflight;
  }

  private _setCounts(next: CountsState): void {
    const c = this._counts;
    if (c.unread === next.unread && c.unseen === next.unseen && c.loaded === next.loaded && c.error === next.error)
      return;
    this._counts = next;
    for (const l of [...this._countListeners]) l();
  }

  // --- lists ---

  /** The list for `filter` (the same object until it changes). */
  getList(filter: InboxFilter): ListState {
    return this._entry(filter).state;
  }

  /** Follow the list for `filter`; the first subscriber fetches its first page. Returns the unsubscribe. */
  subscribeList(filter: InboxFilter, listener: () => void): () => void {
    const e = this._entry(filter);
    e.listeners.add(listener);
    e.subscribers++;
    if (e.subscribers === 1 && (e.dirty || (!e.state.loaded && !e.inflight))) {
      e.dirty = true;
      // Decided a tick later (a provider connects its client in an effect that runs after its children's):
      // while the first connect is under way, its `connected` fetches the list, so not twice.
      queueMicrotask(() => {
        if (!e.dirty || e.subscribers === 0) return;
        if (this._waitForConnect() && !e.state.loaded) return;
        void this._loadFirst(e);
      });
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      e.listeners.delete(listener);
      if (--e.subscribers > 0) return;
      // Idle: kept for when it is shown again, the most recently shown last; the oldest idle ones are dropped.
      if (this._lists.get(e.key) === e) {
        this._lists.delete(e.key);
        this._lists.set(e.key, e);
        this._trim();
      }
    };
  }

  /** Fetch the next older page of the list for `filter` (no-op when there is none or a fetch is under way). */
  async fetchMore(filter: InboxFilter): Promise<void> {
    const e = this._entry(filter);
    const { hasMore, loading, nextBefore } = e.state;
    if (!hasMore || loading || nextBefore === null) return;
    const epoch = e.epoch;
    this._setList(e, { ...e.state, loading: true });
    try {
      const page = await this.client.list({ ...e.filter, before: nextBefore });
      if (epoch !== e.epoch) return; // a fresh first page replaced what this page continued
      this._setList(e, this._applyPage(e, page, null));
    } catch (err) {
      if (epoch === e.epoch)
        this._setList(e, { ...e.state, loading: false, error: toHeraldError(err, 'request_failed') });
    }
  }

  /**
   * Fetch everything again: the first page of every shown list (the others when next shown) and the counts. For
   * a change no frame announces to this client.
   */
  refreshAll(): Promise<void> {
    this._refetchAll();
    return this.refreshCounts();
  }

  /** Fetch the list for `filter` again: its first page, and below it down to what it had loaded. */
  refresh(filter: InboxFilter): Promise<void> {
    return this._loadFirst(this._entry(filter));
  }

  // --- actions: REST, then the answer patches every list (the server's frames tell the other tabs) ---

  async markRead(id: number): Promise<void> {
    await this._act(async () => [await this.client.markRead(id)]);
  }
  async markUnread(id: number): Promise<void> {
    await this._act(async () => [await this.client.markUnread(id)]);
  }
  async archive(id: number): Promise<void> {
    await this._act(async () => [await this.client.archive(id)]);
  }
  async unarchive(id: number): Promise<void> {
    await this._act(async () => [await this.client.unarchive(id)]);
  }

  /** Run an action and place what it answers, except where a frame that arrived meanwhile is newer. */
  private async _act(request: () => Promise<Notification[]>): Promise<void> {
    const since = this._changes;
    this._acting++;
    try {
      const answered = await request();
      this._changes++;
      const newer = (n: Notification) => this._framedAll > since || (this._framed.get(n.id) ?? -1) > since;
      this._place(answered.filter((n) => !newer(n)));
    } finally {
      if (--this._acting === 0) {
        this._framed.clear();
        this._framedAll = 0;
      }
    }
  }
  /**
   * Mark everything read (`read_all`). With a `filter` narrowed by type or related object (see
   * {@link isNarrowed}), only what it matches that the store knows (the unread items of the lists loaded here)
   * is marked read, with `batch` requests of up to {@link MAX_BATCH}: the server's `read_all` takes no filter,
   * and would mark every other type read too. Rejects with the first failure, after trying every batch.
   */
  async markAllRead(filter?: InboxFilter): Promise<void> {
    if (!filter || !isNarrowed(filter)) {
      const { up_to, read_at } = await this.client.markAllRead();
      this._changes++;
      this._readAll(up_to, read_at);
      return;
    }
    const scope: InboxFilter = { type: filter.type, related_type: filter.related_type, related_id: filter.related_id };
    const ids = [...this._known().values()]
      .filter((n) => n.read_at === null && matchesFilter(scope, { ...n, archived_at: null }))
      .map((n) => n.id);
    await this.batch('read', ids);
  }
  /**
   * One action on the notifications `ids` names (any number: sent in requests of up to {@link MAX_BATCH}, one
   * after another), the lists updated from the answers. Rejects with the first failure, after trying them all.
   */
  async batch(action: BatchAction, ids: number[]): Promise<void> {
    let failure: unknown = null;
    for (let at = 0; at < ids.length; at += MAX_BATCH) {
      try {
        const part = ids.slice(at, at + MAX_BATCH);
        if (action === 'delete') this._removed((await this.client.batch(action, part)).ids);
        else await this._act(async () => (await this.client.batch(action, part)).items);
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure !== null) throw failure;
  }
  /**
   * The bell was opened: everything is seen (the unseen count is 0 until something new arrives; a `counts` frame
   * that arrived while the request was out is newer, and stands).
   */
  async markAllSeen(): Promise<void> {
    const frames = this._countsFrames;
    const { up_to, seen_at } = await this.client.markAllSeen();
    this._changes++;
    this._seenAll(up_to, seen_at);
    if (this._countsFrames === frames) this._setCounts({ ...this._counts, unseen: 0 });
  }
  async remove(id: number): Promise<void> {
    await this.client.delete(id);
    this._removed([id]);
  }

  // --- internals ---

  private _entry(filter: InboxFilter): Entry {
    const key = keyOf(filter);
    let e = this._lists.get(key);
    if (!e) {
      e = {
        key,
        filter: { ...filter },
        state: INITIAL_LIST,
        subscribers: 0,
        listeners: new Set(),
        epoch: 0,
        inflight: false,
        again: false,
        dirty: false,
      };
      this._lists.set(key, e);
      this._trim();
    }
    return e;
  }

  /** Drop the least recently shown lists nobody shows beyond {@link MAX_IDLE_LISTS}. */
  private _trim(): void {
    let idle = 0;
    for (const e of this._lists.values()) if (e.subscribers === 0) idle++;
    for (const [key, e] of this._lists) {
      if (idle <= MAX_IDLE_LISTS) break;
      if (e.subscribers > 0) continue;
      this._lists.delete(key);
      idle--;
    }
  }

  private _setList(e: Entry, state: ListState): void {
    if (state === e.state) return;
    e.state = state;
    for (const l of [...e.listeners]) l();
  }

  private async _loadFirst(e: Entry): Promise<void> {
    e.dirty = false;
    if (e.inflight) {
      e.again = true;
      return;
    }
    e.inflight = true;
    let stale = 0;
    try {
      do {
        e.again = false;
        const epoch = ++e.epoch;
        const changes = this._changes;
        // What arrives while the request is out (live: not listed now) is not in the page but still there. Ids
        // are not compared: a targeted notification can arrive after a broadcast with a greater id.
        const items = e.state.items;
        const known = new Set(items.map((n) => n.id));
        // The oldest item shown: the fresh pages go down to it, so no row keeps a state from before.
        const floor = e.state.loaded && items.length > 0 ? items[items.length - 1]!.id : null;
        if (!e.state.loading) this._setList(e, { ...e.state, loading: true });
        try {
          const page = await this._pagesDownTo(e.filter, floor);
          if (epoch !== e.epoch) continue;
          // A change came while the page was on its way: the page may predate it (a notification read meanwhile
          // shown unread again). Fetch it again rather than show it, unless changes keep coming.
          if (this._changes !== changes && ++stale <= MAX_STALE_PAGES) {
            e.again = true;
            continue;
          }
          this._setList(e, this._applyPage(e, page, known));
        } catch (err) {
          if (epoch === e.epoch)
            this._setList(e, { ...e.state, loading: false, error: toHeraldError(err, 'request_failed') });
        }
      } while (e.again);
    } finally {
      e.inflight = false;
    }
  }

  /**
   * The first page of `filter`, then older pages (of the largest size) until one reaches `floor` (an id), at
   * most {@link MAX_REFETCH_PAGES} requests in all, merged into one page whose cursor is the last one's.
   */
  private async _pagesDownTo(filter: InboxFilter, floor: number | null): Promise<InboxPage> {
    let page = await this.client.list(filter);
    const items = [...page.items];
    for (
      let n = 1;
      n < MAX_REFETCH_PAGES && floor !== null && page.has_more && page.next_before !== null && page.next_before > floor;
      n++
    ) {
      page = await this.client.list({ ...filter, before: page.next_before, limit: MAX_PAGE });
      items.push(...page.items);
    }
    return { items, has_more: page.has_more, next_before: page.next_before };
  }

  /** Refetch the pages of every shown list once (coalesced within a tick); mark the others. */
  private _refetchAll(): void {
    if (this._refetchQueued) return;
    this._refetchQueued = true;
    void Promise.resolve().then(() => {
      this._refetchQueued = false;
      for (const e of this._lists.values()) {
        if (e.subscribers > 0) void this._loadFirst(e);
        else e.dirty = true;
      }
    });
  }

  /**
   * Merge a page. `known` (a first page only, or the pages from the first down: see `_pagesDownTo`; null for an
   * older page): the ids the list had when the request went out. A first page is the whole list: what it
   * lacks left the list, unless it arrived live while the request was out (not in `known`); what lies below its
   * oldest item is dropped (its cursor says where `fetchMore` goes on).
   */
  private _applyPage(e: Entry, page: InboxPage, known: ReadonlySet<number> | null): ListState {
    const s = e.state;
    const first = known !== null;
    let items = s.items;
    if (first) {
      const ids = new Set(page.items.map((n) => n.id));
      items = items.filter((n) => ids.has(n.id) || !known.has(n.id));
    }
    const byId = new Map(items.map((n) => [n.id, n]));
    for (const n of page.items) byId.set(n.id, n);
    return {
      items: [...byId.values()].sort(byIdDesc),
      loading: false,
      loaded: true,
      error: null,
      hasMore: page.has_more,
      nextBefore: page.next_before,
    };
  }

  /** The newest copy of each notification the store knows, by id. */
  private _known(): Map<number, Notification> {
    const known = new Map<number, Notification>();
    for (const e of this._lists.values()) for (const n of e.state.items) if (!known.has(n.id)) known.set(n.id, n);
    return known;
  }

  /**
   * Fetch the notifications an `unread` or `unarchived` frame names that no list holds (they left every list
   * shown: read in an unread-only list, archived), when a loaded list could show them, and place them. `unread`:
   * the frame said it is unread now. One request per id, `GET …/notifications?before={id+1}&limit=1` with the
   * filter it now matches; more than a few ids, or a change since the request went out: the first pages again.
   */
  private _fetchUnknown(ids: number[], unread: boolean): void {
    const known = this._known();
    const missing = ids.filter((id) => !known.has(id) && this._couldShow(id));
    if (missing.length === 0) return;
    if (missing.length > MAX_FETCHED_BY_ID) return this._refetchAll();
    const changes = this._changes;
    for (const id of missing) {
      this.client.list({ before: id + 1, limit: 1, unread: unread || undefined }).then(
        (page) => {
          const n = page.items[0];
          if (this._changes !== changes) this._refetchAll();
          else if (n?.id === id) this._place([n]);
        },
        () => this._refetchAll(),
      );
    }
  }

  /** Whether a list loaded here spans `id` (a list with more pages: above its oldest item). */
  private _couldShow(id: number): boolean {
    for (const e of this._lists.values()) {
      const s = e.state;
      if (s.loaded && (!s.hasMore || (s.items.length > 0 && id > s.items[s.items.length - 1]!.id))) return true;
    }
    return false;
  }

  /** Change the known notifications `pick` selects with `change`, then place them in every list. */
  private _patch(pick: (n: Notification) => boolean, change: (n: Notification) => Notification): void {
    const changed: Notification[] = [];
    for (const n of this._known().values()) if (pick(n)) changed.push(change(n));
    if (changed.length > 0) this._place(changed);
  }

  /**
   * Put each notification where it belongs: replaced, removed from lists it no longer matches, or added. `live`:
   * new notifications pushed live, which also join the lists whose first page is on its way (it may not have
   * them); the other changes make that page be fetched again (see `_changes`).
   */
  private _place(ns: Notification[], live = false): void {
    for (const e of this._lists.values()) {
      if (!e.state.loaded && !(live && e.inflight)) continue;
      const s = e.state;
      const oldest = s.items.length > 0 ? s.items[s.items.length - 1]!.id : Infinity;
      const byId = new Map(s.items.map((n) => [n.id, n]));
      let touched = false;
      for (const n of ns) {
        const has = byId.has(n.id);
        if (matchesFilter(e.filter, n)) {
          // Only within what is loaded: an older one belongs to a page not fetched yet.
          if (has || !s.hasMore || n.id > oldest) {
            byId.set(n.id, n);
            touched = true;
          }
        } else if (has) {
          byId.delete(n.id);
          touched = true;
        }
      }
      if (touched) this._setList(e, { ...s, items: [...byId.values()].sort(byIdDesc) });
    }
  }

  private _readAll(upTo: number, readAt: string): void {
    this._patch(
      (n) => n.id <= upTo && n.read_at === null,
      (n) => ({ ...n, read_at: readAt, seen_at: n.seen_at ?? readAt }),
    );
  }

  private _seenAll(upTo: number, seenAt: string): void {
    this._patch(
      (n) => n.id <= upTo && n.seen_at == null,
      (n) => ({ ...n, seen_at: seenAt }),
    );
  }

  /** The store's own deletion was answered. */
  private _removed(ids: number[]): void {
    this._changes++;
    this._removeIds(ids);
  }

  private _removeIds(ids: number[]): void {
    for (const e of this._lists.values()) {
      const items = e.state.items.filter((n) => !ids.includes(n.id));
      if (items.length !== e.state.items.length) this._setList(e, { ...e.state, items });
    }
  }
}
