import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import { plural } from "atomix-plugins-core/model/plural";

/**
 * Runs at most `concurrency` tasks at once and lets at most `queueLimit`
 * wait. A task offered to a full queue is refused at once with
 * RESOURCE_EXHAUSTED: a caller learns to back off instead of piling up work
 * the server cannot finish in time.
 *
 * Callers share the slots fairly: one caller (a peer address or a client
 * certificate's identity, see server/caller-identity.ts) may have at most
 * `perCaller` tasks running and waiting together, and runs at most
 * `perCallerSlots` of them at once, so that one caller whose builds hang
 * cannot hold every slot and queue place while others wait. A caller over
 * its share is refused at once; its waiting tasks step aside for others'.
 */
export interface BuildPool {
  /**
   * Runs `task` when a slot is free. `caller` is whom the task is counted
   * against (none: the server's own, never limited by caller). A background
   * task (pre-warm) waits in a queue of its own, starts only when no caller
   * waits who may start, and fewer than `backgroundLimit` background tasks
   * run, and never counts against the callers' queue limit;
   * `promote(ticket)` moves it to the callers' queue when a caller comes to
   * need it.
   */
  run<T>(task: () => Promise<T>, options?: { ticket?: PoolTicket; caller?: string }): Promise<T>;
  /** A waiting background task becomes a caller's: it starts before every other background task. */
  promote(ticket: PoolTicket): void;
  /**
   * Another caller waits for the task of `ticket` too (it joined the same
   * build): the task may start within that caller's share of the slots as
   * well, so that a caller over its share cannot hold back a build others
   * wait for by starting it first.
   */
  join(ticket: PoolTicket, caller: string): void;
  readonly running: number;
  readonly queued: number;
  /** Tasks refused because their caller had its share already. */
  readonly refusedOverShare: number;
  /** Refuses queued tasks with UNAVAILABLE; running ones are left to finish. */
  close(): void;
}

/**
 * Says whether a task is background work, and who waits for it; a pool
 * task's ticket can be promoted or joined while it waits.
 */
export interface PoolTicket {
  background: boolean;
  /** Callers waiting for the task besides the one that started it. */
  joined?: Set<string>;
}

/** Callers besides its starter a waiting task may start for (see join). */
const MAX_JOINED_CALLERS = 16;

interface Waiter {
  start: (chargedTo: string | undefined) => void;
  refuse: (error: PluginError) => void;
  caller: string | undefined;
  ticket?: PoolTicket | undefined;
}

/** What one caller holds: tasks counted against its limit, and tasks running in its share of the slots. */
interface Share {
  held: number;
  running: number;
}

export function createBuildPool(options: {
  concurrency: number;
  queueLimit: number;
  /** Background tasks running at once; `concurrency` by default. */
  backgroundLimit?: number;
  /** Tasks one caller may have running and waiting together; unlimited by default. */
  perCaller?: number;
  /**
   * Tasks of one caller running at once, at most `perCaller`: with a
   * `perCaller` limit, `concurrency - 1` (at least 1) by default, so that a
   * slot is always left for another caller.
   */
  perCallerSlots?: number;
}): BuildPool {
  const { concurrency, queueLimit } = options;
  const backgroundLimit = Math.max(1, Math.min(options.backgroundLimit ?? concurrency, concurrency));
  const perCaller = Math.max(1, options.perCaller ?? Number.POSITIVE_INFINITY);
  const slotsByDefault = options.perCaller === undefined ? concurrency : concurrency - 1;
  const perCallerSlots = Math.max(
    1,
    Math.min(options.perCallerSlots ?? slotsByDefault, perCaller, concurrency),
  );
  const queue: Waiter[] = [];
  const background: Waiter[] = [];
  const shares = new Map<string, Share>();
  let running = 0;
  let runningBackground = 0;
  let refusedOverShare = 0;
  let closed = false;

  const shareOf = (caller: string): Share => {
    let share = shares.get(caller);
    if (!share) {
      share = { held: 0, running: 0 };
      shares.set(caller, share);
    }
    return share;
  };
  const forget = (caller: string, share: Share) => {
    if (share.held === 0 && share.running === 0) shares.delete(caller);
  };
  const runningOf = (caller: string) => shares.get(caller)?.running ?? 0;

  /**
   * The caller whose share a waiter may start in: the one of its callers
   * running fewest tasks, if that is under the share; `undefined` for the
   * server's own work (pre-warm, promoted or not), `null` when every caller
   * of it is at its share.
   */
  const chargeFor = (waiter: Waiter): string | undefined | null => {
    if (waiter.caller === undefined) return undefined;
    let best: string | null = null;
    for (const caller of [waiter.caller, ...(waiter.ticket?.joined ?? [])]) {
      if (runningOf(caller) < perCallerSlots && (best === null || runningOf(caller) < runningOf(best))) {
        best = caller;
      }
    }
    return best;
  };

  /** Fills free slots: waiting callers within their share first (fewest running first), then background work within its share. */
  const pump = () => {
    while (running < concurrency) {
      let chosen: { index: number; charge: string | undefined; load: number } | undefined;
      for (let index = 0; index < queue.length; index++) {
        const waiter = queue[index] as Waiter;
        const charge = chargeFor(waiter);
        if (charge === null) continue;
        const load = charge === undefined ? -1 : runningOf(charge);
        if (!chosen || load < chosen.load) chosen = { index, charge, load };
        if (load <= 0) break;
      }
      if (chosen) {
        const [waiter] = queue.splice(chosen.index, 1);
        running++;
        waiter?.start(chosen.charge);
        continue;
      }
      if (runningBackground >= backgroundLimit) return;
      const waiter = background.shift();
      if (!waiter) return;
      running++;
      waiter.start(undefined);
    }
  };
  /** Starts `task` now, counting it as background work while its ticket says so, and in `chargedTo`'s share. */
  const startTask = <T>(
    task: () => Promise<T>,
    ticket: PoolTicket | undefined,
    caller: string | undefined,
    chargedTo: string | undefined,
  ): Promise<T> => {
    const counted = ticket?.background === true;
    if (counted) runningBackground++;
    const charged = chargedTo === undefined ? undefined : shareOf(chargedTo);
    if (charged) charged.running++;
    return task().finally(() => {
      if (counted) runningBackground--;
      if (charged && chargedTo !== undefined) {
        charged.running--;
        forget(chargedTo, charged);
      }
      if (caller !== undefined) release(caller);
      running--;
      pump();
    });
  };
  const release = (caller: string) => {
    const share = shares.get(caller);
    if (!share) return;
    share.held--;
    forget(caller, share);
  };

  return {
    get running() {
      return running;
    },
    get queued() {
      return queue.length + background.length;
    },
    get refusedOverShare() {
      return refusedOverShare;
    },
    run<T>(task: () => Promise<T>, runOptions?: { ticket?: PoolTicket; caller?: string }): Promise<T> {
      if (closed) {
        return Promise.reject(new PluginError(Code.Unavailable, "the server is shutting down"));
      }
      const ticket = runOptions?.ticket;
      if (ticket?.background) {
        return new Promise<T>((resolve, reject) => {
          background.push({
            start: (chargedTo) => startTask(task, ticket, undefined, chargedTo).then(resolve, reject),
            refuse: reject,
            caller: undefined,
            ticket,
          });
          pump();
        });
      }
      const caller = runOptions?.caller;
      const share = caller === undefined ? undefined : shareOf(caller);
      if (caller !== undefined && share && share.held >= perCaller) {
        refusedOverShare++;
        return Promise.reject(
          new PluginError(
            Code.ResourceExhausted,
            `caller ${quoted(caller, 128)} has ${plural(share.held, "build")} running or waiting, the most one caller may have (--builds-per-caller ${perCaller}); retry when one of them has finished`,
          ),
        );
      }
      const waiter: Waiter = { start: () => {}, refuse: () => {}, caller, ticket };
      const charge = chargeFor(waiter);
      if (running < concurrency && charge !== null) {
        if (share) share.held++;
        running++;
        return startTask(task, ticket, caller, charge);
      }
      if (queue.length >= queueLimit) {
        if (caller !== undefined && share) forget(caller, share);
        return Promise.reject(
          new PluginError(
            Code.ResourceExhausted,
            `the build queue is full (${plural(running, "build")} running, ${queue.length} waiting); retry later`,
          ),
        );
      }
      if (share) share.held++;
      return new Promise<T>((resolve, reject) => {
        waiter.start = (chargedTo) => startTask(task, ticket, caller, chargedTo).then(resolve, reject);
        waiter.refuse = (error) => {
          if (caller !== undefined) release(caller);
          reject(error);
        };
        queue.push(waiter);
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
    join(ticket, caller) {
      // Only a waiting task needs more callers to start in; a few are enough
      // to find one under its share, and a hot key joined by a whole fleet
      // must not make every pump walk the fleet.
      if (!queue.some((waiter) => waiter.ticket === ticket)) return;
      ticket.joined ??= new Set();
      if (ticket.joined.size >= MAX_JOINED_CALLERS) return;
      ticket.joined.add(caller);
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
