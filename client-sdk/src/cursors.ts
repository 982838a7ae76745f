/**
 * Where the client is in each delivery chain, and which frames are duplicates.
 *
 * A user's notifications form two chains (targeted and broadcast), each delivered in id order, once per
 * session. Across chains there is no order, so every comparison here is within one chain. The position (one
 * cursor per chain) is the `since` of the next connect; a frame whose id is not above its chain's floor is a
 * duplicate (replayed and pushed live, or replayed twice) and is dropped. Gaps need no handling: the server
 * replays a chain before sending a frame whose `prev_id` is above the session's cursor.
 */
import { chainOf, type Chain, type Notification, type ReadyFrame, type ReplayedFrame } from './protocol';

/** The last id received in each chain. */
export interface Position {
  targeted: number;
  broadcast: number;
}

/** Where to start: a position, or a single id for both chains (the v1 form). */
export type Since = number | Position;

/**
 * A position from a `since`; throws a `RangeError` for a cursor that is not an id, or a chain left out (the
 * gateway refuses both: `400 bad_query`).
 */
export function toPosition(since: Since): Position {
  const pos: Position =
    typeof since === 'number'
      ? { targeted: since, broadcast: since }
      : { targeted: since?.targeted, broadcast: since?.broadcast };
  for (const chain of ['targeted', 'broadcast'] as const) {
    const id = pos[chain];
    if (!Number.isSafeInteger(id) || id < 0) {
      throw new RangeError(`since: the ${chain} cursor ${id} is not a notification id (an integer, 0 or more)`);
    }
  }
  return pos;
}

const NO_FLOOR: Readonly<Record<Chain, number>> = { targeted: -Infinity, broadcast: -Infinity };

export class Cursors {
  private _pos: Position | null;
  /** Per chain: ids at or below are duplicates. */
  private _floor: Record<Chain, number>;

  constructor(since: Since | null = null) {
    this._pos = since === null ? null : toPosition(since);
    this._floor = this._pos ? { ...this._pos } : { ...NO_FLOOR };
  }

  /** The resume point (`null` before the first `ready` when no `since` was given). */
  get position(): Position | null {
    return this._pos && { ...this._pos };
  }

  /**
   * A session opened. Without a position yet, the chains' latest ids become it — a resume point, not a floor:
   * a notification committed while that session was opening can be both counted in them and pushed live, and
   * must still be delivered. With a position (the session was opened with it as `since`), nothing at or below
   * it can come on this session but duplicates. True when the position was above what the server has and was
   * lowered to it (its history was rolled back: a restore).
   */
  baseline(ready: Pick<ReadyFrame, 'latest_targeted_id' | 'latest_broadcast_id'>): boolean {
    const latest: Position = { targeted: ready.latest_targeted_id, broadcast: ready.latest_broadcast_id };
    if (this._pos === null) {
      this._pos = latest;
      this._floor = { ...NO_FLOOR };
      return false;
    }
    // A position above the newest id the server has can only come from history it no longer has (its inbox was
    // restored from a backup, which gives those ids again): resume from its newest, or every new notification
    // up to the old position would be dropped as a duplicate.
    let lowered = false;
    for (const chain of ['targeted', 'broadcast'] as const) {
      if (this._pos[chain] > latest[chain]) {
        this._pos[chain] = latest[chain];
        lowered = true;
      }
    }
    this._floor = { ...this._pos };
    return lowered;
  }

  /** Record a notification. False when it is a duplicate (drop it). */
  accept(n: Pick<Notification, 'id' | 'user_id'>): boolean {
    const chain = chainOf(n);
    if (n.id <= this._floor[chain]) return false;
    this._floor[chain] = n.id;
    if (this._pos) this._pos[chain] = Math.max(this._pos[chain], n.id);
    return true;
  }

  /** A replay ended (`replayed`): everything up to its position was delivered by this session. */
  advance(replayed: Pick<ReplayedFrame, 'up_to_targeted' | 'up_to_broadcast'>): void {
    const upTo: Position = { targeted: replayed.up_to_targeted, broadcast: replayed.up_to_broadcast };
    const pos = this._pos ?? upTo;
    for (const chain of ['targeted', 'broadcast'] as const) {
      pos[chain] = Math.max(pos[chain], upTo[chain]);
      this._floor[chain] = Math.max(this._floor[chain], upTo[chain]);
    }
    this._pos = pos;
  }
}
