import { useEffect, useState } from 'react';
import { NotificationBell } from '@herald/client/ui';
import { useHeraldClient } from '@herald/client/react';
import { LINK_LABELS, type Link } from '../link';
import { shortId } from '../format';
import { BrandMark } from './BrandMark';
import { TypeIcon } from './TypeIcon';

const PANEL_BELL = new URLSearchParams(window.location.search).get('bell') === 'panel';

export function Header({
  userId,
  link,
  onBell,
  onSignOut,
}: {
  userId: string;
  link: Link;
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
        {/*
          The inbox is on the page: the bell (counting unread) takes you there instead of opening a panel.
          `?bell=panel` shows the drop-in variant: the bell opens the inbox in a panel of its own.
        */}
        {PANEL_BELL ? (
          <NotificationBell
            count="unread"
            align="end"
            inboxProps={{ showDelete: true, renderIcon: (n) => <TypeIcon type={n.type} /> }}
          />
        ) : (
          <NotificationBell count="unread" panel={false} onClick={onBell} />
        )}
        <button type="button" className="btn ghost" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </header>
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
