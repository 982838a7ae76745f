import { useId, useState, type FormEvent } from 'react';
import { userIdProblem } from '../fixtures';
import { shortId } from '../format';
import { BrandMark } from './BrandMark';

/** The user ids the fixtures name, so every fixture routes to one of them unchanged. */
export const QUICK_PICKS = [
  { id: '0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40', who: 'John Doe', role: 'MedTrack student' },
  { id: '3e7a1b2c-4d5e-4f6a-8b7c-9d0e1f2a3b4c', who: 'Referee', role: 'SGAD referee' },
  { id: '123', who: 'john_doe', role: 'Django user' },
  { id: '42', who: 'ana', role: 'Domain-events user' },
];

export function SignIn({
  onSignIn,
  busy,
  error,
}: {
  onSignIn: (userId: string) => void;
  busy: boolean;
  error: string | null;
}) {
  const [value, setValue] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const inputId = useId();
  const hintId = useId();
  const errorId = useId();

  const submit = (id: string) => {
    const p = userIdProblem(id.trim());
    setProblem(p);
    if (!p) onSignIn(id.trim());
  };
  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    submit(value);
  };
  const message = problem ?? error;

  return (
    <main className="signin">
      <div className="signin-card">
        <p className="brand">
          <BrandMark />
          Herald
        </p>
        <h1>Events in. Notifications out. Live in every tab.</h1>
        <p className="lede">
          Sign in as any user, publish the events real services send, and watch Herald's routing rules turn them into
          notifications that arrive in this tab (and every other tab of that user) within milliseconds.
        </p>

        <form onSubmit={onSubmit} noValidate>
          <label htmlFor={inputId}>User id</label>
          <div className="signin-row">
            <input
              id={inputId}
              name="user_id"
              value={value}
              onChange={(e) => setValue(e.target.value)}
              autoComplete="username"
              spellCheck={false}
              placeholder="e.g. alice"
              aria-describedby={`${hintId}${message ? ` ${errorId}` : ''}`}
              aria-invalid={problem ? true : undefined}
            />
            <button type="submit" className="btn primary" disabled={busy}>
              {busy ? 'Signing in…' : 'Sign in'}
            </button>
          </div>
          <p id={hintId} className="hint">
            A development token is minted by this Herald (<code>auth.dev_token_endpoint</code>). No password.
          </p>
          {message && (
            <p id={errorId} className="error" role="alert">
              {message}
            </p>
          )}
        </form>

        <h2 className="picks-title">Or pick a user from the fixtures</h2>
        <ul className="picks">
          {QUICK_PICKS.map((p) => (
            <li key={p.id}>
              <button type="button" className="pick" disabled={busy} onClick={() => submit(p.id)}>
                <span className="pick-who">{p.who}</span>
                <span className="pick-role">{p.role}</span>
                <code className="pick-id" title={p.id}>
                  {shortId(p.id)}
                </code>
              </button>
            </li>
          ))}
        </ul>
      </div>
    </main>
  );
}
