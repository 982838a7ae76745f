import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react';
import { toHeraldError, type HeraldError } from '../errors';
import type { Notification } from '../protocol';
import { useHeraldClient } from '../react/context';
import { useInboxStore } from '../react/store-hooks';
import { CloseIcon } from './CloseIcon';
import { cx, pausableTimeout, useStrings, type CommonProps, type Pausable } from './shared';

export interface ToastsProps extends CommonProps {
  /** How long a toast stays, not counting the time it is hovered or focused (default 5000 ms). */
  duration?: number;
  /** At most this many at once; the oldest leaves first (default 4). */
  max?: number;
  /** Offer "Mark read" on each toast (default true). */
  showMarkRead?: boolean;
  /** A toast's title was activated (it is a button then): open what it is about. It is marked read too. */
  onToastClick?: (n: Notification) => void;
  /** An icon before each toast. */
  renderIcon?: (n: Notification) => ReactNode;
  /** Where they appear (default `bottom-start`). */
  position?: 'bottom-start' | 'bottom-end' | 'top-start' | 'top-end';
  /**
   * Called when "Mark read" failed. The toast comes back with the `actionFailed` words (`role="alert"`) either
   * way, so the user can try again.
   */
  onError?: (error: HeraldError) => void;
}

/**
 * A toast for each unread notification pushed to this tab, announced politely to screen readers (an aria-live
 * region). Each leaves after `duration`; the countdown pauses while the pointer or keyboard focus is on it and
 * resumes with the time left. A toast for something read, archived or deleted (here or in another tab) leaves.
 * One whose "Mark read" failed comes back saying so.
 */
export function Toasts(props: ToastsProps) {
  const { duration = 5000, max = 4, showMarkRead = true, position = 'bottom-start' } = props;
  const s = useStrings(props.locale, props.strings);
  const client = useHeraldClient();
  const store = useInboxStore();
  const [toasts, setToasts] = useState<Notification[]>([]);
  /** Toasts whose "Mark read" failed, by id. */
  const [failed, setFailed] = useState<ReadonlySet<number>>(() => new Set());
  const onError = useRef(props.onError);
  onError.current = props.onError;

  useEffect(() => {
    const drop = (ids: number[]) => setToasts((ts) => ts.filter((t) => !ids.includes(t.id)));
    const offs = [
      client.on('notification', ({ notification: n }) => {
        if (n.read_at !== null || n.muted || n.archived_at != null) return;
        setToasts((ts) => [...ts.filter((t) => t.id !== n.id), n].slice(-max));
      }),
      client.on('read', ({ ids }) => drop(ids)),
      client.on('archived', ({ ids }) => drop(ids)),
      client.on('deleted', ({ ids }) => drop(ids)),
      client.on('read_all', ({ upTo }) => setToasts((ts) => ts.filter((t) => t.id > upTo))),
      client.on('purged', () => setToasts([])),
    ];
    return () => offs.forEach((off) => off());
  }, [client, max]);

  const dismiss = useCallback((id: number) => {
    setToasts((ts) => ts.filter((t) => t.id !== id));
    setFailed((f) => (f.has(id) ? new Set([...f].filter((x) => x !== id)) : f));
  }, []);
  const markRead = useCallback(
    (n: Notification) => {
      dismiss(n.id);
      // The server's `read` frame updates the lists and the counts in every tab, this one included.
      store.markRead(n.id).catch((e: unknown) => {
        // Not read: bring the toast back, saying so.
        setToasts((ts) => (ts.some((t) => t.id === n.id) ? ts : [...ts, n].sort((a, b) => a.id - b.id).slice(-max)));
        setFailed((f) => new Set(f).add(n.id));
        onError.current?.(toHeraldError(e, 'request_failed'));
      });
    },
    [store, dismiss, max],
  );

  return (
    <section
      className={cx('herald', 'herald-toasts', `herald-toasts--${position}`, props.className)}
      data-theme={props.theme}
      aria-label={s.toastsLabel}
    >
      <ol aria-live="polite" aria-relevant="additions" className="herald-toasts__list">
        {toasts.map((n) => (
          <Toast
            key={n.id}
            n={n}
            duration={duration}
            dismissLabel={s.actionOn(s.dismiss, n.title)}
            markReadText={showMarkRead ? s.markRead : null}
            markReadLabel={s.actionOn(s.markRead, n.title)}
            icon={props.renderIcon?.(n)}
            error={failed.has(n.id) ? s.actionFailed : null}
            onTitle={
              props.onToastClick &&
              (() => {
                markRead(n);
                props.onToastClick!(n);
              })
            }
            onDismiss={() => dismiss(n.id)}
            onRead={() => markRead(n)}
          />
        ))}
      </ol>
    </section>
  );
}

function Toast({
  n,
  duration,
  dismissLabel,
  markReadText,
  markReadLabel,
  icon,
  error,
  onTitle,
  onDismiss,
  onRead,
}: {
  n: Notification;
  duration: number;
  dismissLabel: string;
  markReadText: string | null;
  markReadLabel: string;
  icon: ReactNode;
  /** Its "Mark read" failed: these words, as an alert. */
  error: string | null;
  onTitle?: () => void;
  onDismiss: () => void;
  onRead: () => void;
}) {
  const dismissRef = useRef(onDismiss);
  dismissRef.current = onDismiss;
  const timer = useRef<Pausable | null>(null);
  useEffect(() => {
    const t = pausableTimeout(() => dismissRef.current(), duration);
    timer.current = t;
    return () => t.cancel();
  }, [duration]);
  const liRef = useRef<HTMLLIElement>(null);
  const hold = () => timer.current?.pause();
  const release = () => timer.current?.resume();
  const focusInside = () => document.activeElement instanceof Node && !!liRef.current?.contains(document.activeElement);
  const hovered = () => {
    try {
      return !!liRef.current?.matches(':hover');
    } catch {
      return false;
    }
  };

  return (
    <li
      ref={liRef}
      className="herald-toast"
      onMouseEnter={hold}
      onMouseLeave={() => {
        if (!focusInside()) release();
      }}
      onFocus={hold}
      onBlur={(e) => {
        if (!e.currentTarget.contains(e.relatedTarget as Node | null) && !hovered()) release();
      }}
    >
      {icon}
      <div className="herald-toast__body">
        <p className="herald-toast__title">
          {onTitle ? (
            <button type="button" className="herald-link" onClick={onTitle}>
              {n.title}
            </button>
          ) : (
            n.title
          )}
        </p>
        {n.content && <p className="herald-toast__content">{n.content}</p>}
        {error && (
          <p className="herald-toast__error" role="alert">
            {error}
          </p>
        )}
        {markReadText && (
          <div className="herald-toast__actions">
            <button type="button" className="herald-btn herald-btn--small" onClick={onRead} aria-label={markReadLabel}>
              {markReadText}
            </button>
          </div>
        )}
      </div>
      <button type="button" className="herald-toast__close" onClick={onDismiss} aria-label={dismissLabel}>
        <CloseIcon />
      </button>
    </li>
  );
}
