import { useState } from 'react';
import { ApiError, explain, type Client, type Trace } from './api';
import type { OnError } from './App';
import * as fmt from './format';
import { timeline, verdict } from './trace';

type Mode = 'event' | 'user';

export function TraceSearch({ api, onError }: { api: Client; onError: OnError }) {
  const [mode, setMode] = useState<Mode>('event');
  const [query, setQuery] = useState('');
  const [result, setResult] = useState<{ mode: Mode; query: string; traces: Trace[] } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const search = async (e: React.FormEvent) => {
    e.preventDefault();
    const q = query.trim();
    if (!q) return setError(mode === 'event' ? 'Enter an event id.' : 'Enter a user id.');
    setBusy(true);
    setError(null);
    try {
      const path =
        mode === 'event'
          ? `/api/v1/admin/events/${encodeURIComponent(q)}/trace`
          : `/api/v1/admin/users/${encodeURIComponent(q)}/trace?limit=20`;
      const body = await api.get<{ traces: Trace[] }>(path);
      setResult({ mode, query: q, traces: body.traces });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && mode === 'event') {
        setResult({ mode, query: q, traces: [] });
      } else {
        setResult(null);
        setError(explain(err));
        onError(err);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="trace-title">
      <h2 id="trace-title">Trace an event</h2>
      <p className="muted">Why did a user not get a notification? Search by the event's id, or by the user.</p>
      <form className="row" onSubmit={search}>
        <fieldset className="segmented">
          <legend className="visually-hidden">Search by</legend>
          <label>
            <input type="radio" name="mode" checked={mode === 'event'} onChange={() => setMode('event')} /> By event id
          </label>
          <label>
            <input type="radio" name="mode" checked={mode === 'user'} onChange={() => setMode('user')} /> By user
          </label>
        </fieldset>
        <input
          aria-label={mode === 'event' ? 'Event id' : 'User id'}
          placeholder={mode === 'event' ? 'e.g. 8d1c…' : 'e.g. alice'}
          value={query}
          onChange={(e) => setQuery(e.target.value)}
          spellCheck={false}
        />
        <button type="submit" disabled={busy}>
          {busy ? 'Searching…' : 'Search'}
        </button>
      </form>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {result && result.traces.length === 0 && (
        <p className="muted" role="status">
          {result.mode === 'event'
            ? `No trace retained for event ${result.query}.`
            : `No trace retained for user ${result.query}.`}
        </p>
      )}
      {result?.traces.map((t) => (
        <TraceCard key={t.trace_id} trace={t} user={result.mode === 'user' ? result.query : undefined} />
      ))}
    </section>
  );
}

function TraceCard({ trace, user }: { trace: Trace; user?: string }) {
  const v = verdict(trace, user);
  return (
    <article className="card trace" data-event-id={trace.event_id}>
      <header>
        <h3 className="mono">{trace.event_id}</h3>
        <span className="muted small">{fmt.timestamp(trace.received_at)}</span>
      </header>
      <p className={`verdict ${v.tone}`} data-testid="trace-verdict">
        {v.text}
      </p>
      <ol className="timeline">
        {timeline(trace, user).map((s, i) => (
          <li key={i} className={s.tone}>
            <span className="dot" aria-hidden="true" />
            <div>
              <strong>{s.title}</strong>
              {s.at && <span className="muted small"> {s.at}</span>}
              {s.detail && <div className="small">{s.detail}</div>}
            </div>
          </li>
        ))}
      </ol>
    </article>
  );
}
