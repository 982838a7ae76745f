export { HeraldClient } from './client';
export { HeraldError } from './errors';
export { State } from './types';
export type {
  ClientEvents,
  CountsContext,
  IdsContext,
  SeenAllContext,
  DeletedContext,
  ErrorContext,
  EventBodyMap,
  FetchLike,
  HeraldClientOptions,
  NotificationContext,
  ReadAllContext,
  LiveContext,
  ReadContext,
  ResyncContext,
  TruncatedContext,
  UnauthorizedContext,
  StaleContext,
  StateContext,
  WebSocketConstructor,
  WebSocketLike,
} from './types';
export type { ListOptions } from './rest';
export {
  getInboxStore,
  InboxStore,
  tabFilter,
  type CountsState,
  type InboxFilter,
  type InboxTab,
  type ListState,
} from './store';
export { backoff, type BackoffOptions } from './utils';
export type { Position, Since } from './cursors';
export { CloseCode, ProtocolError, parseServerFrame, isNotification, chainOf } from './protocol';
export type {
  Chain,
  ClientMessage,
  DeletedFrame,
  ArchivedFrame,
  Counts,
  CountsFrame,
  ErrorBody,
  ErrorFrame,
  EventFrame,
  InboxPage,
  Notification,
  NotificationFrame,
  PongFrame,
  PreferenceValue,
  Preferences,
  SeenAllFrame,
  SeenAllResult,
  UnarchivedFrame,
  UnreadFrame,
  ReadAllFrame,
  ReadAllResult,
  ReadFrame,
  ReadyFrame,
  RelatedObject,
  ReplayedFrame,
  ResyncFrame,
  ServerFrame,
  TruncatedFrame,
  UnreadCount,
} from './protocol';
