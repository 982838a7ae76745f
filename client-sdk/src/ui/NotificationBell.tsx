import { useCallback, useEffect, useRef, useState } from 'react';
import { toHeraldError, type HeraldError } from '../errors';
import { useCounts, useInboxStore } from '../react/store-hooks';
import { Inbox, type InboxProps } from './Inbox';
import { CloseIcon } from './CloseIcon';
import { cx, useDomId, useStrings, type CommonProps } from './shared';

export interface NotificationBellProps extends CommonProps {
  /** What the badge counts: `unseen` (default: new since the bell was last opened) or `unread`. */
  count?: 'unseen' | 'unread';
  /**
   * `true` (default): the bell opens a panel with an {@link Inbox}. `false`: it only calls `onClick` (the app
   * shows its own inbox, e.g. scrolls to it).
   */
  panel?: boolean;
  /** Called on every press (before the panel opens). */
  onClick?: () => void;
  /** Mark everything seen when the bell is pressed (`seen_all`; default true). */
  markSeenOnOpen?: boolean;
  /** Props of the panel's inbox (`locale`, `strings` and `theme` are passed on). */
  inboxProps?: Omit<InboxProps, 'locale' | 'strings' | 'theme'>;
  /** Where the panel opens, relative to the bell (default `end`: aligned with its right edge). */
  align?: 'start' | 'end';
  /**
   * Called when marking all seen failed. The bell shows it too (`role="alert"`: in the panel, or under the bell
   * without one) until the next press.
   */
  onError?: (error: HeraldError) => void;
}

/**
 * A bell with a badge (unseen or unread count, from `counts` frames). Pressing it marks everything seen and opens
 * the inbox in a panel (a non-modal dialog): focus moves into it; Escape (wherever focus is), the close button or
 * a click outside close it, and focus returns to the bell; focus moving out of it (Tab past its end) closes it
 * where focus went.
 */
export function NotificationBell(props: NotificationBellProps) {
  const { count: kind = 'unseen', panel = true, markSeenOnOpen = true } = props;
  const s = useStrings(props.locale, props.strings);
  const counts = useCounts();
  const store = useInboxStore();
  const [open, setOpen] = useState(false);
  const [seenError, setSeenError] = useState<HeraldError | null>(null);
  const rootRef = useRef<HTMLDivElement>(null);
  const bellRef = useRef<HTMLButtonElement>(null);
  const headingRef = useRef<HTMLHeadingElement>(null);
  const panelRef = useRef<HTMLDivElement>(null);
  const panelId = useDomId('herald-bell-panel');
  const n = kind === 'unread' ? counts.unread : counts.unseen;

  // Replay the badge's "bump" animation whenever the count goes up.
  const [bump, setBump] = useState(0);
  const previous = useRef(n);
  useEffect(() => {
    if (n > previous.current) setBump((b) => b + 1);
    previous.current = n;
  }, [n]);

  const close = useCallback((returnFocus: boolean) => {
    setOpen(false);
    if (returnFocus) bellRef.current?.focus();
  }, []);

  const press = () => {
    props.onClick?.();
    setSeenError(null);
    if (markSeenOnOpen && !open && counts.unseen > 0) {
      store.markAllSeen().catch((e: unknown) => {
        const error = toHeraldError(e, 'request_failed');
        setSeenError(error);
        props.onError?.(error);
      });
    }
    if (panel) {
      if (open) close(false);
      else setOpen(true);
    }
  };

  // Focus into the panel when it opens.
  useEffect(() => {
    if (!open) return;
    const target =
      headingRef.current ?? panelRef.current?.querySelector<HTMLElement>('[role="tab"][tabindex="0"], button');
    target?.focus();
  }, [open]);

  // A press outside closes the panel (focus stays where the press put it).
  useEffect(() => {
    if (!open) return;
    const onDown = (e: PointerEvent | MouseEvent) => {
      if (rootRef.current && !rootRef.current.contains(e.target as Node)) close(false);
    };
    // Escape with focus outside the panel (inside, the root's handler takes it first and stops it).
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== 'Escape' || e.defaultPrevented) return;
      const active = document.activeElement;
      close(!active || active === document.body);
    };
    document.addEventListener('mousedown', onDown);
    document.addEventListener('keydown', onKey);
    return () => {
      document.removeEventListener('mousedown', onDown);
      document.removeEventListener('keydown', onKey);
    };
  }, [open, close]);

  return (
    <div
      ref={rootRef}
      className={cx('herald', 'herald-bell', props.className)}
      data-theme={props.theme}
      onKeyDown={(e) => {
        if (e.key === 'Escape' && open) {
          e.stopPropagation();
          close(true);
        }
      }}
      // Focus left the bell and its panel (Tab past the end, say): close it, so it covers nothing focused.
      // (Focus lost to nothing, e.g. a removed item or another window, is not leaving.)
      onBlur={(e) => {
        const to = e.relatedTarget as Node | null;
        if (open && to && !e.currentTarget.contains(to)) close(false);
      }}
    >
      <button
        ref={bellRef}
        type="button"
        className="herald-bell__button"
        aria-label={s.bellLabel(n, kind)}
        aria-haspopup={panel ? 'dialog' : undefined}
        aria-expanded={panel ? open : undefined}
        aria-controls={panel && open ? panelId : undefined}
        onClick={press}
      >
        <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true" focusable="false">
          <path
            fill="currentColor"
            d="M12 2a6 6 0 0 0-6 6v3.6l-1.7 2.9A1 1 0 0 0 5.2 16h13.6a1 1 0 0 0 .9-1.5L18 11.6V8a6 6 0 0 0-6-6Zm-2.8 16a2.9 2.9 0 0 0 5.6 0H9.2Z"
          />
        </svg>
        {n > 0 && (
          <span key={bump} className="herald-bell__badge" aria-hidden="true">
            {n > 99 ? '99+' : n}
          </span>
        )}
      </button>
      {seenError && !(panel && open) && (
        <p className="herald-bell__error" role="alert">
          {s.actionFailed}
        </p>
      )}
      {panel && open && (
        <div
          id={panelId}
          ref={panelRef}
          className={cx('herald-bell__panel', props.align === 'start' && 'herald-bell__panel--start')}
          role="dialog"
          aria-label={s.inboxTitle}
        >
          {seenError && (
            <p className="herald-error" role="alert">
              {s.actionFailed}
            </p>
          )}
          <Inbox
            {...props.inboxProps}
            locale={props.locale}
            strings={props.strings}
            headingRef={headingRef}
            headerActions={
              <>
                {props.inboxProps?.headerActions}
                <button
                  type="button"
                  className="herald-btn herald-btn--ghost herald-bell__close"
                  onClick={() => close(true)}
                  aria-label={s.close}
                >
                  <CloseIcon />
                </button>
              </>
            }
          />
        </div>
      )}
    </div>
  );
}
