/** Small pieces the components share. */
import { useEffect, useId, useMemo, useState } from 'react';
import { resolveStrings, type HeraldStrings } from './strings';

/** Props every component takes. */
export interface CommonProps {
  /** `en` (default), `es`, `fr` (or a regional tag such as `es-MX`); also used for relative times (Intl). */
  locale?: string;
  /** Override any of the words (e.g. a fourth language). */
  strings?: Partial<HeraldStrings>;
  /** Force a colour scheme; otherwise `prefers-color-scheme` (or a `data-theme` on an ancestor) decides. */
  theme?: 'light' | 'dark';
  className?: string;
}

export function useStrings(locale?: string, overrides?: Partial<HeraldStrings>): HeraldStrings {
  return useMemo(() => resolveStrings(locale, overrides), [locale, overrides]);
}

export function cx(...names: (string | false | null | undefined)[]): string {
  return names.filter(Boolean).join(' ');
}

/** The current time, re-rendering every `everyMs` (relative times stay right). */
export function useNow(everyMs = 30_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(t);
  }, [everyMs]);
  return now;
}

/** An id for ARIA relations, safe to use in a CSS selector. */
export function useDomId(prefix: string): string {
  return `${prefix}-${useId().replace(/[^a-zA-Z0-9_-]/g, '')}`;
}

/**
 * A countdown that can be paused and resumed without starting over: a toast's life, held while the pointer or
 * keyboard focus is on it.
 */
export interface Pausable {
  pause(): void;
  resume(): void;
  cancel(): void;
}

export function pausableTimeout(fn: () => void, ms: number, now: () => number = Date.now): Pausable {
  let left = ms;
  let startedAt = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let done = false;
  const resume = () => {
    if (done || timer !== null) return;
    startedAt = now();
    timer = setTimeout(() => {
      timer = null;
      done = true;
      fn();
    }, left);
  };
  const pause = () => {
    if (timer === null) return;
    clearTimeout(timer);
    timer = null;
    left = Math.max(0, left - (now() - startedAt));
  };
  resume();
  return {
    pause,
    resume,
    cancel() {
      pause();
      done = true;
    },
  };
}
