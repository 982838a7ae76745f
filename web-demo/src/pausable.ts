/**
 * A countdown that can be paused and resumed without starting over: a toast's life, held while the pointer or
 * keyboard focus is on it. `pause()` keeps the time left; `resume()` waits only that long.
 */
export interface Pausable {
  pause(): void;
  resume(): void;
  cancel(): void;
}

export function pausableTimeout(fn: () => void, ms: number, now: () => number = Date.now): Pausable {
  let left = ms;
  let startedAt = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let done = false;
  const resume = () => {
    if (done || timer !== null) return;
    startedAt = now();
    timer = setTimeout(() => {
      timer = null;
      done = true;
      fn();
    }, left);
  };
  const pause = () => {
    if (timer === null) return;
    clearTimeout(timer);
    timer = null;
    left = Math.max(0, left - (now() - startedAt));
  };
  resume();
  return {
    pause,
    resume,
    cancel() {
      pause();
      done = true;
    },
  };
}
