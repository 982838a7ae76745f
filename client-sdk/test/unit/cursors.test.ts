import { describe, expect, it } from 'vitest';
import { Cursors, toPosition, type Position } from '../../src/cursors';

const t = (id: number) => ({ id, user_id: 'u1' }); // targeted
const b = (id: number) => ({ id, user_id: null }); // broadcast
const ready = (targeted: number, broadcast: number) => ({
  latest_targeted_id: targeted,
  latest_broadcast_id: broadcast,
});
const replayed = (targeted: number, broadcast: number) => ({ up_to_targeted: targeted, up_to_broadcast: broadcast });

describe('Cursors', () => {
  it('has no position until the first ready; later readies do not move it', () => {
    const c = new Cursors();
    expect(c.position).toBeNull();
    c.baseline(ready(10, 7));
    expect(c.position).toEqual({ targeted: 10, broadcast: 7 });
    c.baseline(ready(99, 99));
    expect(c.position).toEqual({ targeted: 10, broadcast: 7 });
  });

  it('a v1 since (one number) starts both chains there', () => {
    expect(new Cursors(5).position).toEqual({ targeted: 5, broadcast: 5 });
    expect(toPosition(5)).toEqual({ targeted: 5, broadcast: 5 });
    expect(new Cursors({ targeted: 3, broadcast: 8 }).position).toEqual({ targeted: 3, broadcast: 8 });
  });

  it('a since that is not an id is refused before anything connects', () => {
    for (const bad of [-1, 1.5, Number.NaN, { targeted: 3, broadcast: -2 }]) {
      expect(() => new Cursors(bad)).toThrow(RangeError);
    }
    // A chain left out (plain JavaScript, or a cast): the gateway would refuse every connect with 400.
    for (const partial of [{ targeted: 3 }, { broadcast: 3 }, {}]) {
      expect(() => new Cursors(partial as unknown as Position)).toThrow(/cursor undefined is not a notification id/);
    }
    expect(new Cursors(0).position).toEqual({ targeted: 0, broadcast: 0 });
  });

  it('a broadcast overtaking a targeted notification with a smaller id: both are accepted', () => {
    const c = new Cursors({ targeted: 10, broadcast: 11 });
    expect(c.accept(b(13))).toBe(true);
    expect(c.accept(t(12))).toBe(true); // smaller than the broadcast cursor: another chain, not a duplicate
    expect(c.position).toEqual({ targeted: 12, broadcast: 13 });
  });

  it('drops a duplicate per chain: ids at or below the chain cursor', () => {
    const c = new Cursors({ targeted: 10, broadcast: 20 });
    expect(c.accept(t(10))).toBe(false);
    expect(c.accept(b(20))).toBe(false);
    expect(c.accept(b(15))).toBe(false);
    expect(c.accept(t(15))).toBe(true); // at or below the broadcast cursor, but targeted
    expect(c.accept(t(15))).toBe(false);
    expect(c.accept(b(21))).toBe(true);
    expect(c.accept(b(21))).toBe(false);
    expect(c.position).toEqual({ targeted: 15, broadcast: 21 });
  });

  it('a baseline is a resume point, not a floor: an id at or below it can still arrive once', () => {
    const c = new Cursors();
    c.baseline(ready(10, 4));
    expect(c.accept(t(10))).toBe(true); // committed while the session opened: counted in latest and pushed live
    expect(c.accept(t(10))).toBe(false);
    expect(c.accept(b(3))).toBe(true);
    expect(c.accept(b(3))).toBe(false);
    expect(c.position).toEqual({ targeted: 10, broadcast: 4 });
  });

  it('the ready of a session opened with the position makes it a floor', () => {
    const c = new Cursors();
    c.baseline(ready(10, 4));
    c.baseline(ready(12, 4)); // reconnected with since=10, since_broadcast=4
    expect(c.accept(t(9))).toBe(false);
    expect(c.accept(b(4))).toBe(false);
    expect(c.accept(t(11))).toBe(true);
  });

  it('a position above the newest ids of the server (its inbox restored from a backup) is lowered to them', () => {
    const c = new Cursors({ targeted: 120, broadcast: 7 });
    expect(c.baseline(ready(54, 9))).toBe(true); // the targeted chain went back
    expect(c.position).toEqual({ targeted: 54, broadcast: 7 });
    expect(c.accept(t(55))).toBe(true); // a new notification reuses an id the client saw before the restore
    expect(c.baseline(ready(55, 9))).toBe(false); // a later session at or above it: nothing lowered
  });

  it('advance() moves each cursor forward, never back, and drops what the replay covered', () => {
    const c = new Cursors({ targeted: 3, broadcast: 9 });
    c.advance(replayed(8, 5));
    expect(c.position).toEqual({ targeted: 8, broadcast: 9 });
    expect(c.accept(t(8))).toBe(false);
    expect(c.accept(t(9))).toBe(true);
  });

  it('returns copies: the caller cannot move the position', () => {
    const c = new Cursors({ targeted: 1, broadcast: 2 });
    c.position!.targeted = 50;
    expect(c.position).toEqual({ targeted: 1, broadcast: 2 });
  });
});
