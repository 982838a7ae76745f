// @vitest-environment jsdom
import { act, cleanup, fireEvent, render, renderHook, screen, waitFor, within } from '@testing-library/react';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HeraldClient } from '../../src';
import { HeraldProvider, useCounts, useInbox } from '../../src/react';
import { Inbox, NotificationBell, NotificationPreferences, Toasts, resolveStrings } from '../../src/ui';
import { createFakeWebSocket, readyFrame } from '../helpers/fake-websocket';
import { fakeServer, makeNotification } from '../helpers/fake-server';

afterEach(() => {
  cleanup();
  vi.useRealTimers();
  delete (globalThis as { IntersectionObserver?: unknown }).IntersectionObserver;
});

function setup(initial: Parameters<typeof fakeServer>[0] = []) {
  const WS = createFakeWebSocket();
  const server = fakeServer(initial);
  const client = new HeraldClient({
    url: 'http://h',
    userId: 'u1',
    getToken: async () => 't',
    WebSocket: WS,
    fetch: server.fetch,
  });
  const wrapper = ({ children }: { children: ReactNode }) => (
    <HeraldProvider client={client}>{children}</HeraldProvider>
  );
  const frame = (f: unknown) => act(() => WS.last.receive(f));
  /** The socket opens and the server says `ready`, then the counts. */
  const live = async (counts = { unread: 0, unseen: 0 }) => {
    await waitFor(() => expect(WS.instances).toHaveLength(1));
    frame(readyFrame());
    frame({ type: 'counts', ...counts });
  };
  /** A new notification pushed live (and stored in the fake server), then its counts. */
  const push = (id: number, counts?: { unread: number; unseen: number }) => {
    const n = makeNotification(id);
    server.inbox.set(id, n);
    frame({ type: 'notification', event_type: n.event_type, body: {}, notification: n });
    if (counts) frame({ type: 'counts', ...counts });
  };
  return { WS, client, server, wrapper, frame, live, push };
}

describe('<NotificationBell>', () => {
  it('shows the unseen count of the counts frames in its badge and label, never asking REST for it', async () => {
    const t = setup([1, 2]);
    render(<NotificationBell />, { wrapper: t.wrapper });
    await t.live({ unread: 2, unseen: 2 });
    const bell = screen.getByRole('button', { name: 'Notifications, 2 new' });
    expect(bell.textContent).toBe('2');
    t.push(3, { unread: 3, unseen: 3 });
    t.push(4, { unread: 4, unseen: 4 });
    expect(screen.getByRole('button', { name: 'Notifications, 4 new' })).toBeTruthy();
    expect(t.server.count(/counts|unread_count/)).toBe(0);
  });

  it('opens the inbox in a dialog on press, marks all seen, moves focus in; Escape closes and focus returns', async () => {
    const t = setup([1, 2]);
    render(<NotificationBell />, { wrapper: t.wrapper });
    await t.live({ unread: 2, unseen: 2 });
    const bell = screen.getByRole('button', { name: 'Notifications, 2 new' });
    expect(bell.getAttribute('aria-expanded')).toBe('false');
    bell.focus();
    fireEvent.click(bell);
    const dialog = screen.getByRole('dialog', { name: 'Notifications' });
    expect(bell.getAttribute('aria-expanded')).toBe('true');
    expect(bell.getAttribute('aria-controls')).toBe(dialog.id);
    await waitFor(() => expect(t.server.count(/POST \/notifications\/seen_all/)).toBe(1));
    // The unseen count drops at once (the server's counts frame says so too).
    await waitFor(() => expect(bell.getAttribute('aria-label')).toBe('Notifications, nothing new'));
    expect(dialog.contains(document.activeElement)).toBe(true);
    await waitFor(() => expect(within(dialog).getAllByRole('listitem')).toHaveLength(2));

    fireEvent.keyDown(document.activeElement!, { key: 'Escape' });
    expect(screen.queryByRole('dialog')).toBeNull();
    expect(document.activeElement).toBe(bell);
  });

  it('closes from its close button and on a press outside', async () => {
    const t = setup([1]);
    render(
      <>
        <p>elsewhere</p>
        <NotificationBell />
      </>,
      { wrapper: t.wrapper },
    );
    await t.live({ unread: 1, unseen: 0 });
    const bell = screen.getByRole('button', { name: /^Notifications/ });
    fireEvent.click(bell);
    fireEvent.click(screen.getByRole('button', { name: 'Close' }));
    expect(screen.queryByRole('dialog')).toBeNull();
    expect(document.activeElement).toBe(bell);
    expect(t.server.count(/seen_all/)).toBe(0); // nothing was unseen

    fireEvent.click(bell);
    fireEvent.mouseDown(screen.getByText('elsewhere'));
    expect(screen.queryByRole('dialog')).toBeNull();
  });

  it('counts unread with count="unread", and without a panel only calls onClick', async () => {
    const t = setup([1]);
    const onClick = vi.fn();
    render(<NotificationBell count="unread" panel={false} onClick={onClick} />, { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    const bell = screen.getByRole('button', { name: 'Notifications, 1 unread' });
    expect(bell.getAttribute('aria-haspopup')).toBeNull();
    fireEvent.click(bell);
    expect(onClick).toHaveBeenCalledOnce();
    expect(screen.queryByRole('dialog')).toBeNull();
    await waitFor(() => expect(t.server.count(/seen_all/)).toBe(1));
  });
});

describe('<NotificationBell> panel and focus (review finding 6), and failures (finding 3)', () => {
  const page = (t: ReturnType<typeof setup>) =>
    render(
      <>
        <button type="button">before</button>
        <NotificationBell />
        <button type="button">after</button>
      </>,
      { wrapper: t.wrapper },
    );

  it('closes when focus leaves it (Tab past its end), without moving focus; focus moving inside keeps it open', async () => {
    const t = setup([1]);
    page(t);
    await t.live({ unread: 1, unseen: 0 });
    fireEvent.click(screen.getByRole('button', { name: /^Notifications/ }));
    const dialog = screen.getByRole('dialog');
    const markAll = within(dialog).getByRole('button', { name: 'Mark all read' });
    // Focus moving within the panel (and lost to nothing, as when an item leaves) keeps it open.
    fireEvent.blur(document.activeElement!, { relatedTarget: markAll });
    markAll.focus();
    fireEvent.blur(markAll, { relatedTarget: null });
    expect(screen.queryByRole('dialog')).not.toBeNull();
    const after = screen.getByRole('button', { name: 'after' });
    act(() => after.focus());
    expect(screen.queryByRole('dialog')).toBeNull();
    expect(document.activeElement).toBe(after);
  });

  it('Escape closes it with focus outside the panel too (focus stays where it is)', async () => {
    const t = setup([1]);
    page(t);
    await t.live({ unread: 1, unseen: 0 });
    fireEvent.click(screen.getByRole('button', { name: /^Notifications/ }));
    expect(screen.queryByRole('dialog')).not.toBeNull();
    const before = screen.getByRole('button', { name: 'before' });
    // Focus outside without a focusout reaching the bell (a programmatic focus on another frame, say).
    fireEvent.keyDown(before, { key: 'Escape' });
    expect(screen.queryByRole('dialog')).toBeNull();
  });

  it('Tab reaches the close button right after the heading row\'s "Mark all read", before the tabs and items', async () => {
    const t = setup([1]);
    page(t);
    await t.live({ unread: 1, unseen: 0 });
    fireEvent.click(screen.getByRole('button', { name: /^Notifications/ }));
    const dialog = screen.getByRole('dialog');
    await waitFor(() => expect(within(dialog).getAllByRole('listitem')).toHaveLength(1));
    const focusable = [...dialog.querySelectorAll<HTMLElement>('button:not([tabindex="-1"])')].map(
      (b) => b.getAttribute('aria-label') ?? b.textContent,
    );
    expect(focusable.slice(0, 3)).toEqual(['Mark all read', 'Close', 'All']);
    expect(document.activeElement?.textContent).toBe('Notifications'); // the heading, then Tab goes on from it
  });

  it('a failed "mark all seen" is shown (role="alert") and passed to onError', async () => {
    const t = setup([1]);
    const onError = vi.fn();
    render(<NotificationBell onError={onError} />, { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    t.server.fail(503);
    fireEvent.click(screen.getByRole('button', { name: /^Notifications/ }));
    const dialog = screen.getByRole('dialog');
    await waitFor(() =>
      expect(within(dialog).getAllByRole('alert')[0]!.textContent).toBe(resolveStrings().actionFailed),
    );
    expect(onError).toHaveBeenCalledWith(expect.objectContaining({ status: 503 }));
  });
});

describe('<Inbox>', () => {
  it('shows a loading state, then the items, newest first, with unread ones marked', async () => {
    const t = setup([1, makeNotification(2, { read_at: '2026-01-10T08:20:00.000Z' }), 3]);
    render(<Inbox />, { wrapper: t.wrapper });
    expect(screen.getByRole('status').textContent).toBe('Loading…');
    await t.live({ unread: 2, unseen: 2 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(3));
    const rows = screen.getAllByRole('listitem');
    expect(rows.map((r) => r.getAttribute('data-id'))).toEqual(['3', '2', '1']);
    expect(rows[0]!.textContent).toContain('Unread: title 3');
    expect(rows[1]!.textContent).not.toContain('Unread:');
    expect(within(rows[1]!).getByRole('button', { name: 'Mark unread: title 2' })).toBeTruthy();
    expect(screen.queryByRole('status')).toBeNull();
    expect(screen.getByRole('heading', { name: 'Notifications' })).toBeTruthy();
  });

  it('a muted notification is listed with a muted tag, not drawn as unread (it is not counted), and can be marked read', async () => {
    const t = setup([1, makeNotification(2, { muted: true })]);
    render(<Inbox />, { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(2));
    const [muted, counted] = screen.getAllByRole('listitem');
    expect(muted!.dataset.muted).toBe('true');
    expect(muted!.dataset.unread).toBeUndefined();
    expect(muted!.textContent).not.toContain('Unread:');
    expect(muted!.querySelector('.herald-item__dot')).toBeNull();
    expect(within(muted!).getByText('muted')).toBeTruthy();
    expect(within(muted!).getByRole('button', { name: 'Mark read: title 2' })).toBeTruthy();
    expect(counted!.dataset.unread).toBe('true');
    expect(counted!.dataset.muted).toBeUndefined();
  });

  it('tabs all / unread / archived are a keyboard-operable tablist, each with its own list', async () => {
    const t = setup([1, makeNotification(2, { read_at: 'x' }), makeNotification(3, { archived_at: 'y' })]);
    render(<Inbox />, { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    const tabs = screen.getAllByRole('tab');
    expect(tabs.map((x) => x.textContent)).toEqual(['All', 'Unread (1)', 'Archived']);
    expect(tabs[0]!.getAttribute('aria-selected')).toBe('true');
    const panel = screen.getByRole('tabpanel');
    expect(panel.getAttribute('aria-labelledby')).toBe(tabs[0]!.id);
    await waitFor(() => expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['2', '1']));

    tabs[0]!.focus();
    fireEvent.keyDown(tabs[0]!, { key: 'ArrowRight' });
    expect(document.activeElement).toBe(screen.getAllByRole('tab')[1]);
    expect(screen.getAllByRole('tab')[1]!.getAttribute('aria-selected')).toBe('true');
    await waitFor(() => expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['1']));

    fireEvent.keyDown(document.activeElement!, { key: 'End' });
    await waitFor(() => expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['3']));
    expect(screen.getByRole('button', { name: 'Unarchive: title 3' })).toBeTruthy();
    expect(t.server.count(/archived=true/)).toBe(1);
    expect(t.server.count(/unread=true/)).toBe(1);
  });

  it('mark read / unread and archive / unarchive update every tab; focus stays in the list', async () => {
    const t = setup([1, 2]);
    render(<Inbox />, { wrapper: t.wrapper });
    await t.live({ unread: 2, unseen: 2 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(2));

    fireEvent.click(screen.getByRole('button', { name: 'Mark read: title 2' }));
    await screen.findByRole('button', { name: 'Mark unread: title 2' });
    fireEvent.click(screen.getByRole('button', { name: 'Mark unread: title 2' }));
    await screen.findByRole('button', { name: 'Mark read: title 2' });

    const archive = screen.getByRole('button', { name: 'Archive: title 2' });
    archive.focus();
    fireEvent.click(archive);
    await waitFor(() => expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['1']));
    // Focus moved to the item that took its place, not lost to <body>.
    await waitFor(() => expect(document.activeElement?.getAttribute('data-id')).toBe('1'));

    fireEvent.click(screen.getByRole('tab', { name: 'Archived' }));
    await screen.findByRole('button', { name: 'Unarchive: title 2' });
    fireEvent.click(screen.getByRole('button', { name: 'Unarchive: title 2' }));
    await screen.findByText('Nothing archived.');
    fireEvent.click(screen.getByRole('tab', { name: 'All' }));
    await waitFor(() => expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['2', '1']));
    expect(t.server.calls.filter((c) => c.startsWith('POST'))).toEqual([
      'POST /notifications/2/read',
      'POST /notifications/2/unread',
      'POST /notifications/2/archive',
      'POST /notifications/2/unarchive',
    ]);
  });

  it('"Mark all read" marks every item read and is disabled when nothing is unread', async () => {
    const t = setup([1, 2]);
    render(<Inbox />, { wrapper: t.wrapper });
    await t.live({ unread: 2, unseen: 2 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(2));
    const button = screen.getByRole('button', { name: 'Mark all read' }) as HTMLButtonElement;
    expect(button.disabled).toBe(false);
    fireEvent.click(button);
    await waitFor(() => expect(screen.queryAllByRole('button', { name: /^Mark read/ })).toHaveLength(0));
    t.frame({ type: 'counts', unread: 0, unseen: 0 });
    expect(button.disabled).toBe(true);
  });

  it('narrowed by type: "Mark all read" marks only that type read (never read_all); the Unread tab has no global count', async () => {
    const t = setup([
      makeNotification(1, { type: 'info', title: 'invoice' }),
      makeNotification(2, { type: 'promo', title: 'sale' }),
      makeNotification(3, { type: 'info', title: 'password' }),
    ]);
    render(<Inbox type="promo" />, { wrapper: t.wrapper });
    await t.live({ unread: 3, unseen: 3 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(1));
    expect(screen.getByRole('tab', { name: 'Unread' }).textContent).toBe('Unread'); // not "Unread (3)"
    const button = screen.getByRole('button', { name: 'Mark all read' }) as HTMLButtonElement;
    expect(button.disabled).toBe(false);
    fireEvent.click(button);
    await waitFor(() => expect(screen.queryAllByRole('button', { name: /^Mark read/ })).toHaveLength(0));
    expect(t.server.count(/read_all/)).toBe(0);
    expect(t.server.inbox.get(2)!.read_at).not.toBeNull();
    expect(t.server.inbox.get(1)!.read_at).toBeNull();
    expect(t.server.inbox.get(3)!.read_at).toBeNull();
    // Nothing of this type is unread now, whatever the global count says.
    expect(button.disabled).toBe(true);
  });

  it('a failed action is shown (role="alert") and passed to onError; one that works clears it', async () => {
    const t = setup([1, 2]);
    const onError = vi.fn();
    render(<Inbox onError={onError} />, { wrapper: t.wrapper });
    await t.live({ unread: 2, unseen: 2 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(2));
    t.server.fail(503);
    fireEvent.click(screen.getByRole('button', { name: 'Mark read: title 2' }));
    await waitFor(() => expect(screen.getByRole('alert').textContent).toContain(resolveStrings().actionFailed));
    expect(onError).toHaveBeenCalledWith(expect.objectContaining({ status: 503 }));
    expect(screen.getByRole('button', { name: 'Mark read: title 2' })).toBeTruthy(); // still unread
    fireEvent.click(screen.getByRole('button', { name: 'Mark all read' }));
    await waitFor(() => expect(onError).toHaveBeenCalledTimes(2));
    expect(screen.getByRole('alert')).toBeTruthy();
    t.server.fail(null);
    fireEvent.click(screen.getByRole('button', { name: 'Mark read: title 2' }));
    await waitFor(() => expect(screen.queryByRole('alert')).toBeNull());
  });

  it('live frames from other tabs: read, unread, archived, deleted, and a new notification on top', async () => {
    const t = setup([1, 2]);
    render(<Inbox />, { wrapper: t.wrapper });
    await t.live({ unread: 2, unseen: 2 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(2));
    t.frame({ type: 'read', ids: [1], read_at: 'now' });
    expect(screen.getByRole('button', { name: 'Mark unread: title 1' })).toBeTruthy();
    t.frame({ type: 'unread', ids: [1] });
    expect(screen.getByRole('button', { name: 'Mark read: title 1' })).toBeTruthy();
    t.frame({ type: 'archived', ids: [2] });
    expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['1']);
    t.push(7);
    expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['7', '1']);
    t.frame({ type: 'deleted', ids: [1] });
    expect(screen.getAllByRole('listitem').map((r) => r.dataset.id)).toEqual(['7']);
  });

  it('onItemClick makes each title a button that opens the item and marks it read', async () => {
    const t = setup([1]);
    const opened: number[] = [];
    render(<Inbox onItemClick={(n) => opened.push(n.id)} />, { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    fireEvent.click(await screen.findByRole('button', { name: 'Unread: title 1' }));
    expect(opened).toEqual([1]);
    await screen.findByRole('button', { name: 'Mark unread: title 1' });
    expect(t.server.count(/POST \/notifications\/1\/read/)).toBe(1);
  });

  it('takes a theme (data-theme) and a class; the styles follow prefers-color-scheme unless data-theme says', async () => {
    const t = setup([]);
    render(<Inbox theme="dark" className="mine" />, { wrapper: t.wrapper });
    const root = screen.getByRole('region', { name: 'Notifications' });
    expect(root.getAttribute('data-theme')).toBe('dark');
    expect(root.className).toBe('herald herald-inbox mine');
    const css = readFileSync(join(__dirname, '../../src/ui/styles.css'), 'utf8');
    expect(css).toMatch(/@media \(prefers-color-scheme: dark\) \{\s*\.herald \{/);
    expect(css).toContain("[data-theme='dark'] .herald,\n.herald[data-theme='dark'] {");
    expect(css).toContain("[data-theme='light'] .herald,\n.herald[data-theme='light'] {");
  });

  it('shows an empty state per tab', async () => {
    const t = setup([]);
    render(<Inbox />, { wrapper: t.wrapper });
    await t.live();
    await screen.findByText('No notifications yet.');
    fireEvent.click(screen.getByRole('tab', { name: 'Unread' }));
    await screen.findByText('Nothing unread.');
  });

  it('shows an error with a retry that loads the list', async () => {
    const t = setup([1]);
    t.server.fail(500);
    render(<Inbox />, { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toContain('The notifications could not be loaded.');
    t.server.fail(null);
    fireEvent.click(within(alert).getByRole('button', { name: 'Try again' }));
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(1));
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('loads the next page when the end of the list is seen (IntersectionObserver), or with "Load more"', async () => {
    const observers: { cb: IntersectionObserverCallback; els: Element[] }[] = [];
    (globalThis as { IntersectionObserver?: unknown }).IntersectionObserver = class {
      els: Element[] = [];
      constructor(public cb: IntersectionObserverCallback) {
        observers.push(this);
      }
      observe(el: Element) {
        this.els.push(el);
      }
      disconnect() {
        this.els = [];
      }
    };
    const t = setup(Array.from({ length: 7 }, (_, i) => i + 1));
    render(<Inbox pageSize={3} />, { wrapper: t.wrapper });
    await t.live({ unread: 7, unseen: 7 });
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(3));
    const watching = observers.filter((o) => o.els.length > 0);
    expect(watching).toHaveLength(1);
    act(() => watching[0]!.cb([{ isIntersecting: true } as IntersectionObserverEntry], {} as IntersectionObserver));
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(6));

    fireEvent.click(screen.getByRole('button', { name: 'Load more' }));
    await waitFor(() => expect(screen.getAllByRole('listitem')).toHaveLength(7));
    expect(screen.queryByRole('button', { name: 'Load more' })).toBeNull();
    expect(t.server.count(/before=/)).toBe(2);
  });

  it('speaks Spanish and French (locale), relative times through Intl, and takes string overrides', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true, now: Date.parse('2026-01-10T08:18:00.123Z') });
    const t = setup([1]);
    const { unmount } = render(<Inbox locale="es" />, { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    await screen.findByRole('button', { name: 'Marcar como leída: title 1' });
    expect(screen.getAllByRole('tab').map((x) => x.textContent)).toEqual(['Todas', 'Sin leer (1)', 'Archivadas']);
    expect(screen.getByRole('heading').textContent).toBe('Notificaciones');
    expect(screen.getByText('hace 3 minutos')).toBeTruthy();
    unmount();

    render(<Inbox locale="fr-CA" strings={{ inboxTitle: 'Avis' }} />, { wrapper: t.wrapper });
    await screen.findByRole('button', { name: 'Marquer comme lue : title 1' });
    expect(screen.getByRole('heading').textContent).toBe('Avis');
    expect(screen.getByText('il y a 3 minutes')).toBeTruthy();
    expect(resolveStrings('de').markRead).toBe('Mark read');
  });
});

describe('<Toasts>', () => {
  it('announces each new unread notification in a polite live region and dismisses it after its duration', async () => {
    const t = setup([]);
    render(<Toasts duration={5000} />, { wrapper: t.wrapper });
    await t.live();
    vi.useFakeTimers();
    t.push(5);
    const region = screen.getByRole('region', { name: 'Live notifications' });
    const list = within(region).getByRole('list');
    expect(list.getAttribute('aria-live')).toBe('polite');
    expect(within(list).getAllByRole('listitem')).toHaveLength(1);
    expect(list.textContent).toContain('title 5');
    act(() => vi.advanceTimersByTime(4999));
    expect(within(list).queryAllByRole('listitem')).toHaveLength(1);
    act(() => vi.advanceTimersByTime(1));
    expect(within(list).queryAllByRole('listitem')).toHaveLength(0);
  });

  it('holds a toast while hovered or focused, and lets it go with the time left', async () => {
    const t = setup([]);
    render(<Toasts duration={5000} />, { wrapper: t.wrapper });
    await t.live();
    vi.useFakeTimers();
    t.push(5);
    const toast = screen.getByRole('listitem');
    act(() => vi.advanceTimersByTime(3000));
    fireEvent.mouseEnter(toast);
    act(() => vi.advanceTimersByTime(20_000));
    expect(screen.queryAllByRole('listitem')).toHaveLength(1);
    fireEvent.mouseLeave(toast);
    act(() => vi.advanceTimersByTime(1999));
    expect(screen.queryAllByRole('listitem')).toHaveLength(1);
    act(() => vi.advanceTimersByTime(1));
    expect(screen.queryAllByRole('listitem')).toHaveLength(0);

    t.push(6);
    const dismiss = screen.getByRole('button', { name: 'Dismiss: title 6' });
    fireEvent.focus(dismiss);
    act(() => vi.advanceTimersByTime(20_000));
    expect(screen.queryAllByRole('listitem')).toHaveLength(1);
    fireEvent.click(dismiss);
    expect(screen.queryAllByRole('listitem')).toHaveLength(0);
  });

  it('"Mark read" marks it read over REST; a toast read, archived or deleted elsewhere leaves', async () => {
    const t = setup([]);
    render(<Toasts />, { wrapper: t.wrapper });
    await t.live();
    t.push(1);
    t.push(2);
    t.push(3);
    t.push(4);
    fireEvent.click(screen.getByRole('button', { name: 'Mark read: title 1' }));
    await waitFor(() => expect(t.server.count(/POST \/notifications\/1\/read/)).toBe(1));
    t.frame({ type: 'read', ids: [2], read_at: 'now' });
    t.frame({ type: 'archived', ids: [3] });
    t.frame({ type: 'deleted', ids: [4] });
    expect(screen.queryAllByRole('listitem')).toHaveLength(0);
  });
});

describe('<Toasts> failures (review finding 3)', () => {
  it('a failed "Mark read" brings the toast back with an alert and calls onError', async () => {
    const t = setup([]);
    const onError = vi.fn();
    render(<Toasts onError={onError} />, { wrapper: t.wrapper });
    await t.live();
    t.push(1);
    t.server.fail(503);
    fireEvent.click(screen.getByRole('button', { name: 'Mark read: title 1' }));
    await waitFor(() => expect(onError).toHaveBeenCalledWith(expect.objectContaining({ status: 503 })));
    const toast = screen.getByRole('listitem');
    expect(toast.textContent).toContain('title 1');
    expect(within(toast).getByRole('alert').textContent).toBe(resolveStrings().actionFailed);
    // Trying again, and it works: gone, alert and all.
    t.server.fail(null);
    fireEvent.click(within(toast).getByRole('button', { name: 'Mark read: title 1' }));
    await waitFor(() => expect(screen.queryAllByRole('listitem')).toHaveLength(0));
    expect(t.server.inbox.get(1)!.read_at).not.toBeNull();
  });
});

describe('<NotificationPreferences>', () => {
  /** The gateway knows four types and mutes `digest` by default; the user muted `match-reminder`. */
  function prefs(t: ReturnType<typeof setup>) {
    Object.assign(t.server.preferences, {
      known: ['availability', 'match-reminder', 'stage.accepted', 'weekly_report'],
      defaults: { digest: 'muted' },
      types: { 'match-reminder': 'muted' },
    });
  }
  /** Each switch's name (the element that labels it) and state, in order. */
  const switches = () =>
    screen
      .getAllByRole('switch')
      .map((s) => [
        document.getElementById(s.getAttribute('aria-labelledby')!)?.textContent,
        s.getAttribute('aria-checked'),
      ]);

  it('a switch per type, named by its display name (labels, or the type made readable), checked when it notifies', async () => {
    const t = setup();
    prefs(t);
    render(<NotificationPreferences labels={{ availability: 'Availability closed' }} />, { wrapper: t.wrapper });
    expect(screen.getByRole('status').textContent).toBe('Loading…');
    await screen.findAllByRole('switch');
    expect(switches()).toEqual([
      ['Availability closed', 'true'],
      ['Digest', 'false'],
      ['Match reminder', 'false'],
      ['Stage accepted', 'true'],
      ['Weekly report', 'true'],
    ]);
    expect(screen.getByRole('switch', { name: 'Stage accepted' }).tagName).toBe('BUTTON');
    expect(screen.getByRole('switch', { name: 'Digest' }).textContent).toBe('Muted');
    const region = screen.getByRole('region', { name: 'Notification settings' });
    expect(region.getAttribute('aria-describedby')).toBe(screen.getByText(resolveStrings().preferencesHint).id);
    expect(screen.getByRole('heading').textContent).toBe('Notification settings');
    expect(screen.queryByRole('status')).toBeNull();
    expect(t.server.calls).toEqual(['GET /preferences']);
  });

  it('toggling flips the switch at once and PATCHes only that type; back to its default it sends "default"', async () => {
    const t = setup();
    prefs(t);
    render(<NotificationPreferences />, { wrapper: t.wrapper });
    const availability = await screen.findByRole('switch', { name: 'Availability' });
    fireEvent.click(availability);
    expect(availability.getAttribute('aria-checked')).toBe('false');
    await waitFor(() => expect(t.server.patches).toEqual([{ availability: 'muted' }]));
    fireEvent.click(availability);
    expect(availability.getAttribute('aria-checked')).toBe('true');
    fireEvent.click(screen.getByRole('switch', { name: 'Digest' })); // muted by default: on pins it
    fireEvent.click(screen.getByRole('switch', { name: 'Match reminder' })); // the user muted it: on is its default
    await waitFor(() => expect(t.server.patches).toHaveLength(4));
    expect(t.server.patches.slice(1)).toEqual([
      { availability: 'default' },
      { digest: 'on' },
      { 'match-reminder': 'default' },
    ]);
    expect(t.server.preferences.types).toEqual({ digest: 'on' });
    expect(switches().map(([, on]) => on)).toEqual(['true', 'true', 'true', 'true', 'true']);
    expect(t.server.count(/^PUT/)).toBe(0);
  });

  it('`types` shows only those, in that order (a type the server does not list shows its default)', async () => {
    const t = setup();
    prefs(t);
    render(<NotificationPreferences types={['stage.accepted', 'match-reminder', 'new_badge']} />, {
      wrapper: t.wrapper,
    });
    await screen.findAllByRole('switch');
    expect(switches()).toEqual([
      ['Stage accepted', 'true'],
      ['Match reminder', 'false'],
      ['New badge', 'true'],
    ]);
    fireEvent.click(screen.getByRole('switch', { name: 'New badge' }));
    await waitFor(() => expect(t.server.patches).toEqual([{ new_badge: 'muted' }]));
  });

  it('a failed change puts the switch back, says so (role="alert") and calls onError; a change that works clears it', async () => {
    const t = setup();
    prefs(t);
    const onError = vi.fn();
    render(<NotificationPreferences onError={onError} />, { wrapper: t.wrapper });
    const availability = await screen.findByRole('switch', { name: 'Availability' });
    t.server.fail(503, 1);
    fireEvent.click(availability);
    expect(availability.getAttribute('aria-checked')).toBe('false');
    await waitFor(() => expect(screen.getByRole('alert').textContent).toContain(resolveStrings().actionFailed));
    expect(availability.getAttribute('aria-checked')).toBe('true');
    expect(onError).toHaveBeenCalledWith(expect.objectContaining({ status: 503 }));
    expect(t.server.preferences.types).toEqual({ 'match-reminder': 'muted' });
    fireEvent.click(availability);
    await waitFor(() => expect(screen.queryByRole('alert')).toBeNull());
    expect(availability.getAttribute('aria-checked')).toBe('false');
    expect(t.server.preferences.types).toEqual({ 'match-reminder': 'muted', availability: 'muted' });
    expect(onError).toHaveBeenCalledOnce();
  });

  it('a failed load shows an error with a retry; nothing to set shows the empty state', async () => {
    const t = setup();
    t.server.fail(500, 1);
    render(<NotificationPreferences />, { wrapper: t.wrapper });
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toContain('The notification settings could not be loaded.');
    expect(screen.queryByText('There are no notification types to set.')).toBeNull();
    fireEvent.click(within(alert).getByRole('button', { name: 'Try again' }));
    await screen.findByText('There are no notification types to set.');
    expect(screen.queryByRole('alert')).toBeNull();
    expect(screen.queryAllByRole('switch')).toHaveLength(0);
  });

  it('speaks Spanish and French (locale), takes string overrides, a theme and a class', async () => {
    const t = setup();
    prefs(t);
    const { unmount } = render(<NotificationPreferences locale="es" />, { wrapper: t.wrapper });
    const digest = await screen.findByRole('switch', { name: 'Digest' });
    expect(digest.textContent).toBe('Silenciado');
    expect(screen.getByRole('switch', { name: 'Availability' }).textContent).toBe('Activado');
    expect(screen.getByRole('heading').textContent).toBe('Preferencias de notificación');
    expect(screen.getByText(/^Los tipos silenciados siguen llegando a tu bandeja/)).toBeTruthy();
    unmount();

    render(
      <NotificationPreferences locale="fr-CA" strings={{ preferencesTitle: 'Avis' }} theme="dark" className="mine" />,
      { wrapper: t.wrapper },
    );
    expect(await screen.findByRole('switch', { name: 'Digest' })).toHaveProperty('textContent', 'En sourdine');
    const region = screen.getByRole('region', { name: 'Avis' });
    expect(region.getAttribute('data-theme')).toBe('dark');
    expect(region.className).toBe('herald herald-prefs mine');
    expect(screen.getByText(/^Les types en sourdine/)).toBeTruthy();
    expect(resolveStrings('fr').preferencesHint).not.toBe(resolveStrings('en').preferencesHint);
  });
});

describe('the shared inbox store', () => {
  it('several components showing the same list cost one request; counts come only from frames', async () => {
    const t = setup([1, 2]);
    const { result } = renderHook(
      () => ({ a: useInbox(), b: useInbox(), c: useCounts(), d: useCounts(), unread: useInbox({ tab: 'unread' }) }),
      { wrapper: t.wrapper },
    );
    await t.live({ unread: 2, unseen: 1 });
    await waitFor(() => expect(result.current.a.items).toHaveLength(2));
    expect(result.current.b.items).toBe(result.current.a.items);
    expect(t.server.count(/^GET \/notifications(\?|$)/)).toBe(2); // all, and unread: once each
    expect(result.current.c).toMatchObject({ unread: 2, unseen: 1, loaded: true });
    t.push(3, { unread: 3, unseen: 2 });
    t.frame({ type: 'read', ids: [1], read_at: 'now' });
    t.frame({ type: 'counts', unread: 2, unseen: 2 });
    expect(result.current.d).toMatchObject({ unread: 2, unseen: 2 });
    expect(t.server.count(/counts|unread_count/)).toBe(0);
    expect(t.server.count(/^GET \/notifications(\?|$)/)).toBe(2);
  });

  it('after a resync: the shown lists are fetched again, once; the counts come in the frame after the replay', async () => {
    const t = setup([1]);
    const { result } = renderHook(() => ({ a: useInbox(), b: useInbox(), c: useCounts() }), { wrapper: t.wrapper });
    await t.live({ unread: 1, unseen: 1 });
    await waitFor(() => expect(result.current.a.loaded).toBe(true));
    const lists = t.server.count(/^GET \/notifications(\?|$)/);
    t.frame({ type: 'resync', reason: 'slow_consumer', since: 1, since_broadcast: 0 });
    await waitFor(() => expect(t.server.count(/^GET \/notifications(\?|$)/)).toBe(lists + 1));
    t.frame({ type: 'replayed', up_to: 1, up_to_targeted: 1, up_to_broadcast: 0 });
    t.frame({ type: 'counts', unread: 0, unseen: 0 });
    expect(result.current.c).toMatchObject({ unread: 0, unseen: 0 });
    await new Promise((r) => setTimeout(r, 10));
    expect(t.server.count(/^GET \/notifications(\?|$)/)).toBe(lists + 1);
    expect(t.server.count(/counts|unread_count/)).toBe(0);
  });

  it('a store made after the counts frame went by asks REST once', async () => {
    const t = setup([1]);
    t.client.connect();
    await waitFor(() => expect(t.WS.instances).toHaveLength(1));
    t.frame(readyFrame());
    const { result } = renderHook(() => [useCounts(), useCounts()], { wrapper: t.wrapper });
    await waitFor(() => expect(result.current[0]).toMatchObject({ unread: 1, loaded: true }));
    expect(t.server.count(/counts/)).toBe(1);
  });
});
