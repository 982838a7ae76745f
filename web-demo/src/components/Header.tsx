import { useEffect, useRef, useState } from 'react';
import { useHeraldClient } from '@herald/client/react';
import { LINK_LABELS, type Link } from '../link';
import { shortId } from '../format';
import { BrandMark } from './BrandMark';

export function Header({
  userId,
  link,
  unread,
  onBell,
  onSignOut,
}: {
  userId: string;
  link: Link;
  unread: number;
  onBell: () => void;
  onSignOut: () => void;
}) {
  return (
    <header className="topbar">
      <h1 className="brand">
        <BrandMark />
        Herald <span className="brand-sub">demo</span>
      </h1>
      <ConnectionStatus link={link} onSignInAgain={onSignOut} />
      <div className="topbar-end">
        <span className="user-chip" title={userId} data-testid="user-chip">
          <span className="visually-hidden">Signed in as </span>
          {shortId(userId)}
        </span>
        <Bell count={unread} onClick={onBell} />
        <button type="button" className="btn ghost" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </header>
  );
}

function Bell({ count, onClick }: { count: number; onClick: () => void }) {
  // Replay the badge's "bump" animation whenever the count goes up.
  const [bump, setBump] = useState(0);
  const previous = useRef(count);
  useEffect(() => {
    if (count > previous.current) setBump((b) => b + 1);
    previous.current = count;
  }, [count]);
  const label = count === 0 ? 'Notifications, none unread' : `Notifications, ${count} unread`;
  return (
    <button type="button" className="bell" onClick={onClick} aria-label={label} data-testid="bell">
      <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true" focusable="false">
        <path
          fill="currentColor"
          d="M12 2a6 6 0 0 0-6 6v3.6l-1.7 2.9A1 1 0 0 0 5.2 16h13.6a1 1 0 0 0 .9-1.5L18 11.6V8a6 6 0 0 0-6-6Zm-2.8 16a2.9 2.9 0 0 0 5.6 0H9.2Z"
        />
      </svg>
      {count > 0 && (
        <span key={bump} className="badge" aria-hidden="true" data-testid="badge">
          {count > 99 ? '99+' : count}
        </span>
      )}
    </button>
  );
}

/** The session's state in words; why it is not live (a technical detail) in the tooltip. */
function ConnectionStatus({ link, onSignInAgain }: { link: Link; onSignInAgain: () => void }) {
  const client = useHeraldClient();
  const [reason, setReason] = useState<string | null>(null);
  useEffect(
    () =>
      client.on('error', ({ error }) => {
        if (error.code !== 'dead_link') setReason(error.message);
      }),
    [client],
  );
  useEffect(() => {
    if (link === 'live') setReason(null);
  }, [link]);
  return (
    <div
      className={`conn conn-${link}`}
      role="status"
      data-testid="connection"
      data-state={link}
      title={reason && link !== 'live' ? reason : undefined}
    >
      <span className="conn-dot" aria-hidden="true" />
      <span>
        <span className="visually-hidden">Connection: </span>
        {LINK_LABELS[link]}
      </span>
      {link === 'unauthorized' && (
        <button type="button" className="btn small" onClick={onSignInAgain}>
          Sign in again
        </button>
      )}
    </div>
  );
}
