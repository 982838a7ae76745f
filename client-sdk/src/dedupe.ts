/**
 * Resume and de-duplication bookkeeping.
 *
 * Notification ids only grow, so `lastSeenId` (the largest id delivered) is the `since` of the next connect.
 * Duplicates (a notification both replayed and pushed live, or replayed twice) are caught by a small set of
 * recent ids; ids below everything the set remembers (the `floor`) count as seen. Memory stays bounded.
 */
export class SeenIds {
  /** Largest id delivered or acknowledged by a `replayed` frame; `null` before any baseline. */
  lastSeenId: number | null;
  private _floor: number;
  private _recent = new Set<number>();

  constructor(
    since: number | null = null,
    private readonly _capacity = 512,
  ) {
    this.lastSeenId = since;
    this._floor = since ?? -Infinity;
  }

  /**
   * Set the resume point when none exists yet (the `latest_id` of a session opened without `since`). Not a
   * floor: a notification committed while that session was opening can be both counted in `latest_id` and
   * pushed live, and must still be delivered.
   */
  baseline(id: number): void {
    if (this.lastSeenId === null) this.lastSeenId = id;
  }

  /** False when `id` was delivered already (drop it). */
  isNew(id: number): boolean {
    return id > this._floor && !this._recent.has(id);
  }

  /** Record a delivered id. Returns false when it was already delivered (drop it). */
  add(id: number): boolean {
    if (!this.isNew(id)) return false;
    this._recent.add(id);
    if (this._recent.size > this._capacity) {
      // Insertion order is (nearly) id order, so the first entry is the oldest.
      const oldest = this._recent.values().next().value as number;
      this._recent.delete(oldest);
      this._floor = Math.max(this._floor, oldest);
    }
    this.lastSeenId = Math.max(this.lastSeenId ?? id, id);
    return true;
  }

  /** Everything up to `upTo` has been delivered (a `replayed` frame). */
  advance(upTo: number): void {
    this.lastSeenId = Math.max(this.lastSeenId ?? upTo, upTo);
  }
}
