import { Alert } from './Alert';
import { useEffect, useRef, useState, type KeyboardEvent, type ReactNode, type Ref } from 'react';
import type { HeraldError } from '../errors';
import type { Notification } from '../protocol';
import type { InboxTab } from '../store';
import { useCounts, useInbox } from '../react/store-hooks';
import { absoluteTime, relativeTime, type HeraldStrings } from './strings';
import { cx, useDomId, useNow, useStrings, type CommonProps } from './shared';

const ALL_TABS: readonly InboxTab[] = ['all', 'unread', 'archived'];

export interface InboxProps extends CommonProps {
  /** Which tabs to show, in order (default all, unread, archived); one tab hides the tab bar. */
  tabs?: readonly InboxTab[];
  defaultTab?: InboxTab;
  /**
   * Only notifications of this type. Narrowed by it (or by `relatedType`), "Mark all read" marks read the unread
   * notifications of the list that are loaded (the server's `read_all` would mark every type), and the Unread tab
   * shows no count (the server counts the whole inbox only).
   */
  type?: string;
  /** Only notifications about objects of this type (with `relatedId`: about that object). */
  relatedType?: string;
  relatedId?: string;
  /** Page size (default 20). */
  pageSize?: number;
  /** Offer a Delete button on each item. */
  showDelete?: boolean;
  /**
   * Load the next page when the end of the list scrolls into view (IntersectionObserver; default true). A
   * "Load more" button is always there too.
   */
  infiniteScroll?: boolean;
  /** The heading (default: the `inboxTitle` string); `false` for none (give the page's own heading then). */
  heading?: ReactNode | false;
  /** The heading's level (default 2). */
  headingLevel?: 2 | 3 | 4;
  /** The heading element (it takes focus when the bell opens the inbox, for instance). */
  headingRef?: Ref<HTMLHeadingElement>;
  /**
   * More controls in the heading row, after "Mark all read" (the bell's panel puts its close button there, so
   * Tab reaches it right after the heading's own action).
   */
  headerActions?: ReactNode;
  /** Disable the actions (e.g. while the server is out of reach). */
  disabled?: boolean;
  /** An item was activated (its title is a button then): open what it is about. It is marked read too. */
  onItemClick?: (n: Notification) => void;
  /** An icon before each item. */
  renderIcon?: (n: Notification) => ReactNode;
  /**
   * Called with every failed action. The inbox shows it too (`role="alert"`, until closed or the next action
   * works), as it shows its own load errors.
   */
  onError?: (error: HeraldError) => void;
  /** Put the tab that is shown in the given element id (for tests and deep links). */
  id?: string;
}

/**
 * The inbox: tabs (all, unread, archived), an item per notification with mark read/unread and archive/unarchive,
 * mark all read, infinite scroll with a "Load more" fallback, and loading, empty and error states. Kept current by
 * the client's shared inbox store (live frames; `counts` frames for the numbers).
 */
export function Inbox(props: InboxProps) {
  const { tabs = ALL_TABS, defaultTab } = props;
  const [tab, setTab] = useState<InboxTab>(defaultTab ?? tabs[0] ?? 'all');
  const s = useStrings(props.locale, props.strings);
  const titleId = useDomId('herald-inbox-title');
  const heading = props.heading === undefined ? s.inboxTitle : props.heading;
  const H = `h${props.headingLevel ?? 2}` as 'h2';
  return (
    <section
      className={cx('herald', 'herald-inbox', props.className)}
      data-theme={props.theme}
      aria-labelledby={heading === false ? undefined : titleId}
      aria-label={heading === false ? s.inboxTitle : undefined}
      id={props.id}
    >
      <Body {...props} tab={tab} setTab={setTab} s={s} tabs={tabs} titleId={titleId} heading={heading} H={H} />
    </section>
  );
}

interface BodyProps extends InboxProps {
  tab: InboxTab;
  setTab: (t: InboxTab) => void;
  s: HeraldStrings;
  tabs: readonly InboxTab[];
  titleId: string;
  H: 'h2';
}

function Body(p: BodyProps) {
  const { tab, s, tabs } = p;
  const list = useInbox({
    tab,
    type: p.type,
    relatedType: p.relatedType,
    relatedId: p.relatedId,
    limit: p.pageSize ?? 20,
  });
  const counts = useCounts();
  const now = useNow();
  const tabIds = useDomId('herald-tab');
  const panelId = useDomId('herald-panel');
  const listRef = useRef<HTMLUListElement>(null);
  const tabRefs = useRef<(HTMLButtonElement | null)[]>([]);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<HeraldError | null>(null);
  // Counts are global: a list narrowed by type or related object cannot use them.
  const narrowed = p.type !== undefined || p.relatedType !== undefined || p.relatedId !== undefined;
  const unreadCount = narrowed ? 0 : counts.unread;
  const nothingUnread = narrowed ? !list.items.some((n) => n.read_at === null) : counts.unread === 0;
  // After an item leaves the list by the user's hand, keep keyboard focus in it: on the item that took its place.
  const [refocus, setRefocus] = useState<number | null>(null);
  useEffect(() => {
    if (refocus === null) return;
    const rows = listRef.current?.querySelectorAll<HTMLElement>(':scope > li');
    const target = rows && rows.length > 0 ? rows[Math.min(refocus, rows.length - 1)] : null;
    (target ?? listRef.current?.closest('section'))?.focus();
    setRefocus(null);
  }, [list.items, refocus]);

  const run = async (action: () => Promise<HeraldError | null>, index?: number) => {
    const id = index === undefined ? null : list.items[index]?.id;
    const hadFocus = listRef.current?.contains(document.activeElement) ?? false;
    const error = await action();
    setActionError(error);
    if (error) p.onError?.(error);
    else if (id != null && hadFocus && !listRef.current?.querySelector(`[data-id="${id}"]`)) setRefocus(index!);
  };

  const onTabKey = (e: KeyboardEvent<HTMLButtonElement>, i: number) => {
    const n = tabs.length;
    const to =
      e.key === 'ArrowRight'
        ? (i + 1) % n
        : e.key === 'ArrowLeft'
          ? (i - 1 + n) % n
          : e.key === 'Home'
            ? 0
            : e.key === 'End'
              ? n - 1
              : -1;
    if (to < 0) return;
    e.preventDefault();
    p.setTab(tabs[to]!);
    tabRefs.current[to]?.focus();
  };

  const label = (t: InboxTab) => (t === 'all' ? s.tabAll : t === 'unread' ? s.tabUnread : s.tabArchived);
  const empty = tab === 'unread' ? s.emptyUnread : tab === 'archived' ? s.emptyArchived : s.emptyAll;
  const showEmpty = list.loaded && list.items.length === 0 && !list.error;
  const H = p.H;

  return (
    <>
      <div className="herald-inbox__head">
        {p.heading !== false && (
          <H id={p.titleId} className="herald-inbox__title" ref={p.headingRef} tabIndex={-1}>
            {p.heading}
          </H>
        )}
        <button
          type="button"
          className="herald-btn"
          onClick={async () => {
            setBusy(true);
            await run(list.markAllRead);
            setBusy(false);
          }}
          disabled={p.disabled || busy || nothingUnread}
        >
          {s.markAllRead}
        </button>
        {p.headerActions}
      </div>
      {tabs.length > 1 && (
        <div className="herald-tabs" role="tablist" aria-label={s.tabsLabel}>
          {tabs.map((t, i) => (
            <button
              key={t}
              ref={(el) => {
                tabRefs.current[i] = el;
              }}
              type="button"
              role="tab"
              id={`${tabIds}-${t}`}
              aria-selected={tab === t}
              aria-controls={panelId}
              tabIndex={tab === t ? 0 : -1}
              className="herald-tab"
              onClick={() => p.setTab(t)}
              onKeyDown={(e) => onTabKey(e, i)}
            >
              {label(t)}
              {t === 'unread' && unreadCount > 0 && (
                <span className="herald-tab__count">
                  <span className="herald-sr"> (</span>
                  {unreadCount}
                  <span className="herald-sr">)</span>
                </span>
              )}
            </button>
          ))}
        </div>
      )}
      <div
        className="herald-inbox__panel"
        id={panelId}
        role={tabs.length > 1 ? 'tabpanel' : undefined}
        aria-labelledby={tabs.length > 1 ? `${tabIds}-${tab}` : undefined}
        aria-busy={list.loading}
      >
        {actionError && <Alert text={s.actionFailed} action={s.close} onAction={() => setActionError(null)} />}
        {list.error && (
          <Alert
            text={list.loaded ? list.error.message || s.loadFailed : s.loadFailed}
            action={s.retry}
            primary
            onAction={() => void list.refresh()}
          />
        )}
        {showEmpty && <p className="herald-empty">{empty}</p>}
        <ul className="herald-list" ref={listRef} aria-label={label(tab)}>
          {list.items.map((n, i) => (
            <Item
              key={n.id}
              n={n}
              s={s}
              now={now}
              locale={p.locale}
              disabled={p.disabled}
              showDelete={p.showDelete}
              onItemClick={p.onItemClick}
              icon={p.renderIcon?.(n)}
              onAction={(action) => void run(() => action(n.id), i)}
              list={list}
            />
          ))}
        </ul>
        <Foot
          s={s}
          hasMore={list.hasMore}
          loading={list.loading}
          loaded={list.loaded}
          fetchMore={list.fetchMore}
          infinite={p.infiniteScroll !== false}
        />
      </div>
    </>
  );
}

function Item({
  n,
  s,
  now,
  locale,
  disabled,
  showDelete,
  onItemClick,
  icon,
  onAction,
  list,
}: {
  n: Notification;
  s: HeraldStrings;
  now: number;
  locale?: string;
  disabled?: boolean;
  showDelete?: boolean;
  onItemClick?: (n: Notification) => void;
  icon: ReactNode;
  onAction: (action: (id: number) => Promise<HeraldError | null>) => void;
  list: ReturnType<typeof useInbox>;
}) {
  const unread = n.read_at === null;
  // Shown as unread only when it counts: a muted notification is listed but not in the badge nor the Unread tab.
  const counted = unread && !n.muted;
  const archived = n.archived_at != null;
  const title = (
    <>
      {counted && <span className="herald-sr">{s.unreadPrefix}</span>}
      {n.title}
    </>
  );
  const button = (text: string, action: (id: number) => Promise<HeraldError | null>, extra?: string) => (
    <button
      type="button"
      className={cx('herald-btn', 'herald-btn--small', extra)}
      onClick={() => onAction(action)}
      aria-label={s.actionOn(text, n.title)}
      disabled={disabled}
    >
      {text}
    </button>
  );
  return (
    <li
      className={cx('herald-item', counted && 'herald-item--unread')}
      data-id={n.id}
      data-unread={counted || undefined}
      data-muted={n.muted || undefined}
      tabIndex={-1}
    >
      {counted && <span className="herald-item__dot" aria-hidden="true" />}
      {icon}
      <div className="herald-item__body">
        <p className="herald-item__title">
          {onItemClick ? (
            <button
              type="button"
              className="herald-link"
              onClick={() => {
                if (unread && !disabled) onAction(list.markRead);
                onItemClick(n);
              }}
            >
              {title}
            </button>
          ) : (
            title
          )}
        </p>
        {n.content && <p className="herald-item__content">{n.content}</p>}
        <p className="herald-item__meta">
          {n.user_id === null && <span className="herald-tag">{s.everyone}</span>}
          {n.muted && <span className="herald-tag">{s.mutedTag}</span>}
          <time dateTime={n.created_at} title={absoluteTime(n.created_at, locale)}>
            {relativeTime(n.created_at, now, locale, s.justNow)}
          </time>
        </p>
      </div>
      <div className="herald-item__actions">
        {unread ? button(s.markRead, list.markRead) : button(s.markUnread, list.markUnread, 'herald-btn--ghost')}
        {archived
          ? button(s.unarchive, list.unarchive, 'herald-btn--ghost')
          : button(s.archive, list.archive, 'herald-btn--ghost')}
        {showDelete && button(s.remove, list.remove, 'herald-btn--ghost')}
      </div>
    </li>
  );
}

/** "Loading…", and the end of the list: a sentinel that loads the next page when seen, and a button that does. */
function Foot({
  s,
  hasMore,
  loading,
  loaded,
  fetchMore,
  infinite,
}: {
  s: HeraldStrings;
  hasMore: boolean;
  loading: boolean;
  loaded: boolean;
  fetchMore: () => Promise<void>;
  infinite: boolean;
}) {
  const sentinel = useRef<HTMLDivElement>(null);
  const more = useRef(fetchMore);
  more.current = fetchMore;
  useEffect(() => {
    const el = sentinel.current;
    if (!infinite || !hasMore || !el || typeof IntersectionObserver === 'undefined') return;
    // The nearest scrolling ancestor (the bell's panel) or the viewport.
    let root: Element | null = el.parentElement;
    while (root && !/(auto|scroll)/.test(getComputedStyle(root).overflowY)) root = root.parentElement;
    const io = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) void more.current();
      },
      { root, rootMargin: '0px 0px 120px 0px' },
    );
    io.observe(el);
    return () => io.disconnect();
  }, [infinite, hasMore, loading]);
  return (
    <div className="herald-inbox__foot">
      {loading && (
        <p className="herald-hint" role="status">
          {s.loading}
        </p>
      )}
      {loaded && hasMore && (
        <>
          <div ref={sentinel} className="herald-sentinel" aria-hidden="true" />
          <button type="button" className="herald-btn" onClick={() => void fetchMore()} disabled={loading}>
            {s.loadMore}
          </button>
        </>
      )}
    </div>
  );
}
