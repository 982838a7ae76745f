/** Which fixtures the publish panel offers, in what order, with what words. */
import type { FixtureFile } from './fixtures';

const files = import.meta.glob<FixtureFile>('../../tests/fixtures/events/*.json', {
  eager: true,
  import: 'default',
});

export interface CatalogEntry {
  /** The fixture's file name without `.json`. */
  name: string;
  label: string;
  /** What the visitor should expect. */
  blurb: string;
  /** Who publishes this shape. */
  service: string;
  /** Destructive: asks for confirmation first. */
  danger?: boolean;
  fixture: FixtureFile;
}

type Meta = Omit<CatalogEntry, 'name' | 'fixture'>;

/** Known fixtures, in the order shown. Fixtures added later appear after these, with generic words. */
const KNOWN: Record<string, Meta> = {
  'medtrack-student-created': {
    label: 'Student profile created',
    blurb: 'A welcome notification, with the student as the related object.',
    service: 'MedTrack profile-service',
  },
  'medtrack-stage-accepted': {
    label: 'Internship (stage) accepted',
    blurb: 'The stage-lifecycle rule tells the student; the id is in payload.student_user_id.',
    service: 'MedTrack core-service',
  },
  'medtrack-encadrant-created': {
    label: 'Supervisor profile created',
    blurb: 'A welcome notification for a supervisor (encadrant).',
    service: 'MedTrack profile-service',
  },
  'medtrack-stage-created-core': {
    label: 'Internship (stage) created',
    blurb:
      'Addressed by student id, not user id: publish "Student profile created" first, which teaches Herald that this student is you.',
    service: 'MedTrack core-service',
  },
  'medtrack-stage-completed-core': {
    label: 'Internship (stage) completed',
    blurb: 'Also addressed by student id (an alias); unknown until a "Student profile created" taught it.',
    service: 'MedTrack core-service',
  },
  'sgad-availability-closed': {
    label: 'Referee availability closed',
    blurb: 'Routed by the routing key: availability.closed.{your id}.',
    service: 'SGAD',
  },
  'sgad-availability-updated-no-type': {
    label: 'Referee availability updated',
    blurb: 'No event_type in the body: the routing key alone decides.',
    service: 'SGAD',
  },
  'sgad-notification-user': {
    label: 'Direct notification',
    blurb: 'A ready-made notification from a fanout exchange, to you.',
    service: 'SGAD',
  },
  'sgad-notification-system': {
    label: 'System broadcast',
    blurb: '"user_id": "system" means everyone: one row, in every inbox.',
    service: 'SGAD',
  },
  'http-user-registered': {
    label: 'User registered (HTTP)',
    blurb: 'A Django service POSTing its event; the user id is a number.',
    service: 'Django backend',
  },
  'http-user-login': {
    label: 'New sign-in (HTTP)',
    blurb: 'A security notice with the IP address from the event.',
    service: 'Django backend',
  },
  'domain-user-registered': {
    label: 'UserRegistered domain event',
    blurb: 'A domain event with its own event_id.',
    service: 'Domain events',
  },
  'medtrack-user-deleted': {
    label: 'Account deleted (GDPR)',
    blurb: 'The purge rule erases your whole inbox. Nothing is notified.',
    service: 'MedTrack auth-service',
    danger: true,
  },
};

/**
 * The settings panel's names for the notification types that config/rules.toml gives the catalog's events, in the
 * catalog's words. Types the catalog does not publish (e.g. `evaluation`, `match`) keep the component's default
 * name ("Evaluation", "Match").
 */
export const TYPE_LABELS: Record<string, string> = {
  welcome: 'Welcome (profile created, user registered)',
  stage: 'Internship (stage)',
  availability: 'Referee availability',
  security: 'New sign-in',
};

function nameOf(path: string): string {
  return path.replace(/^.*\//, '').replace(/\.json$/, '');
}

export const CATALOG: CatalogEntry[] = (() => {
  const byName = new Map(Object.entries(files).map(([path, fixture]) => [nameOf(path), fixture]));
  const known = Object.keys(KNOWN).filter((n) => byName.has(n));
  const others = [...byName.keys()].filter((n) => !(n in KNOWN)).sort();
  return [...known, ...others].map((name) => ({
    name,
    fixture: byName.get(name)!,
    ...(KNOWN[name] ?? {
      label: name,
      blurb: `${byName.get(name)!.routing_key || 'an event'} from tests/fixtures/events.`,
      service: byName.get(name)!.exchange || 'HTTP',
    }),
  }));
})();
