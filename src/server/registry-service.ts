import { Metadata, type ServerWritableStream, type UntypedServiceImplementation } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import type { ServeConfig } from "../config.js";
import { Code, PluginError } from "../errors/plugin-error.js";
import {
  PluginRegistryService,
  type PullPluginRequest,
  type PullPluginResponse,
} from "../gen/atomix/runtime/v1/plugin.js";
import { type BuildKey, formatBuildKey, parseBuildKey } from "../model/build-key.js";
import { PULL_METADATA } from "../protocol/metadata.js";
import { encodePullPluginResponse } from "../protocol/pull-codec.js";
import type { ArtifactManifest, ArtifactStore } from "../store/artifact-store.js";
import type { ServerMetrics } from "./metrics.js";
import { toServiceError } from "./status.js";
import { WriteBudget } from "./write-budget.js";

/** PluginRegistry with the hand-written encoder on the hot path. */
export const pluginRegistryDefinition = {
  ...PluginRegistryService,
  pullPlugin: { ...PluginRegistryService.pullPlugin, responseSerialize: encodePullPluginResponse },
};

export interface RegistryDeps {
  config: Pick<ServeConfig, "chunkSize" | "streamBufferBytes" | "pullPolicy">;
  store: ArtifactStore;
  compiler: Compiler;
  log: Logger;
  metrics: ServerMetrics;
}

export function createRegistryService(deps: RegistryDeps): UntypedServiceImplementation {
  const { config, store, compiler, log } = deps;

  async function resolve(key: BuildKey, signal: AbortSignal): Promise<ArtifactManifest> {
    const stored = await store.get(key, { signal });
    if (stored) return stored;
    if (config.pullPolicy === "never") {
      throw new PluginError(
        Code.NotFound,
        `no artifact for ${formatBuildKey(key)}; compile it first (CompilePlugin) or push one`,
      );
    }
    return compiler.compile(key, { signal });
  }

  async function pullPlugin(
    call: ServerWritableStream<PullPluginRequest, PullPluginResponse>,
  ): Promise<void> {
    const controller = new AbortController();
    call.on("cancelled", () => controller.abort());
    const started = performance.now();
    let bytes = 0;
    const finish = (code: Code) =>
      deps.metrics.pullFinished({ code, bytes, seconds: (performance.now() - started) / 1000 });
    deps.metrics.pullStarted();
    try {
      const key = parseBuildKey(call.request);
      const manifest = await resolve(key, controller.signal);
      const offset = parseOffset(call.metadata);
      if (offset > manifest.size) {
        throw new PluginError(
          Code.OutOfRange,
          `${PULL_METADATA.offset} ${offset} is past the end of ${formatBuildKey(key)} (${manifest.size} bytes)`,
        );
      }
      const headers = new Metadata();
      headers.set(PULL_METADATA.digest, manifest.digest);
      headers.set(PULL_METADATA.size, String(manifest.size));
      call.sendMetadata(headers);

      if (call.metadata.get(PULL_METADATA.ifNoneMatch).includes(manifest.digest)) {
        const trailers = new Metadata();
        trailers.set(PULL_METADATA.notModified, "true");
        call.end(trailers);
        finish(Code.Ok);
        return;
      }

      const budget = new WriteBudget(call, config.streamBufferBytes, controller.signal);
      const chunks = store.read(manifest, { offset, chunkSize: config.chunkSize, signal: controller.signal });
      for await (const data of chunks) {
        await budget.write({ data }, data.byteLength);
        bytes += data.byteLength;
      }
      call.end();
      finish(Code.Ok);
    } catch (error) {
      const failure = PluginError.from(error);
      finish(controller.signal.aborted ? Code.Cancelled : failure.code);
      if (controller.signal.aborted) return; // nobody is listening any more
      call.emit("error", toServiceError(failure, log));
    }
  }

  return { pullPlugin };
}

function parseOffset(metadata: Metadata): number {
  const [raw] = metadata.get(PULL_METADATA.offset);
  if (raw === undefined) return 0;
  const text = String(raw);
  if (!/^\d{1,15}$/.test(text)) {
    throw new PluginError(
      Code.InvalidArgument,
      `${PULL_METADATA.offset} "${text}" must be a non-negative whole number of bytes`,
    );
  }
  return Number(text);
}
