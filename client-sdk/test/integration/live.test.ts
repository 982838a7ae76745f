import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { State, type HeraldClient, type NotificationContext } from '../../src';
import {
  fixture,
  mintToken,
  newUser,
  notify,
  postEvent,
  skipReason,
  startGateway,
  tempDir,
  testClient,
  type Gateway,
} from './gateway';

const reason = skipReason('live');

describe.skipIf(reason !== null)('live notifications against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  const clients: HeraldClient<any>[] = [];
  const track = <C extends HeraldClient<any>>(c: C) => (clients.push(c), c);

  beforeAll(async () => {
    // A 1 s ping interval lets a test watch the text ping/pong keep a quiet link up.
    gw = await startGateway(tmp.dir, 0, '[websocket]\nping_interval_secs = 1\n');
  });
  afterEach(() => {
    clients.splice(0).forEach((c) => c.close());
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  const connected = (c: HeraldClient<any>) =>
    vi.waitFor(() => expect(c.state).toBe(State.Connected), { timeout: 10_000 });

  it('receives notifications posted for its user, in order, with the original body', async () => {
    const user = newUser();
    const client = track(testClient(gw, user));
    const got: NotificationContext[] = [];
    const states: string[] = [];
    client.on('notification', (n) => got.push(n));
    client.on('state', ({ newState }) => states.push(newState));
    client.connect();
    await connected(client);

    const sent = [await notify(gw, user), await notify(gw, user), await notify(gw, user)];
    await notify(gw, newUser()); // someone else's
    await vi.waitFor(() => expect(got).toHaveLength(3), { timeout: 5000 });
    expect(got.map((n) => n.notification.id)).toEqual(sent.map((s) => s.id));
    expect(got[0]!.body).toEqual(sent[0]!.body);
    expect(got[0]!.notification).toMatchObject({ user_id: user, title: sent[0]!.body.title, read_at: null });
    expect(client.position?.targeted).toBe(sent[2]!.id);
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toHaveLength(3); // nothing else arrives
    expect(got.slice(1).map((n) => n.notification.prev_id)).toEqual([sent[0]!.id, sent[1]!.id]);
    expect(states).toEqual(['connecting', 'connected']); // no reconnect
  });

  it("resumes from the server's newest ids when its saved position is above them (an inbox restored from a backup)", async () => {
    const user = newUser();
    // Ids this server has not given yet: as after a restore, which gives the ids after the backup's newest again.
    const above = (await notify(gw, newUser())).id + 1000;
    const client = track(testClient(gw, user, { since: { targeted: above, broadcast: above } }));
    const got: number[] = [];
    const stale: string[] = [];
    client.on('notification', ({ notification }) => got.push(notification.id));
    client.on('stale', ({ reason }) => stale.push(reason));
    client.connect();
    await connected(client);
    const sent = await notify(gw, user);
    await vi.waitFor(() => expect(got).toEqual([sent.id]), { timeout: 5000 }); // before: dropped as a duplicate
    expect(client.position!.targeted).toBe(sent.id);
    expect(stale).toEqual(['reconnect']); // what the app fetched before may be from the old history
  });

  it('types bodies per event_type (stage.accepted fixture routed to payload.student_user_id)', async () => {
    type Bodies = { 'stage.accepted': { payload: { stage_id: string; service_name: string } } };
    const f = fixture('medtrack-stage-accepted.json');
    const user = (f.body as { payload: { student_user_id: string } }).payload.student_user_id;
    const client = track(testClient<Bodies>(gw, user));
    const stages: string[] = [];
    client.on('notification', (n) => {
      if (n.eventType === 'stage.accepted') stages.push(`${n.body.payload.stage_id} ${n.notification.title}`);
    });
    client.connect();
    await connected(client);
    const [result] = await postEvent(gw, f.body, f.exchange, f.routing_key);
    expect(result).toMatchObject({ status: 'stored' });
    await vi.waitFor(() => expect(stages).toHaveLength(1), { timeout: 5000 });
    expect(stages[0]).toBe('9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d Your stage at Cardiology was accepted');
  });

  it('keeps a quiet link up with text pings (no reconnect across several ping intervals)', async () => {
    const user = newUser();
    const client = track(testClient(gw, user));
    const states: string[] = [];
    client.on('state', ({ newState }) => states.push(newState));
    client.connect();
    await connected(client);
    await new Promise((r) => setTimeout(r, 3500)); // > 3 intervals, > 2× interval without server data
    expect(states).toEqual(['connecting', 'connected']);
    const { id } = await notify(gw, user);
    await vi.waitFor(() => expect(client.position?.targeted).toBe(id), { timeout: 5000 });
  });

  it('a refused token stops in unauthorized; connect() again calls getToken() for a fresh one', async () => {
    const user = newUser();
    let calls = 0;
    const client = track(
      testClient(gw, user, {
        getToken: async () => (++calls === 1 ? mintToken(user, 3600, 'wrong-secret') : mintToken(user)),
      }),
    );
    client.connect();
    await vi.waitFor(() => expect(client.state).toBe(State.Unauthorized), { timeout: 10_000 });
    expect(calls).toBe(1);
    client.connect();
    await connected(client);
    expect(calls).toBe(2);
  });

  it('a token for another user is refused (403, unauthorized)', async () => {
    const client = track(testClient(gw, newUser(), { getToken: async () => mintToken(newUser()) }));
    const statuses: number[] = [];
    client.on('unauthorized', ({ status }) => statuses.push(status));
    client.connect();
    await vi.waitFor(() => expect(client.state).toBe(State.Unauthorized), { timeout: 10_000 });
    expect(statuses).toEqual([403]);
  });
});

describe.skipIf(reason !== null)('token expiry against a real gateway', () => {
  const tmp = tempDir();
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(tmp.dir, 0, 'leeway_secs = 0\n'); // appended to [auth]
  });
  afterAll(async () => {
    await gw?.stop();
    tmp.remove();
  });

  // Either path keeps the session: an in-band refresh (`token_expiring` → `auth` → `auth_ok`) or, when the
  // token runs out, close 4001 → an immediate reconnect with a fresh token (the backoff is 5 s, so a quick
  // return can only be that path).
  it('outlives its first token: getToken() is called again and notifications keep flowing', async () => {
    const user = newUser();
    let calls = 0;
    const client = testClient(gw, user, {
      getToken: async () => mintToken(user, ++calls === 1 ? 2 : 3600),
      backoff: { minDelayMs: 5000, maxDelayMs: 5000 },
    });
    const states: string[] = [];
    const errors: string[] = [];
    client.on('state', ({ newState }) => states.push(newState));
    client.on('error', ({ kind, error }) => errors.push(`${kind}:${error.code}`));
    try {
      client.connect();
      await vi.waitFor(() => expect(client.state).toBe(State.Connected), { timeout: 5000 });
      await vi.waitFor(() => expect(calls).toBe(2), { timeout: 6000 });
      await new Promise((r) => setTimeout(r, 2500)); // past the first token's expiry
      expect(client.state).toBe(State.Connected);
      expect(states.length === 2 || states.join() === 'connecting,connected,connecting,connected').toBe(true);
      expect(errors.filter((e) => !e.startsWith('server:close_'))).toEqual([]);
      const { id } = await notify(gw, user);
      await vi.waitFor(() => expect(client.position?.targeted).toBe(id), { timeout: 5000 });
    } finally {
      client.close();
    }
  });
});
