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
export { backoff, type BackoffOptions } from './utils';
export type { Position, Since } from './cursors';
export { CloseCode, ProtocolError, parseServerFrame, isNotification, chainOf } from './protocol';
export type {
  Chain,
  ClientMessage,
  DeletedFrame,
  ErrorBody,
  ErrorFrame,
  EventFrame,
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
  ResyncFrame,
  ServerFrame,
  TruncatedFrame,
  UnreadCount,
} from './protocol';
