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
