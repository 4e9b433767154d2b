/** Restart policy for the engine process: exponential backoff that resets after a stable run. */

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** A run at least this long counts as stable and resets the delay. */
  stableMs: number;
  /** Give up after this many crashes in a row. */
  maxAttempts: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialMs: 1000,
  maxMs: 30000,
  stableMs: 60000,
  maxAttempts: 6,
};

export class Backoff {
  private attempts = 0;

  constructor(private readonly options: BackoffOptions = DEFAULT_BACKOFF) {}

  /** The delay before the next restart, or undefined to stop trying. `ranMs`: how long the last run lasted. */
  next(ranMs: number): number | undefined {
    if (ranMs >= this.options.stableMs) {
      this.attempts = 0;
    }
    if (this.attempts >= this.options.maxAttempts) {
      return undefined;
    }
    const delay = Math.min(this.options.maxMs, this.options.initialMs * 2 ** this.attempts);
    this.attempts += 1;
    return delay;
  }

  reset(): void {
    this.attempts = 0;
  }

  get failures(): number {
    return this.attempts;
  }
}
