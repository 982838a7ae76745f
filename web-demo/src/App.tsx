import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { HeraldProvider, useConnectionState, useCounts, useInboxStore } from '@herald/client/react';
import { State, type HeraldClientOptions } from '@herald/client';
import { linkOf } from './link';
import { ApiError, GATEWAY_URL, mintToken, TokenSource } from './api';
import { SignIn } from './components/SignIn';
import { Header } from './components/Header';
import { Inbox } from './components/Inbox';
import { PublishPanel } from './components/PublishPanel';
import { Settings } from './components/Settings';
import { Toasts } from './components/Toasts';

const STORAGE_KEY = 'herald-demo:user';

function storedUser(): string | null {
  const fromUrl = new URLSearchParams(window.location.search).get('user');
  if (fromUrl) return fromUrl;
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

function remember(userId: string | null) {
  try {
    if (userId) window.localStorage.setItem(STORAGE_KEY, userId);
    else window.localStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage disabled: the visitor signs in again after a reload
  }
}

export function App() {
  const [tokens, setTokens] = useState<TokenSource | null>(null);
  const [booting, setBooting] = useState(() => storedUser() !== null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const signIn = useCallback(async (userId: string) => {
    setBusy(true);
    setError(null);
    try {
      const first = await mintToken(userId);
      remember(userId);
      setTokens(new TokenSource(userId, first));
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
      setBooting(false);
    }
  }, []);

  // Signed in before (this browser) or ?user= in the URL: sign in again at once, so a reload or a second tab
  // goes straight to the inbox.
  const booted = useRef(false);
  useEffect(() => {
    if (booted.current) return;
    booted.current = true;
    const user = storedUser();
    if (user) void signIn(user);
  }, [signIn]);

  const signOut = useCallback(() => {
    remember(null);
    if (new URLSearchParams(window.location.search).has('user')) window.history.replaceState(null, '', '/');
    setTokens(null);
  }, []);

  useEffect(() => {
    if (!tokens) document.title = 'Herald · live notification demo';
  }, [tokens]);

  if (booting) {
    return (
      <div className="boot" role="status">
        Signing in…
      </div>
    );
  }
  if (!tokens) return <SignIn onSignIn={signIn} busy={busy} error={error} />;
  return <Demo key={tokens.userId} tokens={tokens} onSignOut={signOut} />;
}

function Demo({ tokens, onSignOut }: { tokens: TokenSource; onSignOut: () => void }) {
  const options = useMemo<HeraldClientOptions>(
    () => ({ url: GATEWAY_URL, userId: tokens.userId, getToken: tokens.getToken }),
    [tokens],
  );
  return (
    <HeraldProvider options={options}>
      <SignedIn tokens={tokens} onSignOut={onSignOut} />
    </HeraldProvider>
  );
}

function SignedIn({ tokens, onSignOut }: { tokens: TokenSource; onSignOut: () => void }) {
  const unread = useCounts().unread;
  const store = useInboxStore();
  const state = useConnectionState();
  // Live once: later `connecting` states are retries after a drop ("Reconnecting…").
  const [wasLive, setWasLive] = useState(false);
  if (state === State.Connected && !wasLive) setWasLive(true);
  const link = linkOf(state, wasLive || state === State.Connected);
  const inboxHeading = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    document.title = unread > 0 ? `(${unread}) Herald demo` : 'Herald demo';
  }, [unread]);

  // A purge erases the inbox on the server: fetch the lists and the counts again (whatever frames say).
  const onPurged = useCallback(() => void store.refreshAll(), [store]);

  const showInbox = useCallback(() => {
    const calm = window.matchMedia?.('(prefers-reduced-motion: reduce)').matches;
    inboxHeading.current?.scrollIntoView({ behavior: calm ? 'auto' : 'smooth', block: 'start' });
    inboxHeading.current?.focus({ preventScroll: true });
  }, []);

  return (
    <>
      <a className="skip-link" href="#inbox">
        Skip to inbox
      </a>
      <Header userId={tokens.userId} link={link} onBell={showInbox} onSignOut={onSignOut} />
      <nav className="jump" aria-label="Sections">
        <a href="#publish">Publish</a>
        <a href="#settings">Settings</a>
        <a
          href="#inbox"
          onClick={(e) => {
            e.preventDefault();
            showInbox();
          }}
        >
          Inbox
          {unread > 0 && (
            <>
              {' '}
              ({unread}
              <span className="visually-hidden"> unread</span>)
            </>
          )}
        </a>
      </nav>
      <main className="layout">
        <PublishPanel link={link} userId={tokens.userId} getToken={tokens.getToken} onPurged={onPurged} />
        {/* The right-hand column: the settings (short) above the inbox, whose list grows as it scrolls. */}
        <div className="column">
          <Settings />
          <Inbox link={link} headingRef={inboxHeading} unreadCount={unread} />
        </div>
      </main>
      <Toasts />
      <footer className="footer">
        <p>
          Signed in as <code>{tokens.userId}</code>.
        </p>
        <p>
          Herald pushes each notification to every open tab of its user.{' '}
          <a href={`/?user=${encodeURIComponent(tokens.userId)}`} target="_blank" rel="noopener">
            Open this inbox in another tab<span className="visually-hidden"> (opens a new tab)</span>
          </a>{' '}
          and watch both stay in sync.
        </p>
      </footer>
    </>
  );
}
