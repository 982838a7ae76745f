import { describe, expect, it } from 'vitest';
import { ApiError, client, explain } from './api';
import { dryRunHeadline } from './dryrun';
import { forgetKey, loadKey, saveKey, type KeyStore } from './session';

function memory(): KeyStore & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => void data.set(k, v),
    removeItem: (k) => void data.delete(k),
  };
}

describe('the API client', () => {
  it('sends the key as a bearer to relative API paths only, without cookies or referrer', async () => {
    const calls: [string, RequestInit | undefined][] = [];
    const api = client('k3y', async (url, init) => {
      calls.push([url, init]);
      return new Response('{"ok":true}', { status: 200 });
    });
    expect(await api.get('/api/v1/admin/stats')).toEqual({ ok: true });
    const [url, init] = calls[0]!;
    expect(url).toBe('/api/v1/admin/stats');
    expect((init!.headers as Record<string, string>).authorization).toBe('Bearer k3y');
    expect(init!.credentials).toBe('omit');
    expect(init!.referrerPolicy).toBe('no-referrer');
    await expect(api.get('https://elsewhere.example/api/v1/admin/stats')).rejects.toThrow(/not an API path/);
    expect(calls).toHaveLength(1);
  });
  it('turns error bodies into messages an operator can act on', async () => {
    const answer = (status: number, body: unknown) =>
      client('k', async () => new Response(JSON.stringify(body), { status }));
    const wrong = await answer(401, { error: 'invalid_credentials', message: 'bad' }).get('/api/v1/admin/stats').catch((e) => e);
    expect(wrong).toBeInstanceOf(ApiError);
    expect(explain(wrong)).toMatch(/not accepted/);
    const scope = await answer(403, { error: 'insufficient_scope', message: 'needs admin' }).get('/api/v1/x').catch((e) => e);
    expect(explain(scope)).toMatch(/no `admin` scope/);
    const down = await client('k', async () => Promise.reject(new TypeError('fetch failed')))
      .get('/api/v1/x')
      .catch((e) => e);
    expect(explain(down)).toMatch(/cannot be reached/);
  });
});

describe('the key', () => {
  it('is kept in the given (tab) storage and forgotten on sign-out', () => {
    const s = memory();
    expect(loadKey(s)).toBeNull();
    saveKey('  secret  ', s);
    expect(loadKey(s)).toBe('secret');
    forgetKey(s);
    expect(loadKey(s)).toBeNull();
    expect(s.data.size).toBe(0);
  });
});

describe('the dry-run box', () => {
  it('refuses text that is not JSON before sending it', async () => {
    const { parseEventInput } = await import('./dryrun');
    expect(parseEventInput('{"a":', '', '')).toHaveProperty('error');
    expect(parseEventInput('', '', '')).toEqual({ error: 'Paste an event (JSON).' });
    expect(parseEventInput('{"a":1}', ' user.created ', '')).toEqual({ body: { event: { a: 1 }, routing_key: 'user.created' } });
  });
  it('says in one sentence what the rules would do', () => {
    const r = (verdict: object, dead_letter = false, transport = 'http') =>
      ({ transport, event: null, verdict, dead_letter, report: '' }) as Parameters<typeof dryRunHeadline>[0];
    expect(dryRunHeadline(r({ outcome: 'stored', rule: 'welcome', recipients: ['42'] }))).toBe(
      'Rule welcome matches: a notification for 42 would be stored and pushed.',
    );
    expect(dryRunHeadline(r({ outcome: 'unmatched' }, true, 'amqp'))).toMatch(/dead-lettered/);
    expect(dryRunHeadline(r({ outcome: 'unmatched' }, true))).toMatch(/422 `unmatched`/);
    expect(dryRunHeadline(r({ outcome: 'dead_letter', reason: 'missing_user_id', message: 'no user id' }, true))).toBe(
      'It would be dead-lettered (missing_user_id): no user id',
    );
  });
});
