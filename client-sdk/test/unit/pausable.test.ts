import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { pausableTimeout } from '../../src/ui/shared';

describe('pausableTimeout', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('fires once after its time when never paused', () => {
    const fn = vi.fn();
    pausableTimeout(fn, 5000);
    vi.advanceTimersByTime(4999);
    expect(fn).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fn).toHaveBeenCalledTimes(1);
  });

  it('does not fire while paused, however long', () => {
    const fn = vi.fn();
    const t = pausableTimeout(fn, 5000);
    vi.advanceTimersByTime(1000);
    t.pause();
    vi.advanceTimersByTime(60_000);
    expect(fn).not.toHaveBeenCalled();
  });

  it('resumes with the time that was left, not a fresh full time', () => {
    const fn = vi.fn();
    const t = pausableTimeout(fn, 5000);
    vi.advanceTimersByTime(3000);
    t.pause();
    vi.advanceTimersByTime(10_000);
    t.resume();
    vi.advanceTimersByTime(1999);
    expect(fn).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fn).toHaveBeenCalledTimes(1);
  });

  it('never fires once cancelled, even if resumed', () => {
    const fn = vi.fn();
    const t = pausableTimeout(fn, 5000);
    t.cancel();
    t.resume();
    vi.advanceTimersByTime(10_000);
    expect(fn).not.toHaveBeenCalled();
  });
});
