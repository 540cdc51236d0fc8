import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { createBuildCompiler } from "../../src/compiler/build-compiler.js";
import { loadRuntimeCatalog } from "../../src/compiler/runtime-catalog.js";
import { parseServeConfig } from "../../src/config.js";
import type { Code } from "../../src/errors/plugin-error.js";
import { Secret } from "../../src/model/secret.js";
import { createAdminAuth } from "../../src/server/admin-auth.js";
import { createMetrics, type ServerMetrics } from "../../src/server/metrics.js";
import { type RunningServer, startServer } from "../../src/server/server.js";
import type { ArtifactStore } from "../../src/store/artifact-store.js";
import { createStore } from "../../src/store/create-store.js";

export interface TestServer {
  readonly address: string;
  readonly dataDir: string;
  readonly store: ArtifactStore;
  readonly server: RunningServer;
  /** Every finished pull as the server saw it: code and artifact bytes sent. */
  readonly pulls: { code: Code; bytes: number }[];
  close(): Promise<void>;
}

/** The real gRPC server on 127.0.0.1:0 over a fresh data directory, in this process. */
export async function startTestServer(
  options: { chunkSize?: number; adminToken?: string } = {},
): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "atomix-client-"));
  const config = parseServeConfig(
    {
      listen: "127.0.0.1:0",
      dataDir,
      logLevel: "silent",
      ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
    },
    {},
  );
  const store = await createStore({ kind: "fs", dir: dataDir });
  // No runtimes, no toolchains: the server serves what is pushed, and a miss is NOT_FOUND.
  const compiler = createBuildCompiler({ store, runtimes: await loadRuntimeCatalog([]), toolchains: [] });
  const pulls: { code: Code; bytes: number }[] = [];
  const metrics = createMetrics();
  const counting: ServerMetrics = {
    ...metrics,
    pullFinished(outcome) {
      pulls.push({ code: outcome.code, bytes: outcome.bytes });
      metrics.pullFinished(outcome);
    },
  };
  const server = await startServer({
    config,
    store,
    compiler,
    log: pino({ level: "silent" }),
    metrics: counting,
    auth: createAdminAuth(options.adminToken === undefined ? undefined : new Secret(options.adminToken)),
  });
  return {
    address: server.address,
    dataDir,
    store,
    server,
    pulls,
    async close() {
      await server.shutdown(0);
      await compiler.close();
      await store.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
