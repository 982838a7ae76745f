/**
 * The SDK's REST types, checked against the gateway's OpenAPI document at compile time.
 *
 * `./generated/openapi.ts` is generated from `docs/openapi.json` (`npm run generate`; a unit test fails when it
 * is stale). Each line below fails to compile when a hand-written type and the document's schema differ in any
 * field, optionality or nullability, or when a route the SDK calls is not in the document, so `npm run build`
 * and `npm run typecheck` fail on drift. Nothing here exists at run time.
 */
import type { components, operations, paths } from './generated/openapi';
import type { ErrorBody, InboxPage, Notification, ReadAllResult, RelatedObject, UnreadCount } from './protocol';
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
// TODO(issue 17): until `docs/openapi.json` gains contract A's fields (branch `inbox`), they are left out here.
type Pending = 'seen_at' | 'archived_at' | 'muted';
type Flat<T> = { [K in keyof T]: T[K] };
type Page = Flat<Omit<InboxPage, 'items'> & { items: Omit<Notification, Pending>[] }>;
type Filters = 'archived' | 'type' | 'related_type' | 'related_id';

export type RestContract = [
  // The wire types of protocol.ts.
  Holds<Same<Omit<Notification, Pending>, Schemas['Notification']>>,
  Holds<Same<RelatedObject, Schemas['RelatedObject']>>,
  Holds<Same<Page, Schemas['InboxPage']>>,
  Holds<Same<UnreadCount, Schemas['UnreadCount']>>,
  Holds<Same<ReadAllResult, Schemas['ReadAllResult']>>,
  Holds<Same<ErrorBody, Schemas['ErrorBody']>>,
  // What each `Inbox` method (rest.ts) sends and gets.
  Holds<Same<Omit<ListOptions, Filters>, NonNullable<operations['list_notifications']['parameters']['query']>>>,
  Holds<Same<Page, Json<'list_notifications', 200>>>,
  Holds<Same<UnreadCount, Json<'unread_count', 200>>>,
  Holds<Same<Omit<Notification, Pending>, Json<'mark_read', 200>>>,
  Holds<Same<ReadAllResult, Json<'mark_all_read', 200>>>,
  Holds<Same<NonNullable<operations['delete_notification']['responses'][204]['content']>, never>>,
  Holds<Same<ErrorBody, Json<'mark_read', 404>>>,
  // The routes `Inbox` calls, with the methods it uses.
  Holds<Same<paths[Inbox]['get'], operations['list_notifications']>>,
  Holds<Same<paths[`${Inbox}/unread_count`]['get'], operations['unread_count']>>,
  Holds<Same<paths[`${Inbox}/{id}/read`]['post'], operations['mark_read']>>,
  Holds<Same<paths[`${Inbox}/read_all`]['post'], operations['mark_all_read']>>,
  Holds<Same<paths[`${Inbox}/{id}`]['delete'], operations['delete_notification']>>,
];
