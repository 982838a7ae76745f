/**
 * `@herald/client/ui`: drop-in React components on the client's shared inbox store. Use inside
 * `<HeraldProvider>` (from `@herald/client/react`) and import the styles once:
 * `import '@herald/client/ui/styles.css'`.
 */
export { NotificationBell, type NotificationBellProps } from './NotificationBell';
export { Inbox, type InboxProps } from './Inbox';
export { Toasts, type ToastsProps } from './Toasts';
export { NotificationPreferences, type NotificationPreferencesProps } from './NotificationPreferences';
export { STRINGS, resolveStrings, relativeTime, absoluteTime, type HeraldStrings } from './strings';
export type { CommonProps } from './shared';
