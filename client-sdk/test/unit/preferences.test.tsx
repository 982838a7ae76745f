// @vitest-environment jsdom
import { act, cleanup, renderHook, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it } from 'vitest';
import { HeraldClient, HeraldError } from '../../src';
import { HeraldProvider, usePreferences } from '../../src/react';
import { createFakeWebSocket } from '../helpers/fake-websocket';
import { fakeServer } from '../helpers/fake-server';

afterEach(cleanup);

function clientOf(server: ReturnType<typeof fakeServer>, userId = 'u1') {
  return new HeraldClient({
    url: 'http://h',
    userId,
    getToken: async () => 't',
    WebSocket: createFakeWebSocket(),
    fetch: server.fetch,
  });
}

/** The gateway knows three types, mutes `digest` by default; the user muted `match` and set `custom_type` on. */
function setup() {
  const server = fakeServer();
  Object.assign(server.preferences, {
    known: ['availability', 'match', 'stage.accepted'],
    defaults: { digest: 'muted' },
    types: { match: 'muted', custom_type: 'on' },
  });
  const client = clientOf(server);
  const wrapper = ({ children }: { children: ReactNode }) => (
    <HeraldProvider client={client}>{children}</HeraldProvider>
  );
  const hook = renderHook(() => usePreferences(), { wrapper });
  const row = (type: string) => hook.result.current.types.find((r) => r.type === type);
  return { server, client, ...hook, row };
}

async function loaded(t: ReturnType<typeof setup>) {
  await waitFor(() => expect(t.result.current.preferences).not.toBeNull());
}

describe('usePreferences', () => {
  it('loads on mount: the preferences, and every known, set or defaulted type, sorted, with what applies and why', async () => {
    const t = setup();
    expect(t.result.current).toMatchObject({ preferences: null, types: [], loading: true, error: null });
    await loaded(t);
    expect(t.result.current.loading).toBe(false);
    expect(t.result.current.preferences).toEqual({
      types: { match: 'muted', custom_type: 'on' },
      defaults: { digest: 'muted' },
      known: ['availability', 'match', 'stage.accepted'],
    });
    expect(t.result.current.types).toEqual([
      { type: 'availability', setting: 'on', source: 'default' },
      { type: 'custom_type', setting: 'on', source: 'user' },
      { type: 'digest', setting: 'muted', source: 'default' },
      { type: 'match', setting: 'muted', source: 'user' },
      { type: 'stage.accepted', setting: 'on', source: 'default' },
    ]);
    expect(t.server.calls).toEqual(['GET /preferences']);
  });

  it('set shows the change at once and sends only that type; back to its default it sends "default", not a pin', async () => {
    const t = setup();
    await loaded(t);
    t.server.hold();
    let done!: Promise<HeraldError | null>;
    act(() => void (done = t.result.current.set('availability', 'muted')));
    expect(t.row('availability')).toEqual({ type: 'availability', setting: 'muted', source: 'user' });
    t.server.release(true);
    expect(await act(() => done)).toBeNull();
    expect(t.server.preferences.types).toEqual({ match: 'muted', custom_type: 'on', availability: 'muted' });

    // Back on (its default): forgotten, not pinned `on`.
    expect(await act(() => t.result.current.set('availability', 'on'))).toBeNull();
    expect(t.row('availability')).toEqual({ type: 'availability', setting: 'on', source: 'default' });
    // `digest` is muted by default: turning it on pins it; muting it again forgets the setting.
    expect(await act(() => t.result.current.set('digest', 'on'))).toBeNull();
    expect(t.row('digest')).toEqual({ type: 'digest', setting: 'on', source: 'user' });
    expect(await act(() => t.result.current.set('digest', 'muted'))).toBeNull();
    expect(t.row('digest')).toEqual({ type: 'digest', setting: 'muted', source: 'default' });
    // A type the user muted, turned on: its default.
    expect(await act(() => t.result.current.set('match', 'on'))).toBeNull();
    expect(t.server.patches).toEqual([
      { availability: 'muted' },
      { availability: 'default' },
      { digest: 'on' },
      { digest: 'default' },
      { match: 'default' },
    ]);
    expect(t.server.preferences.types).toEqual({ custom_type: 'on' });
    expect(t.server.count(/^PUT/)).toBe(0);
  });

  it('a set made before the first answer is sent after it, decided against the defaults it gave', async () => {
    const t = setup();
    t.server.hold();
    let done!: Promise<HeraldError | null>;
    act(() => void (done = t.result.current.set('digest', 'muted'))); // digest is muted by default
    await waitFor(() => expect(t.server.waiting()).toBe(1));
    expect(t.server.calls).toEqual(['GET /preferences']);
    t.server.release(true);
    expect(await act(() => done)).toBeNull();
    expect(t.server.calls).toEqual(['GET /preferences', 'PATCH /preferences']);
    expect(t.server.patches).toEqual([{ digest: 'default' }]);
    expect(t.row('digest')).toEqual({ type: 'digest', setting: 'muted', source: 'default' });
  });

  it('a failed set puts the type back and resolves to the error (it never throws); the load error stays null', async () => {
    const t = setup();
    await loaded(t);
    t.server.hold();
    let done!: Promise<HeraldError | null>;
    act(() => void (done = t.result.current.set('availability', 'muted')));
    expect(t.row('availability')?.setting).toBe('muted');
    t.server.fail(503, 1);
    t.server.release(true);
    const error = await act(() => done);
    expect(error).toBeInstanceOf(HeraldError);
    expect(error).toMatchObject({ status: 503 });
    expect(t.row('availability')).toEqual({ type: 'availability', setting: 'on', source: 'default' });
    expect(t.result.current.error).toBeNull();
    expect(t.server.preferences.types).toEqual({ match: 'muted', custom_type: 'on' });
  });

  it('two quick sets: both show at once, go one at a time, and the first answer does not undo the second', async () => {
    const t = setup();
    await loaded(t);
    t.server.hold();
    let first!: Promise<HeraldError | null>;
    let second!: Promise<HeraldError | null>;
    act(() => {
      first = t.result.current.set('availability', 'muted');
      second = t.result.current.set('stage.accepted', 'muted');
    });
    expect(t.row('availability')?.setting).toBe('muted');
    expect(t.row('stage.accepted')?.setting).toBe('muted');
    await waitFor(() => expect(t.server.waiting()).toBe(1));
    expect(t.server.count(/^PATCH/)).toBe(1);

    // The first answer knows nothing of the second change: the second still shows.
    act(() => t.server.release());
    expect(await act(() => first)).toBeNull();
    expect(t.row('availability')).toMatchObject({ setting: 'muted', source: 'user' });
    expect(t.row('stage.accepted')).toMatchObject({ setting: 'muted', source: 'user' });
    await waitFor(() => expect(t.server.waiting()).toBe(1));
    t.server.release(true);
    expect(await act(() => second)).toBeNull();
    expect(t.server.patches).toEqual([{ availability: 'muted' }, { 'stage.accepted': 'muted' }]);
    expect(t.result.current.preferences?.types).toEqual(t.server.preferences.types);
    expect(t.server.preferences.types).toMatchObject({ availability: 'muted', 'stage.accepted': 'muted' });
  });

  it('quick sets of one type end on the last; a failed first one is put back without undoing the second', async () => {
    const t = setup();
    await loaded(t);
    t.server.hold();
    let results!: Promise<(HeraldError | null)[]>;
    act(() => {
      results = Promise.all([
        t.result.current.set('availability', 'muted'),
        t.result.current.set('availability', 'on'),
        t.result.current.set('availability', 'muted'),
      ]);
    });
    expect(t.row('availability')?.setting).toBe('muted');
    // The first answer (muted) does not show over the later changes (on, then muted).
    await waitFor(() => expect(t.server.waiting()).toBe(1));
    act(() => t.server.release());
    await waitFor(() => expect(t.server.patches).toHaveLength(1));
    expect(t.row('availability')?.setting).toBe('muted');
    await waitFor(() => expect(t.server.waiting()).toBe(1));
    act(() => t.server.release());
    await waitFor(() => expect(t.server.patches).toHaveLength(2));
    expect(t.row('availability')?.setting).toBe('muted');
    t.server.release(true);
    expect(await act(() => results)).toEqual([null, null, null]);
    expect(t.server.patches).toEqual([
      { availability: 'muted' },
      { availability: 'default' },
      { availability: 'muted' },
    ]);
    expect(t.row('availability')).toMatchObject({ setting: 'muted', source: 'user' });

    t.server.hold();
    act(() => {
      results = Promise.all([
        t.result.current.set('stage.accepted', 'muted'),
        t.result.current.set('custom_type', 'muted'),
      ]);
    });
    await waitFor(() => expect(t.server.waiting()).toBe(1));
    t.server.fail(503, 1);
    act(() => t.server.release());
    await waitFor(() => expect(t.row('stage.accepted')?.setting).toBe('on'));
    expect(t.row('custom_type')?.setting).toBe('muted');
    t.server.release(true);
    const [failed, worked] = await act(() => results);
    expect(failed).toMatchObject({ status: 503 });
    expect(worked).toBeNull();
    expect(t.row('custom_type')).toMatchObject({ setting: 'muted', source: 'user' });
    expect(t.row('stage.accepted')).toMatchObject({ setting: 'on', source: 'default' });
  });

  it('a failed load is in `error`; refresh loads again', async () => {
    const server = fakeServer();
    server.preferences.known = ['availability'];
    server.fail(500, 1);
    const client = clientOf(server);
    const { result } = renderHook(() => usePreferences(), {
      wrapper: ({ children }) => <HeraldProvider client={client}>{children}</HeraldProvider>,
    });
    await waitFor(() => expect(result.current.error).toMatchObject({ status: 500 }));
    expect(result.current).toMatchObject({ preferences: null, types: [], loading: false });
    await act(() => result.current.refresh());
    expect(result.current.error).toBeNull();
    expect(result.current.types).toEqual([{ type: 'availability', setting: 'on', source: 'default' }]);
  });

  it('a new client (another user): nothing of the old one is shown, its late answers are dropped', async () => {
    const alice = fakeServer();
    Object.assign(alice.preferences, { known: ['a'], types: { a: 'muted' } });
    const bob = fakeServer();
    bob.preferences.known = ['b'];
    const clients = { alice: clientOf(alice, 'alice'), bob: clientOf(bob, 'bob') };
    let active = clients.alice;
    const { result, rerender } = renderHook(() => usePreferences(), {
      wrapper: ({ children }) => <HeraldProvider client={active}>{children}</HeraldProvider>,
    });
    await waitFor(() => expect(result.current.types).toEqual([{ type: 'a', setting: 'muted', source: 'user' }]));

    alice.hold();
    let late!: Promise<HeraldError | null>;
    act(() => void (late = result.current.set('a', 'on')));
    bob.hold();
    active = clients.bob;
    rerender();
    expect(result.current).toMatchObject({ preferences: null, types: [], loading: true, error: null });
    bob.release(true);
    await waitFor(() => expect(result.current.types).toEqual([{ type: 'b', setting: 'on', source: 'default' }]));

    alice.release(true);
    expect(await act(() => late)).toBeNull(); // alice's change went through…
    expect(alice.preferences.types).toEqual({});
    expect(result.current.types).toEqual([{ type: 'b', setting: 'on', source: 'default' }]); // …and is not shown
    expect(result.current.preferences).toEqual({ types: {}, defaults: {}, known: ['b'] });
    // The set of the new client goes to the new user.
    expect(await act(() => result.current.set('b', 'muted'))).toBeNull();
    expect(bob.patches).toEqual([{ b: 'muted' }]);
    expect(alice.patches).toEqual([{ a: 'default' }]);
  });
});
