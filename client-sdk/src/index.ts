export { HeraldClient } from './client';
export { HeraldError } from './errors';
export { State } from './types';
export type {
  ClientEvents,
  DeletedContext,
  ErrorContext,
  EventBodyMap,
  FetchLike,
  HeraldClientOptions,
  NotificationContext,
  ReadAllContext,
  ReadContext,
  StateContext,
  WebSocketConstructor,
  WebSocketLike,
} from './types';
export type { ListOptions } from './rest';
export { backoff, type BackoffOptions } from './utils';
export { CloseCode, ProtocolError, parseServerFrame, isNotification } from './protocol';
export type {
  ClientMessage,
  DeletedFrame,
  ErrorBody,
  ErrorFrame,
  InboxPage,
  Notification,
  NotificationFrame,
  PongFrame,
  ReadAllFrame,
  ReadAllResult,
  ReadFrame,
  ReadyFrame,
  RelatedObject,
  ReplayedFrame,
  ServerFrame,
  UnreadCount,
} from './protocol';
