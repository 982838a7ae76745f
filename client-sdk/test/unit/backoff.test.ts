import { describe, expect, it } from 'vitest';
import { backoff, utf8Length } from '../../src/utils';

const opts = { minDelayMs: 500, maxDelayMs: 20_000 };

describe('backoff', () => {
  it('stays within [min, max] for any attempt and any random value', () => {
    for (let attempt = 0; attempt < 100; attempt++) {
      for (const r of [0, 0.25, 0.5, 0.999999]) {
        const d = backoff(attempt, opts, () => r);
        expect(d).toBeGreaterThanOrEqual(opts.minDelayMs);
        expect(d).toBeLessThanOrEqual(opts.maxDelayMs);
      }
    }
  });

  it('grows exponentially: the jitter ceiling doubles per attempt until max', () => {
    const top = (attempt: number) => backoff(attempt, opts, () => 1);
    expect([0, 1, 2, 3, 4, 5, 6].map(top)).toEqual([1000, 1500, 2500, 4500, 8500, 16_500, 20_000]);
    expect(top(1000)).toBe(20_000); // huge attempts do not overflow
  });

  it('is full jitter: the random value spreads the delay over the whole window', () => {
    // attempt 3: window [500, 500 + 4000]
    expect(backoff(3, opts, () => 0)).toBe(500);
    expect(backoff(3, opts, () => 0.5)).toBe(2500);
    expect(backoff(3, opts, () => 0.75)).toBe(3500);
  });

  it('is pure: same inputs, same output', () => {
    expect(backoff(4, opts, () => 0.3)).toBe(backoff(4, opts, () => 0.3));
  });

  it('uses Math.random by default, still bounded', () => {
    const d = backoff(2, { minDelayMs: 100, maxDelayMs: 300 });
    expect(d).toBeGreaterThanOrEqual(100);
    expect(d).toBeLessThanOrEqual(300);
  });
});

describe('utf8Length', () => {
  it('counts the bytes TextEncoder would, without needing TextEncoder (a page or vm without it)', () => {
    const samples = ['', 'abc', 'é', 'ユーザー 7', '😀x', '\ud800', 'a\udc00b', 'x'.repeat(300)];
    for (const s of samples) {
      expect(utf8Length(s), JSON.stringify(s)).toBe(new TextEncoder().encode(s).length);
    }
  });
});
