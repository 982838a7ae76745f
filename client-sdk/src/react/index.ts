export { HeraldProvider, useConnectionState, useHeraldClient, type HeraldProviderProps } from './context';
export {
  useNotifications,
  useUnreadCount,
  type UseNotificationsOptions,
  type UseNotificationsResult,
  type UseUnreadCountResult,
} from './hooks';
export {
  useCounts,
  useInbox,
  useInboxStore,
  type UseCountsResult,
  type UseInboxOptions,
  type UseInboxResult,
} from './store-hooks';
export { usePreferences, type PreferenceRow, type UsePreferencesResult } from './preferences';
