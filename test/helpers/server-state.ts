import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import type { ServerProcess } from "./server-process.js";

export interface ServerState {
  descriptors: number;
  pullsInFlight: number;
  chunkBytes: number;
  openBlobs: number;
}

/** The server process's open descriptors, and what its /metrics say pulls hold. */
export async function serverState(server: ServerProcess): Promise<ServerState> {
  const metrics = await (await fetch(`http://${server.http}/metrics`)).text();
  const gauge = (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, "m").exec(metrics)?.[1] ?? Number.NaN);
  return {
    descriptors: (await readdir(`/proc/${server.child.pid}/fd`)).length,
    pullsInFlight: gauge("atomix_plugins_pulls_in_flight"),
    chunkBytes: gauge("atomix_plugins_pull_chunk_bytes"),
    openBlobs: gauge("atomix_plugins_pull_open_blobs"),
  };
}

/** Reads `read()` until `done` holds, up to 100 times (the server closes what clients dropped in its own time). */
export async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  let value = await read();
  for (let attempt = 0; attempt < 100 && !done(value); attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    value = await read();
  }
  return value;
}

/**
 * Waits for every pull to have ended on the server, then asserts that what
 * they held is back: no pull in flight, no chunk bytes, no open artifact,
 * and no more descriptors than `baseline`.
 */
export async function assertSettled(server: ServerProcess, baseline: ServerState): Promise<void> {
  const settled = await waitFor(
    () => serverState(server),
    (state) => state.pullsInFlight === 0 && state.descriptors <= baseline.descriptors,
  );
  assert.equal(settled.pullsInFlight, 0);
  assert.equal(settled.chunkBytes, 0);
  assert.equal(settled.openBlobs, 0);
  assert.ok(
    settled.descriptors <= baseline.descriptors,
    `${settled.descriptors} descriptors open, ${baseline.descriptors} before`,
  );
}
