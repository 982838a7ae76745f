import { useCallback, useMemo, useState } from 'react';
import { client, explain, isAuthError, type Client, type Stats } from './api';
import { forgetKey, loadKey, saveKey } from './session';
import { Overview } from './Overview';
import { TraceSearch } from './TraceSearch';
import { DeadLetters } from './DeadLetters';
import { DryRun } from './DryRun';

const TABS = [
  ['overview', 'Overview'],
  ['trace', 'Trace'],
  ['dead-letters', 'Dead letters'],
  ['dry-run', 'Rules dry run'],
] as const;
type Tab = (typeof TABS)[number][0];

function tabFromHash(): Tab {
  const h = location.hash.slice(1);
  return (TABS.find(([id]) => id === h)?.[0] ?? 'overview') as Tab;
}

export function App() {
  const [key, setKey] = useState<string | null>(() => loadKey());
  const [signOutReason, setSignOutReason] = useState<string | null>(null);
  const signOut = useCallback((reason: string | null = null) => {
    forgetKey();
    setKey(null);
    setSignOutReason(reason);
  }, []);
  const api = useMemo(() => (key ? client(key) : null), [key]);
  if (!api) {
    const signIn = (k: string) => {
      saveKey(k);
      setKey(k);
      setSignOutReason(null);
    };
    return <SignIn reason={signOutReason} onSignedIn={signIn} />;
  }
  return <Console api={api} onSignOut={signOut} />;
}

function SignIn({ reason, onSignedIn }: { reason: string | null; onSignedIn: (key: string) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | null>(reason);
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const k = value.trim();
    if (!k) return setError('Paste a service key with the `admin` scope.');
    setBusy(true);
    setError(null);
    try {
      // One admin call proves the key and its scope before the console opens.
      await client(k).get<Stats>('/api/v1/admin/stats');
      onSignedIn(k);
    } catch (err) {
      setError(explain(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="signin">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Herald admin</h1>
        <p className="muted">
          Sign in with a service key that has the <code>admin</code> scope. It stays in this tab only and is sent only to
          this server.
        </p>
        <label htmlFor="key">Service key</label>
        <input
          id="key"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          onChange={(e) => setValue(e.target.value)}
          autoFocus
        />
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

function Console({ api, onSignOut }: { api: Client; onSignOut: (reason?: string | null) => void }) {
  const [tab, setTab] = useState<Tab>(tabFromHash);
  const go = (t: Tab) => {
    history.replaceState(null, '', `#${t}`);
    setTab(t);
  };
  // A call refused for the key itself (revoked, scope removed) signs out with the reason.
  const onError = useCallback(
    (e: unknown) => {
      if (isAuthError(e)) onSignOut(explain(e));
    },
    [onSignOut],
  );
  return (
    <div className="console">
      <header className="top">
        <h1>Herald admin</h1>
        <nav aria-label="Sections">
          {TABS.map(([id, label]) => (
            <button
              key={id}
              className={id === tab ? 'tab active' : 'tab'}
              aria-current={id === tab ? 'page' : undefined}
              onClick={() => go(id)}
            >
              {label}
            </button>
          ))}
        </nav>
        <button className="signout" onClick={() => onSignOut(null)}>
          Sign out
        </button>
      </header>
      <main>
        {/* Every section stays mounted (hidden when not shown): a search, a dry run and the chart's history
            survive a change of tab. */}
        <div hidden={tab !== 'overview'}>
          <Overview api={api} onError={onError} />
        </div>
        <div hidden={tab !== 'trace'}>
          <TraceSearch api={api} onError={onError} />
        </div>
        <div hidden={tab !== 'dead-letters'}>
          <DeadLetters api={api} onError={onError} active={tab === 'dead-letters'} />
        </div>
        <div hidden={tab !== 'dry-run'}>
          <DryRun api={api} onError={onError} />
        </div>
      </main>
    </div>
  );
}

export type OnError = (e: unknown) => void;
