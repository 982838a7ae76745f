import { useCallback, useEffect, useState } from 'react';
import { explain, type Client, type DeadLetter, type DeadLetterList, type RedriveOutcome } from './api';
import type { OnError } from './App';
import * as fmt from './format';

/** `active`: the section is shown; the queue is read each time it is (a listing peeks at the broker's queue). */
export function DeadLetters({ api, onError, active }: { api: Client; onError: OnError; active: boolean }) {
  const [list, setList] = useState<DeadLetterList | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [outcomes, setOutcomes] = useState<RedriveOutcome[] | null>(null);
  const [busy, setBusy] = useState(false);

  const load = useCallback(async () => {
    setError(null);
    try {
      setList(await api.get<DeadLetterList>('/api/v1/admin/dead-letters?limit=100'));
    } catch (e) {
      setList(null);
      setError(explain(e));
      onError(e);
    }
  }, [api, onError]);
  useEffect(() => {
    if (active) void load();
  }, [active, load]);

  const redrive = async (body: { ids: string[] } | { all: true }) => {
    setBusy(true);
    setError(null);
    try {
      const r = await api.post<{ results: RedriveOutcome[] }>('/api/v1/admin/dead-letters/redrive', body);
      setOutcomes(r.results);
      setSelected(new Set());
      await load();
    } catch (e) {
      setError(explain(e));
      onError(e);
    } finally {
      setBusy(false);
    }
  };
  const toggle = (id: string) =>
    setSelected((s) => {
      const n = new Set(s);
      if (n.has(id)) n.delete(id);
      else n.add(id);
      return n;
    });

  return (
    <section aria-labelledby="dl-title">
      <h2 id="dl-title">Dead letters</h2>
      <p className="muted">
        Events Herald could not route, with the reason. After fixing a rule or teaching an alias, send them back to
        Herald's queue (only Herald gets them again, routed as first published): each is removed only once the broker
        confirmed its republish.
      </p>
      <div className="row">
        <button onClick={() => void load()} disabled={busy}>
          Refresh
        </button>
        <button onClick={() => void redrive({ ids: [...selected] })} disabled={busy || selected.size === 0}>
          Re-drive selected ({selected.size})
        </button>
        <button onClick={() => void redrive({ all: true })} disabled={busy || !list || list.letters.length === 0}>
          Re-drive all
        </button>
      </div>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {outcomes && (
        <div className="card" role="status" aria-label="Re-drive outcomes">
          <h3>Re-drive</h3>
          <ul className="outcomes">
            {outcomes.map((o) => (
              <li key={o.id} className={o.outcome} data-letter={o.id}>
                <span className="mono">{o.id}</span>: {OUTCOME[o.outcome] ?? o.outcome}
                {o.message && ` — ${o.message}`}
              </li>
            ))}
          </ul>
        </div>
      )}
      {list && (
        <p className="muted small" data-testid="dl-total">
          {list.total} in <span className="mono">{list.queue}</span>
          {list.letters.length < list.total && `, ${list.letters.length} shown`}
        </p>
      )}
      {list && list.letters.length === 0 && <p className="muted">The dead-letter queue is empty.</p>}
      <ul className="letters">
        {list?.letters.map((l) => (
          <Letter key={l.id} letter={l} checked={selected.has(l.id)} onToggle={() => toggle(l.id)} />
        ))}
      </ul>
    </section>
  );
}

const OUTCOME: Record<string, string> = {
  redriven: 're-driven (republished and removed)',
  not_found: 'not found (already gone, or held by another call)',
  failed: 'failed: it stays in the queue',
};

function Letter({ letter: l, checked, onToggle }: { letter: DeadLetter; checked: boolean; onToggle: () => void }) {
  const body = l.body_encoding === 'base64' ? `(base64) ${l.body}` : prettyJson(l.body);
  return (
    <li className="card letter" data-letter={l.id}>
      <label className="pick">
        <input type="checkbox" checked={checked} onChange={onToggle} aria-label={`Select ${l.id}`} />
        <span className="mono">{l.id}</span>
      </label>
      <div className="reason">
        <span className="badge">{l.reason}</span> {l.error}
      </div>
      <div className="small muted">
        {l.exchange || '(default exchange)'} · <span className="mono">{l.routing_key}</span> · dead-lettered{' '}
        {l.deaths}×{l.retries > 0 && ` after ${l.retries} ${l.retries === 1 ? 'retry' : 'retries'}`} · first {fmt.timestamp(l.first_dead_lettered_at)} ·{' '}
        {fmt.bytes(l.size)}
        {l.event_id && ` · event ${l.event_id}`}
      </div>
      <details>
        <summary>Body{l.body_truncated && ` (the first 64 KiB of ${fmt.bytes(l.size)})`}</summary>
        <pre>{body}</pre>
      </details>
    </li>
  );
}

function prettyJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
