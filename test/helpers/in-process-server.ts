import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { parseServeConfig } from "../../src/config.js";
import { createMetrics, type ServerMetrics } from "../../src/server/metrics.js";
import type { RunningServer } from "../../src/server/server.js";
import { type RunningService, startService } from "../../src/start-service.js";
import type { ArtifactStore } from "../../src/store/artifact-store.js";

export interface TestServer {
  readonly address: string;
  readonly dataDir: string;
  readonly store: ArtifactStore;
  readonly server: RunningServer;
  readonly service: RunningService;
  /** Every finished pull as the server saw it: code and artifact bytes sent. */
  readonly pulls: { code: Code; bytes: number }[];
  close(): Promise<void>;
}

export interface TestServerOptions {
  /**
   * Serve options by their config names, as flags would give them. By
   * default the server listens on 127.0.0.1:0 with no HTTP port, over a
   * fresh data directory, and knows no runtimes: it serves what is pushed,
   * and a miss is NOT_FOUND.
   */
  config?: Record<string, unknown>;
  /** ATOMIX_PLUGINS_ADMIN_TOKEN, as an operator would give it. */
  adminToken?: string;
  /** Told of every build the compiler starts. */
  onBuild?: (key: BuildKey) => void;
}

/** The server as `serve` wires it (startService), in this process, over a fresh data directory. */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "atomix-server-"));
  await mkdir(join(dataDir, "no-runtimes"));
  const config = parseServeConfig(
    {
      listen: "127.0.0.1:0",
      httpListen: "off",
      dataDir,
      runtimes: [join(dataDir, "no-runtimes")],
      logLevel: "silent",
      ...options.config,
    },
    options.adminToken === undefined ? {} : { ATOMIX_PLUGINS_ADMIN_TOKEN: options.adminToken },
  );
  const pulls: { code: Code; bytes: number }[] = [];
  const metrics = createMetrics();
  const counting: ServerMetrics = {
    ...metrics,
    pullFinished(outcome) {
      pulls.push({ code: outcome.code, bytes: outcome.bytes });
      metrics.pullFinished(outcome);
    },
  };
  let service: RunningService;
  try {
    service = await startService(config, {
      metrics: counting,
      ...(options.onBuild ? { onBuild: options.onBuild } : {}),
    });
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  return {
    address: service.address,
    dataDir,
    store: service.store,
    server: service.server,
    service,
    pulls,
    async close() {
      await service.close(0);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
