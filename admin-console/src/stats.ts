// What the overview draws from two snapshots of GET /api/v1/admin/stats: counters are totals since the node
// started, so rates and the latency of the last interval come from differences between polls.

import type { Bucket, Stats } from './api';

/** The counters the overview shows, in order. */
export const COUNTERS = [
  ['events_received', 'Events received'],
  ['notifications_stored', 'Notifications stored'],
  ['deliveries', 'Live deliveries'],
  ['dead_lettered', 'Dead-lettered'],
] as const satisfies readonly (readonly [keyof Stats, string])[];

export type CounterKey = (typeof COUNTERS)[number][0];

/** Per-second rates between two snapshots; null when there is no earlier one or the node restarted. */
export function rates(prev: Stats | null, next: Stats): Record<CounterKey, number | null> {
  const out = {} as Record<CounterKey, number | null>;
  const secs = prev ? (Date.parse(next.at) - Date.parse(prev.at)) / 1000 : 0;
  for (const [key] of COUNTERS) {
    const a = prev?.[key];
    const b = next[key];
    // A counter going down: the node restarted (or another node answered): no rate for this interval.
    out[key] = prev && secs > 0 && typeof a === 'number' && b >= a ? (b - a) / secs : null;
  }
  return out;
}

/**
 * PromQL's `histogram_quantile` over cumulative buckets: linear within the bucket the rank falls in, the first
 * bucket starting at 0; past the last finite bound, that bound. Null without observations.
 */
export function quantile(q: number, buckets: Bucket[], count: number): number | null {
  if (count <= 0) return null;
  const rank = q * count;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      const inBucket = b.count - prevCount;
      const frac = inBucket > 0 ? (rank - prevCount) / inBucket : 1;
      return prevLe + (b.le - prevLe) * frac;
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

export interface LatencyPoint {
  /** Milliseconds since the epoch (the snapshot's `at`). */
  t: number;
  /** Deliveries observed in the interval. */
  count: number;
  p50: number | null;
  p99: number | null;
}

/**
 * The delivery latency of the interval between two snapshots: the buckets' differences. The first snapshot
 * (or one after a restart) gives the latency since the node started.
 */
export function intervalLatency(prev: Stats | null, next: Stats): LatencyPoint {
  const a = prev?.delivery_latency;
  const b = next.delivery_latency;
  const restarted = !a || b.count < a.count;
  const buckets = b.buckets.map((bk) => {
    const before = restarted ? 0 : (a.buckets.find((x) => x.le === bk.le)?.count ?? 0);
    return { le: bk.le, count: Math.max(0, bk.count - before) };
  });
  const count = restarted ? b.count : b.count - a.count;
  return {
    t: Date.parse(next.at),
    count,
    p50: quantile(0.5, buckets, count),
    p99: quantile(0.99, buckets, count),
  };
}

/** A bounded series: the newest `max` points. */
export function pushPoint<T>(series: T[], point: T, max: number): T[] {
  const out = series.length >= max ? series.slice(series.length - max + 1) : series.slice();
  out.push(point);
  return out;
}

export interface ChartGeometry {
  /** SVG path `d` for p50 and p99 (empty when nothing to draw). */
  p50: string;
  p99: string;
  /** Every point drawn, so an interval between two gaps still shows. */
  dots: { x: number; y: number; series: 'p50' | 'p99' }[];
  /** The y axis's top, in seconds. */
  max: number;
}

/**
 * The chart's paths in a `width` × `height` box: x by time over the series, y linear from 0 to a rounded
 * maximum. Intervals without deliveries break the lines.
 */
export function chartPaths(points: LatencyPoint[], width: number, height: number): ChartGeometry {
  const values = points.flatMap((p) => [p.p50, p.p99]).filter((v): v is number => v !== null);
  const max = niceCeil(Math.max(0.001, ...values));
  if (points.length === 0) return { p50: '', p99: '', dots: [], max };
  const t0 = points[0]!.t;
  const span = Math.max(1, points[points.length - 1]!.t - t0);
  const x = (t: number) => (points.length === 1 ? width : ((t - t0) / span) * width);
  const y = (v: number) => height - (v / max) * height;
  const path = (pick: (p: LatencyPoint) => number | null) => {
    let d = '';
    let pen = false;
    for (const p of points) {
      const v = pick(p);
      if (v === null) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    return d;
  };
  const dots: ChartGeometry['dots'] = [];
  for (const p of points) {
    for (const series of ['p50', 'p99'] as const) {
      const v = p[series];
      if (v !== null) dots.push({ x: Number(x(p.t).toFixed(1)), y: Number(y(v).toFixed(1)), series });
    }
  }
  return { p50: path((p) => p.p50), p99: path((p) => p.p99), dots, max };
}

/** 1, 2 or 5 times a power of ten, at least `v`. */
export function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v - 1e-12) return m * p;
  return 10 * p;
}
