import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createBuildPool, type PoolTicket } from "../src/compiler/build-pool.js";

/** A task that runs until released, recording when it started. */
function gate(name: string, started: string[]) {
  let release: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    release = resolve;
  });
  return {
    task: async () => {
      started.push(name);
      await done;
      return name;
    },
    release: () => release(),
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("build slots shared with background work", () => {
  it("background work takes at most its share, and waiting callers always start first", async () => {
    const pool = createBuildPool({ concurrency: 2, queueLimit: 8, backgroundLimit: 1 });
    const started: string[] = [];
    const b1 = gate("b1", started);
    const b2 = gate("b2", started);
    const c1 = gate("c1", started);
    const c2 = gate("c2", started);
    const runs = [
      pool.run(b1.task, { ticket: { background: true } }),
      pool.run(b2.task, { ticket: { background: true } }),
    ];
    await tick();
    // One slot is background's share; the other stays free for callers.
    assert.deepEqual(started, ["b1"]);
    runs.push(pool.run(c1.task));
    await tick();
    assert.deepEqual(started, ["b1", "c1"]);
    runs.push(pool.run(c2.task));
    b1.release();
    await tick();
    await tick();
    // The freed slot goes to the waiting caller, not to the waiting background task.
    assert.deepEqual(started, ["b1", "c1", "c2"]);
    c1.release();
    await tick();
    await tick();
    assert.deepEqual(started, ["b1", "c1", "c2", "b2"]);
    c2.release();
    b2.release();
    assert.deepEqual(await Promise.all(runs), ["b1", "b2", "c1", "c2"]);
  });

  it("a promoted background task starts before other background work and ahead of its share", async () => {
    const pool = createBuildPool({ concurrency: 2, queueLimit: 8, backgroundLimit: 1 });
    const started: string[] = [];
    const b1 = gate("b1", started);
    const b2 = gate("b2", started);
    const b3 = gate("b3", started);
    const ticket3: PoolTicket = { background: true };
    const runs = [
      pool.run(b1.task, { ticket: { background: true } }),
      pool.run(b2.task, { ticket: { background: true } }),
      pool.run(b3.task, { ticket: ticket3 }),
    ];
    await tick();
    assert.deepEqual(started, ["b1"]);
    pool.promote(ticket3);
    await tick();
    // A caller now waits for b3: it takes the free slot at once.
    assert.deepEqual(started, ["b1", "b3"]);
    assert.equal(pool.queued, 1);
    for (const g of [b1, b2, b3]) g.release();
    await tick();
    b2.release();
    assert.deepEqual(await Promise.all(runs), ["b1", "b2", "b3"]);
  });

  it("background work never fills the callers' queue", async () => {
    const pool = createBuildPool({ concurrency: 1, queueLimit: 1, backgroundLimit: 1 });
    const started: string[] = [];
    const gates = [1, 2, 3].map((n) => gate(`b${n}`, started));
    const runs = gates.map((g) => pool.run(g.task, { ticket: { background: true } }));
    const caller = gate("c", started);
    const callerRun = pool.run(caller.task);
    await tick();
    assert.deepEqual(started, ["b1"]);
    for (const g of gates) g.release();
    caller.release();
    assert.equal(await callerRun, "c");
    await Promise.all(runs);
    assert.equal(started[1], "c");
  });
});
