// Polling that stops while the tab is hidden (no work, no requests for a page nobody looks at).
import { useEffect, useRef } from 'react';

/** What polling needs of the document: whether it is hidden, and its visibilitychange event. */
export interface Visibility {
  readonly hidden: boolean;
  addEventListener(type: 'visibilitychange', cb: () => void): void;
  removeEventListener(type: 'visibilitychange', cb: () => void): void;
}

/**
 * Call `tick` now and every `ms` while `doc` is visible; stop while hidden, and tick again at once when it is
 * shown. Returns the function that stops it all.
 */
export function startPolling(tick: () => void, ms: number, doc: Visibility = document): () => void {
  let timer: ReturnType<typeof setInterval> | undefined;
  const start = () => {
    if (timer !== undefined) return;
    tick();
    timer = setInterval(tick, ms);
  };
  const stop = () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };
  const onVisibility = () => (doc.hidden ? stop() : start());
  if (!doc.hidden) start();
  doc.addEventListener('visibilitychange', onVisibility);
  return () => {
    stop();
    doc.removeEventListener('visibilitychange', onVisibility);
  };
}

/** `startPolling` for a component: `fn` may change between renders without restarting the timer. */
export function usePoll(fn: () => void | Promise<void>, ms: number, enabled = true): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    if (!enabled) return;
    return startPolling(() => void saved.current(), ms);
  }, [ms, enabled]);
}
