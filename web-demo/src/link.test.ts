import { describe, expect, it } from 'vitest';
import { State } from '@herald/client';
import { blocked, LINK_LABELS, linkOf, unreachable } from './link';

describe('linkOf', () => {
  it('calls the first attempt connecting and a retry after a live session reconnecting', () => {
    expect(linkOf(State.Connecting, false)).toBe('connecting');
    expect(linkOf(State.Connecting, true)).toBe('reconnecting');
    expect(LINK_LABELS[linkOf(State.Connecting, true)]).toBe('Reconnecting…');
  });

  it('keeps the terminal unauthorized state apart from a drop', () => {
    expect(linkOf(State.Unauthorized, true)).toBe('unauthorized');
    expect(unreachable('unauthorized')).toBe(false);
  });

  it('labels no state with a close code or a raw error', () => {
    for (const label of Object.values(LINK_LABELS)) expect(label).not.toMatch(/\d{3,4}|refused|lost/);
  });

  it('counts a retry and a stopped client as unreachable, not the first attempt', () => {
    expect(unreachable(linkOf(State.Connecting, true))).toBe(true);
    expect(unreachable(linkOf(State.Disconnected, true))).toBe(true);
    expect(unreachable(linkOf(State.Connecting, false))).toBe(false);
    expect(unreachable(linkOf(State.Connected, true))).toBe(false);
  });
});

describe('blocked', () => {
  it('blocks actions while unreachable or refused, not while live or first connecting', () => {
    expect(blocked('reconnecting')).toBe(true);
    expect(blocked('offline')).toBe(true);
    expect(blocked('unauthorized')).toBe(true);
    expect(blocked('live')).toBe(false);
    expect(blocked('connecting')).toBe(false);
  });
});
