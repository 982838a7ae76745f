import { describe, expect, it } from 'vitest';
import type { Stats } from './api';
import { chartPaths, intervalLatency, niceCeil, pushPoint, quantile, rates } from './stats';

function snap(at: string, over: Partial<Stats> = {}, buckets: [number, number][] = [], count = 0): Stats {
  return {
    at,
    events_received: 0,
    events_by_outcome: {},
    events_refused: 0,
    notifications_stored: 0,
    deliveries: 0,
    replayed: 0,
    dead_lettered: 0,
    sessions_open: 0,
    users_online: 0,
    delivery_latency: {
      count,
      sum_seconds: 0,
      buckets: buckets.map(([le, c]) => ({ le, count: c })),
      p50: null,
      p90: null,
      p99: null,
    },
    ...over,
  };
}

describe('rates', () => {
  it('are the counters’ differences per second between two snapshots', () => {
    const a = snap('2026-11-29T04:00:00Z', { events_received: 10, deliveries: 4 });
    const b = snap('2026-11-29T04:00:02Z', { events_received: 30, deliveries: 5 });
    const r = rates(a, b);
    expect(r.events_received).toBe(10);
    expect(r.deliveries).toBe(0.5);
    expect(r.dead_lettered).toBe(0);
  });
  it('are unknown for the first snapshot and after a restart (a counter going down)', () => {
    const b = snap('2026-11-29T04:00:02Z', { events_received: 3 });
    expect(rates(null, b).events_received).toBeNull();
    const a = snap('2026-11-29T04:00:00Z', { events_received: 100 });
    expect(rates(a, b).events_received).toBeNull();
  });
});

describe('quantile', () => {
  const buckets = [
    { le: 0.001, count: 2 },
    { le: 0.005, count: 6 },
    { le: 0.01, count: 10 },
  ];
  it('interpolates within the bucket the rank falls in, as PromQL does (same numbers as the server)', () => {
    expect(quantile(0.5, buckets, 10)).toBeCloseTo(0.004, 12);
    expect(quantile(0.99, buckets, 10)).toBeCloseTo(0.009875, 12);
    expect(quantile(0.1, buckets, 10)).toBeCloseTo(0.0005, 12);
  });
  it('answers the last bound past it, and nothing without observations', () => {
    expect(quantile(0.99, [{ le: 0.1, count: 1 }], 4)).toBe(0.1);
    expect(quantile(0.5, buckets, 0)).toBeNull();
  });
});

describe('intervalLatency', () => {
  it('is the latency of the deliveries between two polls, not since start', () => {
    // Before: 100 fast deliveries. In the interval: 10 more, all between 5 and 10 ms.
    const a = snap('2026-11-29T04:00:00Z', {}, [[0.001, 100], [0.005, 100], [0.01, 100]], 100);
    const b = snap('2026-11-29T04:00:02Z', {}, [[0.001, 100], [0.005, 100], [0.01, 110]], 110);
    const p = intervalLatency(a, b);
    expect(p.count).toBe(10);
    expect(p.p50).toBeCloseTo(0.0075, 12);
    expect(p.t).toBe(Date.parse('2026-11-29T04:00:02Z'));
  });
  it('has no quantile for an interval without deliveries, and restarts from the totals after a restart', () => {
    const a = snap('2026-11-29T04:00:00Z', {}, [[0.01, 5]], 5);
    expect(intervalLatency(a, a).p99).toBeNull();
    const restarted = snap('2026-11-29T04:00:02Z', {}, [[0.01, 2]], 2);
    expect(intervalLatency(a, restarted).count).toBe(2);
  });
});

describe('the chart', () => {
  it('keeps the newest points only', () => {
    let s: number[] = [];
    for (let i = 0; i < 5; i++) s = pushPoint(s, i, 3);
    expect(s).toEqual([2, 3, 4]);
  });
  it('scales to a round maximum and breaks the line where an interval had no delivery', () => {
    const pts = [
      { t: 0, count: 1, p50: 0.002, p99: 0.004 },
      { t: 1000, count: 0, p50: null, p99: null },
      { t: 2000, count: 1, p50: 0.001, p99: 0.003 },
    ];
    const g = chartPaths(pts, 100, 50);
    expect(g.max).toBe(0.005);
    expect(g.p50).toBe('M0.0,30.0M100.0,40.0');
    expect(g.p99).toBe('M0.0,10.0M100.0,20.0');
    expect(g.dots).toContainEqual({ x: 100, y: 40, series: 'p50' });
    expect(g.dots).toHaveLength(4);
  });
  it('rounds maxima up to 1, 2 or 5 times a power of ten', () => {
    expect(niceCeil(0.0031)).toBe(0.005);
    expect(niceCeil(0.012)).toBeCloseTo(0.02, 12);
    expect(niceCeil(0.5)).toBe(0.5);
    expect(niceCeil(7)).toBe(10);
  });
});
