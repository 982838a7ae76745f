/**
 * The SDK's REST types, checked against the gateway's OpenAPI document at compile time.
 *
 * `./generated/openapi.ts` is generated from `docs/openapi.json` (`npm run generate`; a unit test fails when it
 * is stale). Each line below fails to compile when a hand-written type and the document's schema differ in any
 * field, optionality or nullability, or when a route the SDK calls is not in the document, so `npm run build`
 * and `npm run typecheck` fail on drift. Nothing here exists at run time.
 */
import type { components, operations, paths } from './generated/openapi';
import type {
  BatchAction,
  BatchResult,
  Counts,
  ErrorBody,
  InboxPage,
  Notification,
  PreferenceChange,
  PreferenceValue,
  Preferences,
  ReadAllResult,
  RelatedObject,
  SeenAllResult,
  UnreadCount,
} from './protocol';
import type { ListOptions } from './rest';

type Schemas = components['schemas'];
/** `true` only when A and B are the same type (not merely assignable either way). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Holds<T extends true> = T;
type Json<
  Op extends keyof operations,
  Status extends keyof operations[Op]['responses'],
> = operations[Op]['responses'][Status] extends {
  content: { 'application/json': infer Body };
}
  ? Body
  : never;
type Inbox = '/api/v1/users/{user_id}/notifications';
type Body<Op extends keyof operations> = operations[Op]['requestBody'] extends {
  content: { 'application/json': infer B };
}
  ? B
  : never;

export type RestContract = [
  // The wire types of protocol.ts.
  Holds<Same<Notification, Schemas['Notification']>>,
  Holds<Same<RelatedObject, Schemas['RelatedObject']>>,
  Holds<Same<InboxPage, Schemas['InboxPage']>>,
  Holds<Same<UnreadCount, Schemas['UnreadCount']>>,
  Holds<Same<ReadAllResult, Schemas['ReadAllResult']>>,
  Holds<Same<SeenAllResult, Schemas['SeenAllResult']>>,
  Holds<Same<Counts, Schemas['Counts']>>,
  Holds<Same<PreferenceValue, Schemas['TypeSetting']>>,
  Holds<Same<Preferences, Schemas['Preferences']>>,
  Holds<Same<ErrorBody, Schemas['ErrorBody']>>,
  Holds<Same<BatchAction, Schemas['BatchAction']>>,
  Holds<Same<BatchResult, Schemas['BatchResult']>>,
  // What each `Inbox` method (rest.ts) sends and gets.
  Holds<Same<ListOptions, NonNullable<operations['list_notifications']['parameters']['query']>>>,
  Holds<Same<InboxPage, Json<'list_notifications', 200>>>,
  Holds<Same<UnreadCount, Json<'unread_count', 200>>>,
  Holds<Same<Counts, Json<'counts', 200>>>,
  Holds<Same<Notification, Json<'mark_read', 200>>>,
  Holds<Same<Notification, Json<'mark_unread', 200>>>,
  Holds<Same<Notification, Json<'archive', 200>>>,
  Holds<Same<Notification, Json<'unarchive', 200>>>,
  Holds<Same<ReadAllResult, Json<'mark_all_read', 200>>>,
  Holds<Same<SeenAllResult, Json<'seen_all', 200>>>,
  Holds<Same<Preferences, Json<'get_preferences', 200>>>,
  Holds<Same<{ types: Record<string, PreferenceValue> }, Body<'put_preferences'>>>,
  Holds<Same<Preferences, Json<'put_preferences', 200>>>,
  Holds<Same<{ types: Record<string, PreferenceChange> }, Body<'patch_preferences'>>>,
  Holds<Same<Preferences, Json<'patch_preferences', 200>>>,
  Holds<Same<NonNullable<operations['delete_notification']['responses'][204]['content']>, never>>,
  Holds<Same<ErrorBody, Json<'mark_read', 404>>>,
  Holds<Same<{ action: BatchAction; ids: number[] }, Body<'batch'>>>,
  Holds<Same<BatchResult, Json<'batch', 200>>>,
  // The routes `Inbox` calls, with the methods it uses.
  Holds<Same<paths[Inbox]['get'], operations['list_notifications']>>,
  Holds<Same<paths[`${Inbox}/unread_count`]['get'], operations['unread_count']>>,
  Holds<Same<paths[`${Inbox}/counts`]['get'], operations['counts']>>,
  Holds<Same<paths[`${Inbox}/{id}/read`]['post'], operations['mark_read']>>,
  Holds<Same<paths[`${Inbox}/{id}/unread`]['post'], operations['mark_unread']>>,
  Holds<Same<paths[`${Inbox}/{id}/archive`]['post'], operations['archive']>>,
  Holds<Same<paths[`${Inbox}/{id}/unarchive`]['post'], operations['unarchive']>>,
  Holds<Same<paths[`${Inbox}/read_all`]['post'], operations['mark_all_read']>>,
  Holds<Same<paths[`${Inbox}/seen_all`]['post'], operations['seen_all']>>,
  Holds<Same<paths[`${Inbox}/batch`]['post'], operations['batch']>>,
  Holds<Same<paths[`${Inbox}/{id}`]['delete'], operations['delete_notification']>>,
  Holds<Same<paths['/api/v1/users/{user_id}/preferences']['get'], operations['get_preferences']>>,
  Holds<Same<paths['/api/v1/users/{user_id}/preferences']['put'], operations['put_preferences']>>,
  Holds<Same<paths['/api/v1/users/{user_id}/preferences']['patch'], operations['patch_preferences']>>,
];
