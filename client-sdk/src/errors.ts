/** The one error type the SDK raises or reports. */

export class HeraldError extends Error {
  /** HTTP status of a REST answer; 0 for errors that did not come from an HTTP response. */
  readonly status: number;
  /** The server's `error` code (e.g. `not_found`), or an SDK code: `network_error`, `token_error`, `bad_frame`, … */
  readonly code: string;
  /**
   * Seconds the server asked to wait before retrying (its `Retry-After`: a `429 rate_limited`, a `503`);
   * `undefined` when it said nothing.
   */
  readonly retryAfterSecs: number | undefined;

  constructor(status: number, code: string, message: string, options?: { cause?: unknown; retryAfterSecs?: number }) {
    super(message);
    this.name = 'HeraldError';
    this.status = status;
    this.code = code;
    this.retryAfterSecs = options?.retryAfterSecs;
    if (options && 'cause' in options) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** Wrap anything thrown into a HeraldError (kept as is when it already is one). */
export function toHeraldError(e: unknown, code: string): HeraldError {
  if (e instanceof HeraldError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new HeraldError(0, code, message, { cause: e });
}
