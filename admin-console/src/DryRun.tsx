import { useState } from 'react';
import { explain, type Client, type DryRunResult } from './api';
import type { OnError } from './App';
import { dryRunHeadline, parseEventInput } from './dryrun';

const EXAMPLE = `{
  "event_type": "user.registered",
  "timestamp": "2026-11-29T10:00:00Z",
  "source": "accounts",
  "user_id": 42,
  "data": {"email": "ana@example.com"}
}`;

export function DryRun({ api, onError }: { api: Client; onError: OnError }) {
  const [event, setEvent] = useState(EXAMPLE);
  const [routingKey, setRoutingKey] = useState('');
  const [exchange, setExchange] = useState('');
  const [result, setResult] = useState<DryRunResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const run = async (e: React.FormEvent) => {
    e.preventDefault();
    const parsed = parseEventInput(event, routingKey, exchange);
    if ('error' in parsed) {
      setResult(null);
      return setError(parsed.error);
    }
    setBusy(true);
    setError(null);
    try {
      setResult(await api.post<DryRunResult>('/api/v1/admin/rules/dry-run', parsed.body));
    } catch (err) {
      setResult(null);
      setError(explain(err));
      onError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="dry-title">
      <h2 id="dry-title">Rules dry run</h2>
      <p className="muted">
        Paste an event as a service publishes it: see which rule matches and the notification it would make. Nothing is
        stored or sent.
      </p>
      <form onSubmit={run} className="dryrun">
        <label htmlFor="dry-event">Event (JSON)</label>
        <textarea id="dry-event" rows={10} spellCheck={false} value={event} onChange={(e) => setEvent(e.target.value)} />
        <div className="row">
          <label>
            Routing key
            <input value={routingKey} onChange={(e) => setRoutingKey(e.target.value)} placeholder="from the event" />
          </label>
          <label>
            Exchange
            <input value={exchange} onChange={(e) => setExchange(e.target.value)} placeholder="none: as HTTP ingest" />
          </label>
        </div>
        <button type="submit" disabled={busy}>
          {busy ? 'Running…' : 'Dry run'}
        </button>
      </form>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {result && <DryRunVerdict r={result} />}
    </section>
  );
}

function DryRunVerdict({ r }: { r: DryRunResult }) {
  const v = r.verdict;
  const tone = r.dead_letter ? 'fail' : v.outcome === 'unmatched' || v.outcome === 'ignored' ? 'warn' : 'ok';
  return (
    <div className="card" data-testid="dry-run-result">
      <p className={`verdict ${tone}`}>{dryRunHeadline(r)}</p>
      {(v.outcome === 'stored' || v.outcome === 'live') && (
        <dl className="kv">
          <dt>Recipients</dt>
          <dd>{v.recipients?.join(', ')}</dd>
          <dt>Title</dt>
          <dd>{v.title}</dd>
          {v.content && (
            <>
              <dt>Content</dt>
              <dd>{v.content}</dd>
            </>
          )}
          {v.type && (
            <>
              <dt>Type</dt>
              <dd>{v.type}</dd>
            </>
          )}
          <dt>Event type</dt>
          <dd>{v.event_type}</dd>
        </dl>
      )}
      {r.event && (
        <p className="small muted">
          Decoded as {r.transport.toUpperCase()}: id <span className="mono">{r.event.id}</span>, routing key{' '}
          <span className="mono">{r.event.routing_key || '—'}</span>, shape {r.event.shape}
        </p>
      )}
      <pre className="small">{r.report}</pre>
    </div>
  );
}
