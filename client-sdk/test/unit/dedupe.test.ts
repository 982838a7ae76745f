import { describe, expect, it } from 'vitest';
import { SeenIds } from '../../src/dedupe';

describe('SeenIds', () => {
  it('has no resume point until a baseline or a delivery', () => {
    const s = new SeenIds();
    expect(s.lastSeenId).toBeNull();
    s.baseline(10);
    expect(s.lastSeenId).toBe(10);
    s.baseline(99); // only the first baseline counts
    expect(s.lastSeenId).toBe(10);
  });

  it('a baseline is a resume point, not a floor: an id at or below it can still arrive once', () => {
    const s = new SeenIds();
    s.baseline(10);
    expect(s.add(10)).toBe(true); // committed while the session opened: counted in latest_id and pushed live
    expect(s.add(10)).toBe(false);
    expect(s.lastSeenId).toBe(10);
  });

  it('drops ids at or below the starting point and ids seen before', () => {
    const s = new SeenIds(5);
    expect(s.add(5)).toBe(false);
    expect(s.add(3)).toBe(false);
    expect(s.add(6)).toBe(true);
    expect(s.add(6)).toBe(false);
    expect(s.add(8)).toBe(true);
    expect(s.lastSeenId).toBe(8);
  });

  it('accepts a late id it never saw above the floor (mild reordering)', () => {
    const s = new SeenIds(0);
    expect(s.add(12)).toBe(true);
    expect(s.add(11)).toBe(true);
    expect(s.add(11)).toBe(false);
    expect(s.lastSeenId).toBe(12);
  });

  it('keeps memory bounded: old ids fall below the floor and still count as seen', () => {
    const s = new SeenIds(null, 4);
    for (let id = 1; id <= 100; id++) expect(s.add(id)).toBe(true);
    for (let id = 1; id <= 100; id++) expect(s.add(id)).toBe(false);
    expect((s as unknown as { _recent: Set<number> })._recent.size).toBe(4);
  });

  it('advance() moves the resume point without marking ids as seen', () => {
    const s = new SeenIds(3);
    s.advance(9);
    expect(s.lastSeenId).toBe(9);
    s.advance(4);
    expect(s.lastSeenId).toBe(9);
  });
});
