import { useEffect, useId, useMemo, useRef, useState } from 'react';
import { ApiError, publishEvent, randomId, type PublishResult } from '../api';
import { CATALOG, type CatalogEntry } from '../catalog';
import { personalize, type Personalized } from '../fixtures';
import { blocked, type Link } from '../link';

interface Sent {
  /** Unique per attempt (a resend is a new log entry). */
  key: string;
  entry: CatalogEntry;
  request: Personalized;
  idempotencyKey: string;
  resend: boolean;
  outcome: { ok: true; results: PublishResult[] } | { ok: false; status: number; code: string; message: string };
}

const STATUS_TEXT: Record<string, string> = {
  stored: 'stored',
  duplicate: 'duplicate: already stored, nothing new',
  purged: 'purged: the inbox was erased',
  ignored: 'ignored by a rule',
  unmatched: 'no rule matched',
};

export function PublishPanel({
  link,
  userId,
  getToken,
  onPurged,
}: {
  link: Link;
  userId: string;
  getToken: () => Promise<string>;
  onPurged: () => void;
}) {
  const [log, setLog] = useState<Sent[]>([]);
  const [busy, setBusy] = useState<string | null>(null);
  const down = blocked(link);

  const send = async (entry: CatalogEntry, request: Personalized, idempotencyKey: string, resend: boolean) => {
    setBusy(entry.name);
    let outcome: Sent['outcome'];
    try {
      const results = await publishEvent(getToken, {
        exchange: request.exchange,
        routingKey: request.routingKey,
        body: request.body,
        idempotencyKey,
      });
      outcome = { ok: true, results };
      if (results.some((r) => r.status === 'purged')) onPurged();
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(0, 'error', String(e));
      outcome = { ok: false, status: err.status, code: err.code, message: err.message };
    } finally {
      setBusy(null);
    }
    setLog((l) => [{ key: randomId(), entry, request, idempotencyKey, resend, outcome }, ...l].slice(0, 6));
  };

  return (
    <section id="publish" className="panel publish" aria-labelledby="publish-title">
      <div className="panel-head">
        <h2 id="publish-title">
          <span className="step" aria-hidden="true">
            1
          </span>
          Publish an event
        </h2>
        <p className="panel-sub">
          Real payloads from <code>tests/fixtures/events</code>, with your user id put in. Herald's routing rules decide
          who gets what.
        </p>
      </div>

      {down && (
        <p className="offline-note" role="status" data-testid="publish-paused">
          {link === 'unauthorized'
            ? 'Signed out: sign in again to publish.'
            : "Can't reach the server: publishing is paused until the connection is back."}
        </p>
      )}

      <ul className="fixtures">
        {CATALOG.map((entry) => (
          <FixtureRow
            key={entry.name}
            entry={entry}
            userId={userId}
            busy={busy !== null || down}
            sending={busy === entry.name}
            latest={log.find((s) => s.entry.name === entry.name)}
            onSend={(req) => void send(entry, req, randomId(), false)}
          />
        ))}
      </ul>

      <h3 className="results-title" id="results-title">
        Routing results
      </h3>
      <ol className="results" aria-labelledby="results-title" data-testid="results">
        {log.length === 0 && <li className="hint">Nothing published yet.</li>}
        {log.map((s) => (
          <ResultRow
            key={s.key}
            sent={s}
            disabled={busy !== null || down}
            onResend={() => void send(s.entry, s.request, s.idempotencyKey, true)}
          />
        ))}
      </ol>
    </section>
  );
}

function FixtureRow({
  entry,
  userId,
  busy,
  sending,
  latest,
  onSend,
}: {
  entry: CatalogEntry;
  userId: string;
  busy: boolean;
  sending: boolean;
  /** This fixture's last publication, shown under its button. */
  latest: Sent | undefined;
  onSend: (req: Personalized) => void;
}) {
  const resultRef = useRef<HTMLParagraphElement>(null);
  // A new result appears where the visitor is looking: right under the button, scrolled into view if needed.
  useEffect(() => {
    if (!latest) return;
    const calm = window.matchMedia?.('(prefers-reduced-motion: reduce)').matches;
    resultRef.current?.scrollIntoView({ block: 'nearest', behavior: calm ? 'auto' : 'smooth' });
  }, [latest]);
  const request = useMemo(() => personalize(entry.fixture, userId), [entry, userId]);
  const [confirming, setConfirming] = useState(false);
  const descId = useId();
  useEffect(() => {
    if (!confirming) return;
    const t = setTimeout(() => setConfirming(false), 6000);
    return () => clearTimeout(t);
  }, [confirming]);

  const click = () => {
    if (entry.danger && !confirming) {
      setConfirming(true);
      return;
    }
    setConfirming(false);
    onSend(request);
  };

  return (
    <li className={`fixture${entry.danger ? ' fixture-danger' : ''}`} data-fixture={entry.name}>
      <div className="fixture-text">
        <h3 className="fixture-title">
          {entry.label}
          {request.broadcast && <span className="tag tag-everyone">everyone</span>}
        </h3>
        <p className="fixture-blurb" id={descId}>
          {entry.blurb}
        </p>
        <p className="fixture-route">
          <span className="visually-hidden">Exchange and routing key: </span>
          <code>{request.exchange || '(HTTP)'}</code>
          {request.routingKey && (
            <>
              <span aria-hidden="true"> → </span>
              <code className="rk">{request.routingKey}</code>
            </>
          )}
          <span className="fixture-service"> · {entry.service}</span>
        </p>
        <details className="fixture-body">
          <summary>Event body</summary>
          <pre>{JSON.stringify(request.body, null, 2)}</pre>
          {request.replaced.length > 0 && <p className="hint">Your id was put in: {request.replaced.join(', ')}.</p>}
          {request.renamed.length > 0 && (
            <p className="hint">The person's name was changed to yours: {request.renamed.join(', ')}.</p>
          )}
        </details>
        <p
          ref={resultRef}
          className={`inline-result${latest && !latest.outcome.ok ? ' inline-result-error' : ''}`}
          role="status"
          data-testid="inline-result"
          hidden={!latest}
        >
          {latest && outcomeLine(latest)}
        </p>
      </div>
      <div className="fixture-actions">
        <button
          type="button"
          className={`btn ${entry.danger ? (confirming ? 'danger-solid' : 'danger') : 'primary'}`}
          onClick={click}
          disabled={busy}
          aria-describedby={descId}
          aria-label={confirming ? `Confirm: ${entry.label}, erases your inbox` : `Publish: ${entry.label}`}
        >
          {sending ? 'Sending…' : confirming ? 'Erase inbox?' : 'Publish'}
        </button>
        {confirming && (
          <button type="button" className="btn small ghost" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        )}
      </div>
    </li>
  );
}

/** One line for a publication: what the routing did, or why it was refused. */
export function outcomeLine({ outcome, resend }: Pick<Sent, 'outcome' | 'resend'>): string {
  if (!outcome.ok)
    return `Refused${outcome.status ? ` (HTTP ${outcome.status} ${outcome.code})` : ''}: ${outcome.message}`;
  const parts = outcome.results.map((r) => {
    const status = STATUS_TEXT[r.status] ?? r.status;
    const ids = r.notification_ids.map((id) => `#${id}`).join(', ');
    return ids ? `${status} → notification${r.notification_ids.length > 1 ? 's' : ''} ${ids}` : status;
  });
  return `${resend ? 'Sent again: ' : ''}${parts.join('; ') || 'no result'}. Details in Routing results below.`;
}

function ResultRow({ sent, disabled, onResend }: { sent: Sent; disabled: boolean; onResend: () => void }) {
  const { entry, outcome, resend } = sent;
  if (!outcome.ok) {
    return (
      <li className="result result-error" data-testid="result">
        <p>
          <strong>{entry.label}</strong>: refused{outcome.status ? ` (HTTP ${outcome.status} ${outcome.code})` : ''}
        </p>
        <p className="hint">{outcome.message}</p>
      </li>
    );
  }
  return (
    <li className="result" data-testid="result">
      {outcome.results.map((r) => (
        <div key={r.event_id}>
          <p>
            <strong>{entry.label}</strong>
            {resend && ' (sent again)'}:{' '}
            <span className={`status status-${r.status}`}>{STATUS_TEXT[r.status] ?? r.status}</span>
            {r.notification_ids.length > 0 && (
              <>
                {' '}
                → notification{r.notification_ids.length > 1 ? 's' : ''}{' '}
                {r.notification_ids.map((id) => `#${id}`).join(', ')}
              </>
            )}
          </p>
          <p className="hint">
            HTTP 202 · event id <code>{r.event_id}</code>
          </p>
        </div>
      ))}
      {!resend && outcome.results.some((r) => r.status === 'stored') && (
        <button type="button" className="btn small ghost" onClick={onResend} disabled={disabled}>
          Send again with the same Idempotency-Key
        </button>
      )}
    </li>
  );
}
