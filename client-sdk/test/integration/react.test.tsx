// @vitest-environment jsdom
import { act, cleanup, renderHook, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HeraldProvider, useConnectionState, useNotifications, useUnreadCount } from '../../src/react';
import { newUser, notify, skipReason, startGateway, tempDir, testClient, type Gateway } from './gateway';

const reason = skipReason('react');

describe.skipIf(reason !== null)('React hooks against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(tmp.dir);
  });
  afterEach(cleanup);
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  function setup(user: string) {
    const client = testClient(gw, user);
    const wrapper = ({ children }: { children: ReactNode }) => (
      <HeraldProvider client={client}>{children}</HeraldProvider>
    );
    const hooks = renderHook(
      () => ({ list: useNotifications({ limit: 2 }), unread: useUnreadCount(), state: useConnectionState() }),
      { wrapper },
    );
    return { client, ...hooks };
  }

  it('lists, pages, merges live notifications and follows actions', async () => {
    const user = newUser();
    const old = [await notify(gw, user), await notify(gw, user), await notify(gw, user)];
    const { client, result } = setup(user);
    try {
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(result.current.list.items.map((n) => n.id)).toEqual([old[2]!.id, old[1]!.id]));
      expect(result.current.list.hasMore).toBe(true);
      await waitFor(() => expect(result.current.unread.count).toBe(3));

      await act(() => result.current.list.fetchMore());
      expect(result.current.list.items.map((n) => n.id)).toEqual([old[2]!.id, old[1]!.id, old[0]!.id]);
      expect(result.current.list.hasMore).toBe(false);

      const live = await notify(gw, user);
      await waitFor(() => expect(result.current.list.items[0]!.id).toBe(live.id), { timeout: 5000 });
      expect(new Set(result.current.list.items.map((n) => n.id)).size).toBe(4);
      await waitFor(() => expect(result.current.unread.count).toBe(4), { timeout: 5000 });

      await act(() => result.current.list.markRead(live.id));
      expect(result.current.list.items[0]!.read_at).not.toBeNull();
      await waitFor(() => expect(result.current.unread.count).toBe(3), { timeout: 5000 });

      await act(() => result.current.list.remove(old[0]!.id));
      expect(result.current.list.items.map((n) => n.id)).not.toContain(old[0]!.id);

      await act(() => result.current.list.markAllRead());
      expect(result.current.list.items.every((n) => n.read_at !== null)).toBe(true);
      await waitFor(() => expect(result.current.unread.count).toBe(0), { timeout: 5000 });
      expect(result.current.list.error).toBeNull();
    } finally {
      client.close();
    }
  });

  it('applies read frames caused by another client of the same user', async () => {
    const user = newUser();
    const n = await notify(gw, user);
    const { client, result } = setup(user);
    const otherTab = testClient(gw, user);
    try {
      await waitFor(() => expect(result.current.state).toBe('connected'), { timeout: 5000 });
      await waitFor(() => expect(result.current.list.items.map((i) => i.id)).toEqual([n.id]));
      await otherTab.markRead(n.id);
      await waitFor(() => expect(result.current.list.items[0]!.read_at).not.toBeNull(), { timeout: 5000 });
      await waitFor(() => expect(result.current.unread.count).toBe(0), { timeout: 5000 });
    } finally {
      client.close();
    }
  });
});
