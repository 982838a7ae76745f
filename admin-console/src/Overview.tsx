import { useEffect, useRef, useState } from 'react';
import { explain, type Client, type Presence, type Stats } from './api';
import type { OnError } from './App';
import * as fmt from './format';
import { usePoll } from './poll';
import { COUNTERS, chartPaths, intervalLatency, pushPoint, rates, type LatencyPoint } from './stats';

/** Two minutes of 2-second polls. */
const POINTS = 60;
const POLL_MS = 2000;

export function Overview({ api, onError }: { api: Client; onError: OnError }) {
  const [stats, setStats] = useState<{ prev: Stats | null; now: Stats } | null>(null);
  const [series, setSeries] = useState<LatencyPoint[]>([]);
  const [presence, setPresence] = useState<Presence | null>(null);
  const [error, setError] = useState<string | null>(null);
  const last = useRef<Stats | null>(null);
  const [presenceError, setPresenceError] = useState<string | null>(null);

  usePoll(async () => {
    try {
      const now = await api.get<Stats>('/api/v1/admin/stats');
      const prev = last.current;
      last.current = now;
      setStats({ prev, now });
      setSeries((pts) => pushPoint(pts, intervalLatency(prev, now), POINTS));
      setError(null);
    } catch (e) {
      setError(explain(e));
      onError(e);
    }
  }, POLL_MS);
  usePoll(async () => {
    try {
      setPresence(await api.get<Presence>('/api/v1/admin/presence'));
      setPresenceError(null);
    } catch (e) {
      setPresenceError(explain(e));
      onError(e);
    }
  }, POLL_MS);

  const r = stats ? rates(stats.prev, stats.now) : null;
  const s = stats?.now;
  return (
    <section aria-labelledby="overview-title" className="overview">
      <h2 id="overview-title" className="visually-hidden">
        Overview
      </h2>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      <div className="counters">
        {COUNTERS.map(([key, label]) => (
          <div className="counter" key={key} data-counter={key}>
            <div className="label">{label}</div>
            <div className="value">{s ? fmt.count(s[key]) : '…'}</div>
            <div className="rate">{r ? fmt.rate(r[key]) : ''}</div>
          </div>
        ))}
        <div className="counter" data-counter="sessions_open">
          <div className="label">Sessions open</div>
          <div className="value">{s ? fmt.count(s.sessions_open) : '…'}</div>
          <div className="rate">{s ? fmt.plural(s.users_online, 'user') : ''}</div>
        </div>
      </div>

      <div className="card">
        <h3>Delivery latency</h3>
        <p className="muted small">
          Commit to session write, per 2-second interval. Since start: p50 {fmt.seconds(s?.delivery_latency.p50)}, p90{' '}
          {fmt.seconds(s?.delivery_latency.p90)}, p99 {fmt.seconds(s?.delivery_latency.p99)} over{' '}
          {fmt.count(s?.delivery_latency.count ?? 0)} deliveries.
        </p>
        <LatencyChart points={series} />
      </div>

      <div className="grid2">
        <div className="card">
          <h3>Events by outcome</h3>
          {s && Object.keys(s.events_by_outcome).length + s.events_refused > 0 ? (
            <table className="kv">
              <tbody>
                {Object.entries(s.events_by_outcome).map(([k, v]) => (
                  <tr key={k}>
                    <th scope="row">{k.replace(/_/g, ' ')}</th>
                    <td>{fmt.count(v)}</td>
                  </tr>
                ))}
                <tr>
                  <th scope="row">refused (4xx, dead letter)</th>
                  <td>{fmt.count(s.events_refused)}</td>
                </tr>
              </tbody>
            </table>
          ) : (
            <p className="muted">No event yet.</p>
          )}
        </div>
        <div className="card">
          <h3>Presence</h3>
          {presenceError && <p className="error">{presenceError}</p>}
          {presence ? (
            <>
              <p className="muted small" data-testid="presence-total">
                {fmt.plural(presence.users_online, 'user')}, {fmt.plural(presence.sessions_online, 'session')} on{' '}
                {fmt.plural(presence.nodes.length, 'node')}
              </p>
              <table className="list">
                <thead>
                  <tr>
                    <th scope="col">Node</th>
                    <th scope="col">Users</th>
                    <th scope="col">Sessions</th>
                    <th scope="col">Reported</th>
                  </tr>
                </thead>
                <tbody>
                  {presence.nodes.map((n) => (
                    <tr key={n.node}>
                      <td className="mono">{n.node}</td>
                      <td>{fmt.count(n.users)}</td>
                      <td>{fmt.count(n.sessions)}</td>
                      <td>{fmt.ago(n.reported_at, Date.now())}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          ) : (
            !presenceError && <p className="muted">Loading…</p>
          )}
        </div>
      </div>
    </section>
  );
}

const H = 160;
/** Room for the y axis's labels, left of the plot. */
const AXIS = 52;

/** The element's width in CSS pixels, kept current (the chart is drawn at its real size, so text stays legible). */
function useWidth<T extends HTMLElement>(fallback: number) {
  const ref = useRef<T>(null);
  const [width, setWidth] = useState(fallback);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(([entry]) => entry && setWidth(Math.max(120, Math.floor(entry.contentRect.width))));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  return [ref, width] as const;
}

function LatencyChart({ points }: { points: LatencyPoint[] }) {
  const [ref, width] = useWidth<HTMLElement>(600);
  const W = width - AXIS - 8;
  const g = chartPaths(points, W, H);
  const last = points[points.length - 1];
  return (
    <figure className="chart" ref={ref}>
      <svg
        width={width}
        height={H + 28}
        viewBox={`${-AXIS} -8 ${width} ${H + 28}`}
        role="img"
        aria-label="Delivery latency, p50 and p99, last two minutes"
      >
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line x1={0} x2={W} y1={H - f * H} y2={H - f * H} className="grid" />
            <text x={-6} y={H - f * H + 4} className="axis" textAnchor="end">
              {fmt.seconds(f * g.max)}
            </text>
          </g>
        ))}
        <path d={g.p99} className="line p99" />
        <path d={g.p50} className="line p50" />
        {g.dots.map((d, i) => (
          <circle key={i} cx={d.x} cy={d.y} r={2.5} className={`dot ${d.series}`} />
        ))}
        {points.length > 1 && (
          <text x={0} y={H + 16} className="axis">
            {Math.round((points[points.length - 1]!.t - points[0]!.t) / 1000)} s ago
          </text>
        )}
        <text x={W} y={H + 16} className="axis" textAnchor="end">
          now
        </text>
      </svg>
      <figcaption className="legend small">
        <span className="key p50" /> p50 {fmt.seconds(last?.p50)} <span className="key p99" /> p99 {fmt.seconds(last?.p99)}
        <span className="muted"> · {last ? `${fmt.count(last.count)} deliveries in the last interval` : 'waiting for data'}</span>
      </figcaption>
    </figure>
  );
}
