import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startPolling, type Visibility } from './poll';

class FakeDocument implements Visibility {
  hidden = false;
  private listeners = new Set<() => void>();
  addEventListener(_: 'visibilitychange', cb: () => void) {
    this.listeners.add(cb);
  }
  removeEventListener(_: 'visibilitychange', cb: () => void) {
    this.listeners.delete(cb);
  }
  setHidden(h: boolean) {
    this.hidden = h;
    for (const cb of this.listeners) cb();
  }
  get listening() {
    return this.listeners.size;
  }
}

describe('polling', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('ticks at once and every interval while visible, not while hidden, and at once when shown again', () => {
    const doc = new FakeDocument();
    const tick = vi.fn();
    const stop = startPolling(tick, 2000, doc);
    expect(tick).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(4000);
    expect(tick).toHaveBeenCalledTimes(3);
    doc.setHidden(true);
    vi.advanceTimersByTime(60_000);
    expect(tick).toHaveBeenCalledTimes(3);
    doc.setHidden(false);
    expect(tick).toHaveBeenCalledTimes(4);
    vi.advanceTimersByTime(2000);
    expect(tick).toHaveBeenCalledTimes(5);
    stop();
    vi.advanceTimersByTime(10_000);
    expect(tick).toHaveBeenCalledTimes(5);
    expect(doc.listening).toBe(0);
  });

  it('does not start in a hidden tab', () => {
    const doc = new FakeDocument();
    doc.hidden = true;
    const tick = vi.fn();
    startPolling(tick, 2000, doc);
    vi.advanceTimersByTime(10_000);
    expect(tick).not.toHaveBeenCalled();
  });
});
