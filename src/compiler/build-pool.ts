import { Code, PluginError } from "../errors/plugin-error.js";

/**
 * Runs at most `concurrency` tasks at once and lets at most `queueLimit`
 * wait. A task offered to a full queue is refused at once with
 * RESOURCE_EXHAUSTED: a caller learns to back off instead of piling up work
 * the server cannot finish in time.
 */
export interface BuildPool {
  /**
   * Runs `task` when a slot is free. A background task (pre-warm) waits in a
   * queue of its own, starts only when no caller waits and fewer than
   * `backgroundLimit` background tasks run, and never counts against the
   * callers' queue limit; `promote(ticket)` moves it to the callers' queue
   * when a caller comes to need it.
   */
  run<T>(task: () => Promise<T>, options?: { ticket?: PoolTicket }): Promise<T>;
  /** A waiting background task becomes a caller's: it starts before every other background task. */
  promote(ticket: PoolTicket): void;
  readonly running: number;
  readonly queued: number;
  /** Refuses queued tasks with UNAVAILABLE; running ones are left to finish. */
  close(): void;
}

/** Says whether a task is background work; a pool task's ticket can be promoted while it waits. */
export interface PoolTicket {
  background: boolean;
}

interface Waiter {
  start: () => void;
  refuse: (error: PluginError) => void;
  ticket?: PoolTicket | undefined;
}

export function createBuildPool(options: {
  concurrency: number;
  queueLimit: number;
  /** Background tasks running at once; `concurrency` by default. */
  backgroundLimit?: number;
}): BuildPool {
  const { concurrency, queueLimit } = options;
  const backgroundLimit = Math.max(1, Math.min(options.backgroundLimit ?? concurrency, concurrency));
  const queue: Waiter[] = [];
  const background: Waiter[] = [];
  let running = 0;
  let runningBackground = 0;
  let closed = false;

  /** Fills free slots: waiting callers first, then background work within its share. */
  const pump = () => {
    while (running < concurrency) {
      let waiter = queue.shift();
      if (!waiter) {
        if (runningBackground >= backgroundLimit) return;
        waiter = background.shift();
        if (!waiter) return;
      }
      running++;
      waiter.start();
    }
  };
  const next = () => {
    running--;
    pump();
  };
  /** Starts `task` now, counting it as background work while its ticket says so. */
  const startTask = <T>(task: () => Promise<T>, ticket: PoolTicket | undefined): Promise<T> => {
    const counted = ticket?.background === true;
    if (counted) runningBackground++;
    return task().finally(() => {
      if (counted) runningBackground--;
      next();
    });
  };

  return {
    get running() {
      return running;
    },
    get queued() {
      return queue.length + background.length;
    },
    run<T>(task: () => Promise<T>, runOptions?: { ticket?: PoolTicket }): Promise<T> {
      if (closed) {
        return Promise.reject(new PluginError(Code.Unavailable, "the server is shutting down"));
      }
      const ticket = runOptions?.ticket;
      if (ticket?.background) {
        return new Promise<T>((resolve, reject) => {
          background.push({
            start: () => startTask(task, ticket).then(resolve, reject),
            refuse: reject,
            ticket,
          });
          pump();
        });
      }
      if (running < concurrency) {
        running++;
        return startTask(task, ticket);
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
        queue.push({ start: () => startTask(task, ticket).then(resolve, reject), refuse: reject, ticket });
      });
    },
    promote(ticket) {
      if (!ticket.background) return;
      ticket.background = false;
      const index = background.findIndex((waiter) => waiter.ticket === ticket);
      if (index < 0) return; // running already: it finishes as background work
      const [waiter] = background.splice(index, 1);
      if (waiter) queue.push(waiter);
      pump();
    },
    close() {
      closed = true;
      for (const waiter of [...queue.splice(0), ...background.splice(0)]) {
        waiter.refuse(new PluginError(Code.Unavailable, "the server is shutting down"));
      }
    },
  };
}
