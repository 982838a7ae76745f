import type { RefObject } from 'react';
import { Inbox as HeraldInbox } from '@herald/client/ui';
import { TypeIcon } from './TypeIcon';
import { blocked, unreachable, type Link } from '../link';

/** Items per page: "Load more" (or scrolling to the end) fetches the next 20. */
export const PAGE_SIZE = 20;

/**
 * The demo's inbox panel: its heading and summary around `<Inbox>` from `@herald/client/ui` (tabs, infinite
 * scroll, read/unread, archive, delete), kept current by the client's shared inbox store.
 */
export function Inbox({
  link,
  headingRef,
  unreadCount,
}: {
  link: Link;
  headingRef: RefObject<HTMLHeadingElement | null>;
  unreadCount: number;
}) {
  // While the server is away the counts may be stale: say so instead of "All caught up".
  const down = unreachable(link);
  const refused = link === 'unauthorized';
  return (
    <section id="inbox" className="panel inbox" aria-labelledby="inbox-title">
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
      {down && (
        <p className="offline-note" data-testid="offline-note">
          Herald is out of reach: the inbox below may be out of date. It updates itself once the connection is back.
        </p>
      )}
      <HeraldInbox
        heading={false}
        pageSize={PAGE_SIZE}
        showDelete
        disabled={blocked(link)}
        renderIcon={(n) => <TypeIcon type={n.type} />}
      />
    </section>
  );
}
