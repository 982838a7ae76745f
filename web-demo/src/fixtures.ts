/**
 * The repository's event fixtures (tests/fixtures/events/*.json: what real services publish), made personal: the
 * user id in each is replaced by the signed-in user's, so the routing rules send the notification to the visitor.
 * Pure functions, tested in fixtures.test.ts; the catalogue (which files, in what order, with what labels) is in
 * catalog.ts.
 */

/** A fixture file as stored: the AMQP envelope (or `transport: "http"`) and the body exactly as published. */
export interface FixtureFile {
  exchange?: string;
  exchange_type?: string;
  routing_key?: string;
  transport?: string;
  properties?: Record<string, unknown>;
  body: unknown;
}

/** Keys that hold a user id in the shapes found in the wild (see SPEC.md), at any depth. */
export const USER_ID_KEYS = ['user_id', 'student_user_id', 'referee_id'] as const;
/**
 * Keys that hold another service's id for a user (config/rules.toml: `alias:KIND:/pointer` recipients). Events
 * addressed this way reach the user an earlier event taught Herald (e.g. `student.created` carries both ids).
 */
export const ALIAS_KEYS: Record<string, string> = { student_id: 'student', encadrant_id: 'encadrant' };
/**
 * Keys that hold the person's name or handle, which the routing rules put in titles ("Welcome to MedTrack,
 * {{ first_name }}!"). When the visitor is not the fixture's own user, their id goes in instead, so the
 * notification does not greet "John" (last_name becomes a neutral "(demo)", the email a placeholder).
 */
export const NAME_KEYS: Record<string, (userId: string) => string> = {
  first_name: (id) => id,
  username: (id) => id,
  full_name: (id) => id,
  last_name: () => '(demo)',
  email: () => 'you@example.com',
};
/** User-id values that mean "everyone" (config/rules.toml: `everyone_values`). */
export const EVERYONE_VALUES = ['system'];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every user id the body names (under USER_ID_KEYS), "everyone" values excepted. */
export function userIdsIn(body: unknown): Set<string> {
  const ids = new Set<string>();
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, child] of Object.entries(v)) {
        if (
          (USER_ID_KEYS as readonly string[]).includes(k) &&
          (typeof child === 'string' || typeof child === 'number')
        ) {
          if (!EVERYONE_VALUES.includes(String(child))) ids.add(String(child));
        } else walk(child);
      }
    }
  };
  walk(body);
  return ids;
}

function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

export interface Personalized {
  exchange: string;
  routingKey: string;
  body: Json;
  /** Where the user id was replaced: JSON pointers into the body, and `routing key segment N`. */
  replaced: string[];
  /** Where a name (NAME_KEYS) was replaced: JSON pointers into the body. */
  renamed: string[];
  /** The event names no user (e.g. `"user_id": "system"`): a broadcast to everyone. */
  broadcast: boolean;
}

/**
 * The fixture as the signed-in user's event: each user id under USER_ID_KEYS, and each routing-key segment equal
 * to one of them, becomes `userId` (a number when the original was a number and `userId` is an integer); unless
 * `userId` is the fixture's own user, the names under NAME_KEYS are replaced too.
 */
export function personalize(fixture: FixtureFile, userId: string): Personalized {
  const ids = userIdsIn(fixture.body);
  const replaced: string[] = [];
  const renamed: string[] = [];
  // The fixture is about someone else (not a quick pick of its own user): their name goes too.
  const rename = ids.size > 0 && !ids.has(userId);
  const asNumber = /^(0|[1-9]\d{0,14})$/.test(userId) ? Number(userId) : null;
  const map = (v: unknown, path: string): Json => {
    if (Array.isArray(v)) return v.map((x, i) => map(x, `${path}/${i}`));
    if (v && typeof v === 'object') {
      const out: { [k: string]: Json } = {};
      for (const [k, child] of Object.entries(v)) {
        const p = `${path}/${escapePointer(k)}`;
        if (
          (USER_ID_KEYS as readonly string[]).includes(k) &&
          (typeof child === 'string' || typeof child === 'number') &&
          ids.has(String(child))
        ) {
          out[k] = typeof child === 'number' && asNumber !== null ? asNumber : userId;
          replaced.push(p);
        } else if (rename && typeof child === 'string' && Object.hasOwn(NAME_KEYS, k)) {
          out[k] = NAME_KEYS[k]!(userId);
          renamed.push(p);
        } else out[k] = map(child, p);
      }
      return out;
    }
    return v as Json;
  };
  const body = map(fixture.body, '');
  const segments = (fixture.routing_key ?? '').split('.');
  const routingKey =
    (fixture.routing_key ?? '')
      ? segments
          .map((s, i) => {
            if (!ids.has(s)) return s;
            replaced.push(`routing key segment ${i}`);
            return userId;
          })
          .join('.')
      : '';
  return { exchange: fixture.exchange ?? '', routingKey, body, replaced, renamed, broadcast: ids.size === 0 };
}

/**
 * A user id the demo can route: it goes into a URL path and may become a routing-key word, so no dots, slashes,
 * spaces or AMQP wildcards. Returns a reason, or null when fine.
 */
export function userIdProblem(id: string): string | null {
  if (!id) return 'Enter a user id.';
  if (id.length > 64) return 'At most 64 characters.';
  if (!/^[A-Za-z0-9_@:-]+$/.test(id)) return 'Use letters, digits and _ - @ : only (no spaces, dots or slashes).';
  if (EVERYONE_VALUES.includes(id)) return `"${id}" means everyone in the routing rules; pick another id.`;
  return null;
}

/** The aliases (`kind:id`) the body names under ALIAS_KEYS, at any depth. */
export function aliasesIn(body: unknown): Set<string> {
  const out = new Set<string>();
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, child] of Object.entries(v)) {
        const kind = ALIAS_KEYS[k];
        if (kind && typeof child === 'string') out.add(`${kind}:${child}`);
        else walk(child);
      }
    }
  };
  walk(body);
  return out;
}
