import { useCallback, useEffect, useRef, useState } from 'react';
import type { Notification } from '@herald/client';
import { useHeraldClient } from '@herald/client/react';
import { pausableTimeout, type Pausable } from '../pausable';
import { TypeIcon } from './TypeIcon';

/** How long a toast stays (not counting the time it is hovered or focused). */
export const VISIBLE_MS = 5000;
const MAX_TOASTS = 4;

/**
 * A toast for each notification pushed to this tab (live, or replayed after a reconnect), announced politely
 * to screen readers. Each stays 5 s; the countdown pauses while the pointer or keyboard focus is on it and resumes
 * (with the time left) when they leave. Placed bottom-left on wide screens, away from the inbox column, and at the
 * top on phones (styles.css).
 */
export function Toasts() {
  const client = useHeraldClient();
  const [toasts, setToasts] = useState<Notification[]>([]);

  useEffect(
    () =>
      client.on('notification', ({ notification }) => {
        if (notification.read_at !== null) return;
        setToasts((ts) => [...ts.filter((t) => t.id !== notification.id), notification].slice(-MAX_TOASTS));
      }),
    [client],
  );
  // A toast for something read or deleted elsewhere has nothing left to say.
  useEffect(() => {
    const offs = [
      client.on('read', ({ ids }) => setToasts((ts) => ts.filter((t) => !ids.includes(t.id)))),
      client.on('read_all', ({ upTo }) => setToasts((ts) => ts.filter((t) => t.id > upTo))),
      client.on('deleted', ({ ids }) => setToasts((ts) => ts.filter((t) => !ids.includes(t.id)))),
    ];
    return () => offs.forEach((off) => off());
  }, [client]);

  const dismiss = useCallback((id: number) => setToasts((ts) => ts.filter((t) => t.id !== id)), []);
  const markRead = useCallback(
    (id: number) => {
      dismiss(id);
      // The server's `read` frame updates the inbox and the badge in every tab, this one included.
      client.markRead(id).catch(() => undefined);
    },
    [client, dismiss],
  );

  return (
    <section className="toasts" aria-label="Live notifications">
      <ol aria-live="polite" aria-relevant="additions" className="toast-list">
        {toasts.map((n) => (
          <Toast key={n.id} n={n} onDismiss={() => dismiss(n.id)} onRead={() => markRead(n.id)} />
        ))}
      </ol>
    </section>
  );
}

function Toast({ n, onDismiss, onRead }: { n: Notification; onDismiss: () => void; onRead: () => void }) {
  const dismissRef = useRef(onDismiss);
  dismissRef.current = onDismiss;
  const timer = useRef<Pausable | null>(null);
  useEffect(() => {
    const t = pausableTimeout(() => dismissRef.current(), VISIBLE_MS);
    timer.current = t;
    return () => t.cancel();
  }, []);
  const liRef = useRef<HTMLLIElement>(null);
  const hold = () => timer.current?.pause();
  const release = () => timer.current?.resume();

  return (
    <li
      ref={liRef}
      className="toast"
      data-testid="toast"
      onMouseEnter={hold}
      onMouseLeave={() => {
        if (!(document.activeElement instanceof Node && liRef.current?.contains(document.activeElement))) release();
      }}
      onFocus={hold}
      onBlur={(e) => {
        if (!e.currentTarget.contains(e.relatedTarget as Node | null) && !liRef.current?.matches(':hover')) release();
      }}
    >
      <TypeIcon type={n.type} />
      <div className="toast-body">
        <p className="toast-title">{n.title}</p>
        {n.content && <p className="toast-content">{n.content}</p>}
        <div className="toast-actions">
          <button type="button" className="btn small" onClick={onRead} aria-label={`Mark read: ${n.title}`}>
            Mark read
          </button>
        </div>
      </div>
      <button type="button" className="toast-close" onClick={onDismiss} aria-label={`Dismiss: ${n.title}`}>
        <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">
          <path
            fill="currentColor"
            d="M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19l5.6-5.6 5.6 5.6 1.4-1.4-5.6-5.6L19 6.4 17.6 5 12 10.6z"
          />
        </svg>
      </button>
    </li>
  );
}
