/** A minimal typed event emitter; listener errors are logged, never break the client. */

export type Listener<T> = (ctx: T) => void;

export class Emitter<Events extends object> {
  private _listeners: { [K in keyof Events]?: Set<Listener<Events[K]>> } = {};

  /** Subscribe; returns a function that unsubscribes. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    (this._listeners[event] ??= new Set()).add(listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this._listeners[event]?.delete(listener);
  }

  protected _emit<K extends keyof Events>(event: K, ctx: Events[K]): void {
    for (const listener of [...(this._listeners[event] ?? [])]) {
      try {
        listener(ctx);
      } catch (e) {
        console.error(`[herald] a "${String(event)}" listener threw`, e);
      }
    }
  }
}
