/**
 * The connection as the visitor should read it. The SDK says `connecting` both for the first attempt and for the
 * retries after a drop; the demo tells them apart ("Reconnecting…"), and never shows raw close codes in the
 * label (they go in a tooltip). Pure, tested in link.test.ts.
 */
import { State } from '@herald/client';

export type Link = 'live' | 'connecting' | 'reconnecting' | 'offline' | 'unauthorized';

/** `wasLive`: a session of this client was live before (so a `connecting` state is a retry). */
export function linkOf(state: State, wasLive: boolean): Link {
  switch (state) {
    case State.Connected:
      return 'live';
    case State.Connecting:
      return wasLive ? 'reconnecting' : 'connecting';
    case State.Unauthorized:
      return 'unauthorized';
    default:
      return 'offline';
  }
}

export const LINK_LABELS: Record<Link, string> = {
  live: 'Live',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  unauthorized: 'Signed out',
};

/** The server cannot be used right now (publishing and counts would fail or be stale). */
export function unreachable(link: Link): boolean {
  return link === 'reconnecting' || link === 'offline';
}

/** Publishing and inbox actions would fail: the server is away or refused the token. */
export function blocked(link: Link): boolean {
  return unreachable(link) || link === 'unauthorized';
}
