import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, type PluginError } from "atomix-plugins-core/errors/plugin-error";
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

describe("build slots shared fairly between callers", () => {
  it("refuses a caller over its share at once, and another caller's task takes the slot left free", async () => {
    const pool = createBuildPool({ concurrency: 2, queueLimit: 8, perCaller: 3 });
    const started: string[] = [];
    const flood = [1, 2, 3].map((n) => gate(`f${n}`, started));
    const runs = flood.map((g) => pool.run(g.task, { caller: "ip:10.0.0.1" }));
    const refused = await pool.run(gate("f4", started).task, { caller: "ip:10.0.0.1" }).then(
      () => assert.fail("a fourth task of one caller is refused"),
      (error: PluginError) => error,
    );
    assert.equal(refused.code, Code.ResourceExhausted);
    assert.match(
      refused.message,
      /caller "ip:10\.0\.0\.1" has 3 builds running or waiting.*--builds-per-caller 3/,
    );
    assert.equal(pool.refusedOverShare, 1);
    await tick();
    // One of its tasks runs; the other slot is left for someone else.
    assert.deepEqual(started, ["f1"]);
    const other = gate("o1", started);
    const otherRun = pool.run(other.task, { caller: "ip:10.0.0.2" });
    await tick();
    assert.deepEqual(started, ["f1", "o1"]);
    other.release();
    assert.equal(await otherRun, "o1");
    for (const g of flood) g.release();
    assert.deepEqual(await Promise.all(runs), ["f1", "f2", "f3"]);
    // Its share is free again once its tasks are done.
    assert.equal(await pool.run(async () => "again", { caller: "ip:10.0.0.1" }), "again");
  });

  it("starts the waiting task of the caller running fewest, whatever came first", async () => {
    const pool = createBuildPool({ concurrency: 3, queueLimit: 8, perCaller: 4 });
    const started: string[] = [];
    const a = [1, 2, 3].map((n) => gate(`a${n}`, started));
    const b1 = gate("b1", started);
    const x = gate("x", started);
    const runs = [
      ...a.map((g) => pool.run(g.task, { caller: "a" })),
      pool.run(x.task),
      pool.run(b1.task, { caller: "b" }),
    ];
    await tick();
    // a runs 2 (its share of 3 slots), the server's own task the third; a3 and b1 wait.
    assert.deepEqual(started, ["a1", "a2", "x"]);
    a[0]?.release();
    await tick();
    await tick();
    assert.deepEqual(started, ["a1", "a2", "x", "b1"], "b runs nothing: it goes before a's waiting task");
    for (const g of a) g.release();
    b1.release();
    await tick();
    await tick();
    assert.deepEqual(started.slice(-1), ["a3"]);
    x.release();
    await Promise.all(runs);
  });

  it("lets background work run while the only waiting tasks are of a caller at its share", async () => {
    const pool = createBuildPool({ concurrency: 2, queueLimit: 8, backgroundLimit: 1, perCaller: 4 });
    const started: string[] = [];
    const flood = [1, 2, 3].map((n) => gate(`f${n}`, started));
    const runs = flood.map((g) => pool.run(g.task, { caller: "flood" }));
    const warm = gate("b1", started);
    runs.push(pool.run(warm.task, { ticket: { background: true } }));
    await tick();
    assert.deepEqual(started, ["f1", "b1"], "pre-warm is not starved by one caller's queue");
    for (const g of [...flood, warm]) g.release();
    await Promise.all(runs);
  });

  it("a caller joining a build another caller queued starts it within its own share", async () => {
    const pool = createBuildPool({ concurrency: 2, queueLimit: 8, perCaller: 4 });
    const started: string[] = [];
    const flood = [1, 2].map((n) => gate(`f${n}`, started));
    const ticket: PoolTicket = { background: false };
    const runs = [
      pool.run(flood[0]?.task ?? assert.fail(), { caller: "flood" }),
      pool.run(flood[1]?.task ?? assert.fail(), { caller: "flood", ticket }),
    ];
    await tick();
    assert.deepEqual(started, ["f1"]);
    pool.join(ticket, "victim");
    await tick();
    assert.deepEqual(started, ["f1", "f2"]);
    for (const g of flood) g.release();
    await Promise.all(runs);
  });
});
