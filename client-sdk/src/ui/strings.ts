/** The components' words: English, Spanish and French included; any of them can be overridden (`strings`). */

export interface HeraldStrings {
  /** The bell's accessible name, e.g. "Notifications, 3 unread". */
  bellLabel: (count: number, kind: 'unseen' | 'unread') => string;
  inboxTitle: string;
  tabsLabel: string;
  tabAll: string;
  tabUnread: string;
  tabArchived: string;
  markAllRead: string;
  markRead: string;
  markUnread: string;
  archive: string;
  unarchive: string;
  remove: string;
  /** The accessible name of an item's action button: "Mark read: <title>". */
  actionOn: (action: string, title: string) => string;
  /** Said before an unread item's title to screen readers. */
  unreadPrefix: string;
  /** Shown on a broadcast (a notification for everyone). */
  everyone: string;
  /** Shown on a notification of a type the user muted (listed, not counted, not pushed). */
  mutedTag: string;
  loading: string;
  loadMore: string;
  retry: string;
  loadFailed: string;
  /** Shown (`role="alert"`) when an action (mark read, archive, mark all read, …) failed. */
  actionFailed: string;
  emptyAll: string;
  emptyUnread: string;
  emptyArchived: string;
  /** The toasts' region. */
  toastsLabel: string;
  dismiss: string;
  /** The bell's panel close button. */
  close: string;
  justNow: string;
  /** `<NotificationPreferences>`' heading. */
  preferencesTitle: string;
  /** What muting a type does, under the heading. */
  preferencesHint: string;
  /** No type to show. */
  preferencesEmpty: string;
  preferencesLoadFailed: string;
  /** Shown in a type's switch: notifications of that type on, or muted. */
  preferenceOn: string;
  preferenceMuted: string;
}

const en: HeraldStrings = {
  bellLabel: (n, kind) =>
    kind === 'unread'
      ? n === 0
        ? 'Notifications, none unread'
        : `Notifications, ${n} unread`
      : n === 0
        ? 'Notifications, nothing new'
        : `Notifications, ${n} new`,
  inboxTitle: 'Notifications',
  tabsLabel: 'Show',
  tabAll: 'All',
  tabUnread: 'Unread',
  tabArchived: 'Archived',
  markAllRead: 'Mark all read',
  markRead: 'Mark read',
  markUnread: 'Mark unread',
  archive: 'Archive',
  unarchive: 'Unarchive',
  remove: 'Delete',
  actionOn: (action, title) => `${action}: ${title}`,
  unreadPrefix: 'Unread: ',
  everyone: 'everyone',
  mutedTag: 'muted',
  loading: 'Loading…',
  loadMore: 'Load more',
  retry: 'Try again',
  loadFailed: 'The notifications could not be loaded.',
  actionFailed: 'That did not go through. Try again.',
  emptyAll: 'No notifications yet.',
  emptyUnread: 'Nothing unread.',
  emptyArchived: 'Nothing archived.',
  toastsLabel: 'Live notifications',
  dismiss: 'Dismiss',
  close: 'Close',
  justNow: 'just now',
  preferencesTitle: 'Notification settings',
  preferencesHint: 'Muted types still reach your inbox, but they do not notify you or count as new.',
  preferencesEmpty: 'There are no notification types to set.',
  preferencesLoadFailed: 'The notification settings could not be loaded.',
  preferenceOn: 'On',
  preferenceMuted: 'Muted',
};

const es: HeraldStrings = {
  bellLabel: (n, kind) =>
    kind === 'unread'
      ? n === 0
        ? 'Notificaciones, ninguna sin leer'
        : `Notificaciones, ${n} sin leer`
      : n === 0
        ? 'Notificaciones, nada nuevo'
        : `Notificaciones, ${n} ${n === 1 ? 'nueva' : 'nuevas'}`,
  inboxTitle: 'Notificaciones',
  tabsLabel: 'Mostrar',
  tabAll: 'Todas',
  tabUnread: 'Sin leer',
  tabArchived: 'Archivadas',
  markAllRead: 'Marcar todas como leídas',
  markRead: 'Marcar como leída',
  markUnread: 'Marcar como no leída',
  archive: 'Archivar',
  unarchive: 'Desarchivar',
  remove: 'Eliminar',
  actionOn: (action, title) => `${action}: ${title}`,
  unreadPrefix: 'Sin leer: ',
  everyone: 'para todos',
  mutedTag: 'silenciado',
  loading: 'Cargando…',
  loadMore: 'Cargar más',
  retry: 'Reintentar',
  loadFailed: 'No se pudieron cargar las notificaciones.',
  actionFailed: 'No se pudo completar. Inténtalo de nuevo.',
  emptyAll: 'Todavía no hay notificaciones.',
  emptyUnread: 'No hay nada sin leer.',
  emptyArchived: 'No hay nada archivado.',
  toastsLabel: 'Notificaciones en directo',
  dismiss: 'Descartar',
  close: 'Cerrar',
  justNow: 'ahora mismo',
  preferencesTitle: 'Preferencias de notificación',
  preferencesHint: 'Los tipos silenciados siguen llegando a tu bandeja, pero no te avisan ni cuentan como nuevos.',
  preferencesEmpty: 'No hay tipos de notificación que configurar.',
  preferencesLoadFailed: 'No se pudieron cargar las preferencias de notificación.',
  preferenceOn: 'Activado',
  preferenceMuted: 'Silenciado',
};

const fr: HeraldStrings = {
  bellLabel: (n, kind) =>
    kind === 'unread'
      ? n === 0
        ? 'Notifications, aucune non lue'
        : `Notifications, ${n} non ${n === 1 ? 'lue' : 'lues'}`
      : n === 0
        ? 'Notifications, rien de nouveau'
        : `Notifications, ${n} ${n === 1 ? 'nouvelle' : 'nouvelles'}`,
  inboxTitle: 'Notifications',
  tabsLabel: 'Afficher',
  tabAll: 'Toutes',
  tabUnread: 'Non lues',
  tabArchived: 'Archivées',
  markAllRead: 'Tout marquer comme lu',
  markRead: 'Marquer comme lue',
  markUnread: 'Marquer comme non lue',
  archive: 'Archiver',
  unarchive: 'Désarchiver',
  remove: 'Supprimer',
  actionOn: (action, title) => `${action} : ${title}`,
  unreadPrefix: 'Non lue : ',
  everyone: 'pour tous',
  mutedTag: 'en sourdine',
  loading: 'Chargement…',
  loadMore: 'Charger plus',
  retry: 'Réessayer',
  loadFailed: 'Impossible de charger les notifications.',
  actionFailed: 'L’action n’a pas abouti. Réessayez.',
  emptyAll: 'Aucune notification pour le moment.',
  emptyUnread: 'Rien de non lu.',
  emptyArchived: 'Rien d’archivé.',
  toastsLabel: 'Notifications en direct',
  dismiss: 'Fermer la notification',
  close: 'Fermer',
  justNow: 'à l’instant',
  preferencesTitle: 'Préférences de notification',
  preferencesHint:
    'Les types en sourdine arrivent toujours dans votre boîte, mais ne vous alertent pas et ne comptent pas comme nouveaux.',
  preferencesEmpty: 'Aucun type de notification à régler.',
  preferencesLoadFailed: 'Impossible de charger les préférences de notification.',
  preferenceOn: 'Activé',
  preferenceMuted: 'En sourdine',
};

/** The included translations, by language. */
export const STRINGS: Readonly<Record<'en' | 'es' | 'fr', HeraldStrings>> = { en, es, fr };

/** The strings for `locale` (`es`, `es-MX`, `fr-CA`… by language; English otherwise), overridden by `overrides`. */
export function resolveStrings(locale?: string, overrides?: Partial<HeraldStrings>): HeraldStrings {
  const lang = (locale ?? 'en').toLowerCase().split(/[-_]/)[0] as keyof typeof STRINGS;
  const base = STRINGS[lang] ?? en;
  return overrides ? { ...base, ...overrides } : base;
}

const rtfs = new Map<string, Intl.RelativeTimeFormat>();
const dtfs = new Map<string, Intl.DateTimeFormat>();

function cached<T>(map: Map<string, T>, locale: string | undefined, make: (l: string | undefined) => T): T {
  const key = locale ?? '';
  let v = map.get(key);
  if (!v) {
    try {
      v = make(locale);
    } catch {
      v = make(undefined); // an unknown locale tag: the runtime's default
    }
    map.set(key, v);
  }
  return v;
}

/** "just now", "3 minutes ago", "yesterday", then a date: in `locale`, through Intl. */
export function relativeTime(iso: string, now: number, locale: string | undefined, justNow: string): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const rtf = cached(rtfs, locale, (l) => new Intl.RelativeTimeFormat(l, { numeric: 'auto' }));
  const s = Math.round((t - now) / 1000);
  if (Math.abs(s) < 45) return justNow;
  const m = Math.round(s / 60);
  if (Math.abs(m) < 60) return rtf.format(m, 'minute');
  const h = Math.round(m / 60);
  if (Math.abs(h) < 24) return rtf.format(h, 'hour');
  const d = Math.round(h / 24);
  if (Math.abs(d) < 7) return rtf.format(d, 'day');
  return absoluteTime(iso, locale);
}

/** A date and time in `locale` (the tooltip of a relative time). */
export function absoluteTime(iso: string, locale: string | undefined): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return cached(dtfs, locale, (l) => new Intl.DateTimeFormat(l, { dateStyle: 'medium', timeStyle: 'short' })).format(t);
}
