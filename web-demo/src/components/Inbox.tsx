import { useEffect, useRef, useState, type RefObject } from 'react';
import type { Notification } from '@herald/client';
import { useNotifications } from '@herald/client/react';
import { absoluteTime, relativeTime, useNow } from '../format';
import { TypeIcon } from './TypeIcon';
import { blocked, unreachable, type Link } from '../link';

/** Items per page: "Load more" fetches the next 20. */
export const PAGE_SIZE = 20;

type Filter = 'all' | 'unread';

export function Inbox({
  link,
  headingRef,
  unreadCount,
  afterChange,
}: {
  link: Link;
  headingRef: RefObject<HTMLHeadingElement | null>;
  unreadCount: number;
  afterChange: () => void;
}) {
  const [filter, setFilter] = useState<Filter>('all');
  return (
    <section id="inbox" className="panel inbox" aria-labelledby="inbox-title">
      <InboxBody
        key={filter}
        filter={filter}
        link={link}
        setFilter={setFilter}
        headingRef={headingRef}
        unreadCount={unreadCount}
        afterChange={afterChange}
      />
    </section>
  );
}

function InboxBody({
  filter,
  link,
  setFilter,
  headingRef,
  unreadCount,
  afterChange,
}: {
  filter: Filter;
  link: Link;
  setFilter: (f: Filter) => void;
  headingRef: RefObject<HTMLHeadingElement | null>;
  unreadCount: number;
  afterChange: () => void;
}) {
  const { items, hasMore, loading, error, fetchMore, markRead, markAllRead, remove } = useNotifications({
    limit: PAGE_SIZE,
    unread: filter === 'unread',
  });
  const now = useNow();
  // While the server is away the counts may be stale: say so instead of "All caught up".
  const down = unreachable(link);
  const refused = link === 'unauthorized';
  const listRef = useRef<HTMLOListElement>(null);
  // After a deletion, keep keyboard focus in the list: on the item that took its place, or the heading.
  const [refocus, setRefocus] = useState<number | null>(null);
  useEffect(() => {
    if (refocus === null) return;
    const rows = listRef.current?.querySelectorAll<HTMLElement>(':scope > li');
    const target = rows && rows.length > 0 ? rows[Math.min(refocus, rows.length - 1)] : headingRef.current;
    target?.focus();
    setRefocus(null);
  }, [items, refocus, headingRef]);

  const onRead = async (id: number) => {
    await markRead(id);
    afterChange();
  };
  const onDelete = async (id: number, index: number) => {
    await remove(id);
    setRefocus(index);
    afterChange();
  };
  const onReadAll = async () => {
    await markAllRead();
    afterChange();
  };

  return (
    <>
      <div className="panel-head">
        <h2 id="inbox-title" ref={headingRef} tabIndex={-1}>
          <span className="step" aria-hidden="true">
            2
          </span>
          Your inbox
        </h2>
        <p className="panel-sub" data-testid="unread-summary">
          {refused
            ? 'Signed out'
            : down
              ? "Can't reach the server"
              : unreadCount === 0
                ? 'All caught up'
                : `${unreadCount} unread`}
        </p>
      </div>
      <div className="toolbar">
        <div className="segmented" role="group" aria-label="Show">
          {(['all', 'unread'] as const).map((f) => (
            <button key={f} type="button" aria-pressed={filter === f} onClick={() => setFilter(f)} className="segment">
              {f === 'all' ? 'All' : 'Unread'}
            </button>
          ))}
        </div>
        <button type="button" className="btn small" onClick={onReadAll} disabled={blocked(link) || unreadCount === 0}>
          Mark all read
        </button>
      </div>

      {error && (
        <p className="error" role="alert">
          {error.message || error.code}
        </p>
      )}

      {down && (
        <p className="offline-note" data-testid="offline-note">
          Herald is out of reach: the inbox below may be out of date. It updates itself once the connection is back.
        </p>
      )}

      {items.length === 0 && !loading && !blocked(link) && (
        <div className="empty">
          <p>{filter === 'unread' ? 'Nothing unread.' : 'No notifications yet.'}</p>
          <p className="hint">Publish an event and it lands here, live.</p>
        </div>
      )}

      <ol className="items" ref={listRef} aria-label="Notifications" aria-busy={loading}>
        {items.map((n, i) => (
          <Item key={n.id} n={n} now={now} onRead={() => void onRead(n.id)} onDelete={() => void onDelete(n.id, i)} />
        ))}
      </ol>

      <div className="list-foot">
        {loading && (
          <p className="hint" role="status">
            Loading…
          </p>
        )}
        {hasMore && (
          <button type="button" className="btn" onClick={() => void fetchMore()} disabled={loading}>
            Load more
          </button>
        )}
        {!hasMore && items.length > PAGE_SIZE && <p className="hint">That is everything.</p>}
      </div>
    </>
  );
}

function Item({
  n,
  now,
  onRead,
  onDelete,
}: {
  n: Notification;
  now: number;
  onRead: () => void;
  onDelete: () => void;
}) {
  const unread = n.read_at === null;
  return (
    <li className={`item${unread ? ' unread' : ''}`} tabIndex={-1} data-id={n.id} data-testid="inbox-item">
      <TypeIcon type={n.type} />
      <div className="item-body">
        <p className="item-title">
          {unread && <span className="visually-hidden">Unread: </span>}
          {n.title}
        </p>
        {n.content && <p className="item-content">{n.content}</p>}
        <p className="item-meta">
          {/* The event type and exchange are for developers: in a tooltip, not in every item. */}
          <span className="tag" title={`Event ${n.event_type}${n.source ? ` from ${n.source}` : ''}`}>
            {n.type}
          </span>
          {n.user_id === null && <span className="tag tag-everyone">everyone</span>}
          <time dateTime={n.created_at} title={absoluteTime(n.created_at)}>
            {relativeTime(n.created_at, now)}
          </time>
        </p>
      </div>
      <div className="item-actions">
        {unread && (
          <button type="button" className="btn small" onClick={onRead} aria-label={`Mark read: ${n.title}`}>
            Mark read
          </button>
        )}
        <button type="button" className="btn small ghost" onClick={onDelete} aria-label={`Delete: ${n.title}`}>
          Delete
        </button>
      </div>
    </li>
  );
}
