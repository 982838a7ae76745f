import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { aliasesIn, personalize, userIdProblem, userIdsIn, type FixtureFile } from './fixtures';

const dir = join(__dirname, '../../tests/fixtures/events');
const fixtures: Record<string, FixtureFile> = Object.fromEntries(
  readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => [f.replace(/\.json$/, ''), JSON.parse(readFileSync(join(dir, f), 'utf8')) as FixtureFile]),
);

describe('personalize', () => {
  it('puts the user id where each shape keeps it', () => {
    const me = 'alice';
    const p = (name: string) => personalize(fixtures[name]!, me);

    expect((p('medtrack-student-created').body as any).payload.user_id).toBe(me);
    expect((p('medtrack-encadrant-created').body as any).payload.user_id).toBe(me);
    expect((p('medtrack-stage-accepted').body as any).payload.student_user_id).toBe(me);
    expect((p('medtrack-user-deleted').body as any).payload.user_id).toBe(me);
    expect((p('sgad-notification-user').body as any).user_id).toBe(me);
    expect((p('domain-user-registered').body as any).user_id).toBe(me);

    const closed = p('sgad-availability-closed');
    expect(closed.routingKey).toBe('availability.closed.alice');
    expect((closed.body as any).referee_id).toBe(me);
    expect(closed.replaced).toEqual(['/referee_id', 'routing key segment 2']);
    expect(p('sgad-availability-updated-no-type').routingKey).toBe('availability.updated.alice');

    const login = p('http-user-login');
    expect((login.body as any).user_id).toBe(me);
    expect((login.body as any).data.user_id).toBe(me);
    expect(login.exchange).toBe('');
    expect(login.routingKey).toBe('user.login');
  });

  it('keeps other ids and fields unchanged', () => {
    const out = personalize(fixtures['medtrack-stage-accepted']!, 'alice').body as any;
    const orig = fixtures['medtrack-stage-accepted']!.body as any;
    expect(out.payload.student_id).toBe(orig.payload.student_id);
    expect(out.payload.stage_id).toBe(orig.payload.stage_id);
    expect({ ...out, payload: { ...out.payload, student_user_id: 'x' } }).toEqual({
      ...orig,
      payload: { ...orig.payload, student_user_id: 'x' },
    });
  });

  it('keeps numeric user ids numeric when the new id is an integer', () => {
    const body = personalize(fixtures['http-user-registered']!, '77').body as any;
    expect(body.user_id).toBe(77);
    expect(body.data.user_id).toBe(77);
    expect((personalize(fixtures['domain-user-registered']!, '77').body as any).user_id).toBe('77');
  });

  it("greets the signed-in user, not the fixture's person, by name", () => {
    const student = personalize(fixtures['medtrack-student-created']!, 'alice');
    expect((student.body as any).payload.first_name).toBe('alice');
    expect((student.body as any).payload.last_name).toBe('(demo)');
    expect(JSON.stringify(student.body)).not.toMatch(/john/i);
    expect(student.renamed).toEqual(['/payload/first_name', '/payload/last_name', '/payload/email']);
    const supervisor = personalize(fixtures['medtrack-encadrant-created']!, 'alice').body as any;
    expect(`${supervisor.payload.first_name} ${supervisor.payload.last_name}`).toBe('alice (demo)');
    for (const name of ['http-user-login', 'http-user-registered', 'domain-user-registered']) {
      const body = JSON.stringify(personalize(fixtures[name]!, 'alice').body);
      expect(body, name).not.toMatch(/john|"ana"/i);
    }
  });

  it("keeps the names when the visitor is the fixture's own user (a quick pick)", () => {
    const own = (fixtures['medtrack-student-created']!.body as any).payload.user_id as string;
    const student = personalize(fixtures['medtrack-student-created']!, own);
    expect((student.body as any).payload.first_name).toBe('John');
    expect(student.renamed).toEqual([]);
  });

  it('names no one in the broadcast', () => {
    expect(personalize(fixtures['sgad-notification-system']!, 'alice').renamed).toEqual([]);
  });

  it('leaves the broadcast to everyone', () => {
    const sys = personalize(fixtures['sgad-notification-system']!, 'alice');
    expect(sys.broadcast).toBe(true);
    expect(sys.replaced).toEqual([]);
    expect((sys.body as any).user_id).toBe('system');
    expect(sys.exchange).toBe('sgad.notifications');
    expect(sys.routingKey).toBe('');
  });

  it('personalizes every fixture but the broadcast and those addressed through an alias', () => {
    for (const [name, f] of Object.entries(fixtures)) {
      const p = personalize(f, 'zed');
      if (name === 'sgad-notification-system') continue;
      if (userIdsIn(f.body).size === 0) {
        // Addressed by another service's id: a fixture that names a user teaches that alias to Herald, so the
        // demo reaches the visitor once that one was published as theirs.
        const aliases = aliasesIn(f.body);
        expect(aliases.size, name).toBeGreaterThan(0);
        const teachers = Object.values(fixtures).filter(
          (t) => userIdsIn(t.body).size > 0 && [...aliases].every((a) => aliasesIn(t.body).has(a)),
        );
        expect(teachers.length, `${name}: no fixture names a user with its aliases`).toBeGreaterThan(0);
        expect(p.replaced, name).toEqual([]);
        continue;
      }
      expect(p.replaced.length, name).toBeGreaterThan(0);
      expect(userIdsIn(p.body), name).toEqual(new Set(['zed']));
    }
  });

  it('does not touch the fixture itself', () => {
    const before = JSON.stringify(fixtures['http-user-login']);
    personalize(fixtures['http-user-login']!, 'alice');
    expect(JSON.stringify(fixtures['http-user-login'])).toBe(before);
  });
});

describe('userIdProblem', () => {
  it('accepts ids the fixtures use', () => {
    for (const id of ['0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40', '123', '42', 'alice', 'a_b@c:d']) {
      expect(userIdProblem(id), id).toBeNull();
    }
  });
  it('refuses what cannot be routed', () => {
    for (const id of ['', 'a.b', 'a b', 'a/b', 'a#', 'a*', 'system', 'x'.repeat(65)]) {
      expect(userIdProblem(id), id).not.toBeNull();
    }
  });
});
