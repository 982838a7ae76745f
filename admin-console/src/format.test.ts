import { describe, expect, it } from 'vitest';
import * as fmt from './format';

describe('format', () => {
  it('shows latencies in the unit an operator reads', () => {
    expect(fmt.seconds(0.0000421)).toBe('42 µs');
    expect(fmt.seconds(0.0042)).toBe('4.2 ms');
    expect(fmt.seconds(0.0125)).toBe('12.5 ms');
    expect(fmt.seconds(0.25)).toBe('250 ms');
    expect(fmt.seconds(2.5)).toBe('2.5 s');
    expect(fmt.seconds(0)).toBe('0 ms');
    expect(fmt.seconds(null)).toBe('–');
  });
  it('shows counts and rates compactly', () => {
    expect(fmt.count(1234)).toBe('1,234');
    expect(fmt.count(2_345_678)).toBe('2.35 M');
    expect(fmt.rate(null)).toBe('–');
    expect(fmt.rate(0)).toBe('0/s');
    expect(fmt.rate(0.5)).toBe('0.5/s');
    expect(fmt.rate(3)).toBe('3/s');
    expect(fmt.rate(1500)).toBe('1,500/s');
    expect(fmt.plural(1, 'user')).toBe('1 user');
    expect(fmt.plural(1200, 'session')).toBe('1,200 sessions');
  });
  it('shows times in UTC and steps as offsets from reception', () => {
    expect(fmt.timestamp('2026-11-29T04:12:07.123Z')).toBe('2026-11-29 04:12:07 UTC');
    expect(fmt.timestamp(null)).toBe('–');
    expect(fmt.after('2026-11-29T04:00:00Z', '2026-11-29T04:00:00.012Z')).toBe('+12 ms');
    expect(fmt.after('2026-11-29T04:00:00Z', '2026-11-29T04:00:03.400Z')).toBe('+3.4 s');
    expect(fmt.after('2026-11-29T04:00:00Z', '2026-11-29T04:02:00Z')).toBe('+2 min');
    expect(fmt.ago(100, 103_000)).toBe('3 s ago');
    expect(fmt.bytes(1536)).toBe('1.5 KiB');
  });
});
