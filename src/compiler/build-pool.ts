import { Code, PluginError } from "../errors/plugin-error.js";

/**
 * Runs at most `concurrency` tasks at once and lets at most `queueLimit`
 * wait. A task offered to a full queue is refused at once with
 * RESOURCE_EXHAUSTED: a caller learns to back off instead of piling up work
 * the server cannot finish in time.
 */
export interface BuildPool {
  run<T>(task: () => Promise<T>): Promise<T>;
  readonly running: number;
  readonly queued: number;
  /** Refuses queued tasks with UNAVAILABLE; running ones are left to finish. */
  close(): void;
}

interface Waiter {
  start: () => void;
  refuse: (error: PluginError) => void;
}

export function createBuildPool(options: { concurrency: number; queueLimit: number }): BuildPool {
  const { concurrency, queueLimit } = options;
  const queue: Waiter[] = [];
  let running = 0;
  let closed = false;

  const next = () => {
    running--;
    const waiter = queue.shift();
    if (waiter) {
      running++;
      waiter.start();
    }
  };

  return {
    get running() {
      return running;
    },
    get queued() {
      return queue.length;
    },
    run<T>(task: () => Promise<T>): Promise<T> {
      if (closed) {
        return Promise.reject(new PluginError(Code.Unavailable, "the server is shutting down"));
      }
      if (running < concurrency) {
        running++;
        return task().finally(next);
      }
      if (queue.length >= queueLimit) {
        return Promise.reject(
          new PluginError(
            Code.ResourceExhausted,
            `the build queue is full (${running} builds running, ${queue.length} waiting); retry later`,
          ),
        );
      }
      return new Promise<T>((resolve, reject) => {
        queue.push({
          start: () => task().finally(next).then(resolve, reject),
          refuse: reject,
        });
      });
    },
    close() {
      closed = true;
      for (const waiter of queue.splice(0)) {
        waiter.refuse(new PluginError(Code.Unavailable, "the server is shutting down"));
      }
    },
  };
}
