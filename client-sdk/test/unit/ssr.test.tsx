// @vitest-environment node
import { renderToString } from 'react-dom/server';
import { describe, expect, it } from 'vitest';
import { HeraldClient } from '../../src';
import { HeraldProvider } from '../../src/react';
import { Inbox, NotificationBell, NotificationPreferences, Toasts } from '../../src/ui';

describe('server rendering (Next.js, Remix)', () => {
  it('the components render to HTML without a DOM, a socket or a request', () => {
    const requests: string[] = [];
    const client = new HeraldClient({
      url: 'http://h',
      userId: 'u1',
      getToken: async () => 't',
      fetch: async (input) => {
        requests.push(input);
        throw new Error('no requests while rendering on the server');
      },
    });
    const html = renderToString(
      <HeraldProvider client={client}>
        <NotificationBell locale="fr" />
        <Inbox />
        <Toasts />
        <NotificationPreferences />
      </HeraldProvider>,
    );
    expect(html).toContain('aria-label="Notifications, rien de nouveau"');
    expect(html).toContain('role="tablist"');
    expect(html).toContain('aria-live="polite"');
    expect(html).toContain('Notification settings');
    expect(requests).toEqual([]);
    expect(client.state).toBe('disconnected');
  });
});
