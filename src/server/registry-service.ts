import type { BlockList } from "node:net";
import { Metadata, type ServerWritableStream } from "@grpc/grpc-js";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import {
  PluginRegistryDefinition,
  type PullPluginRequest,
  type PullPluginResponse,
} from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey, parseBuildKey } from "atomix-plugins-core/model/build-key";
import { PULL_METADATA } from "atomix-plugins-core/protocol/metadata";
import {
  encodePullPluginResponse,
  frameInPlace,
  PULL_FRAME_HEADROOM,
} from "atomix-plugins-core/protocol/pull-codec";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import type { ServeConfig } from "../config.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import { BufferPool } from "./buffer-pool.js";
import { type CallPeer, callerOf } from "./caller-identity.js";
import { GRPC_PREFIX_BYTES, installInPlaceFraming, sendInPlace } from "./grpc-framing.js";
import { grpcService, type HandlersOf } from "./grpc-service.js";
import type { ServerMetrics } from "./metrics.js";
import { SharedChunks } from "./shared-chunks.js";
import { toServiceError } from "./status.js";
import { WriteBudget } from "./write-budget.js";

/**
 * PluginRegistry with the hand-written encoder on the hot path. It takes
 * every PullPluginResponse (and sends a `frame` already encoded as it is),
 * so the definition keeps the generated one's type.
 */
const generated = grpcService(PluginRegistryDefinition);
export const pluginRegistryDefinition: typeof generated = {
  ...generated,
  pullPlugin: { ...generated.pullPlugin, responseSerialize: encodePullPluginResponse },
};

export interface RegistryDeps {
  config: Pick<ServeConfig, "chunkSize" | "streamBufferBytes" | "pullMemoryBytes" | "pullPolicy">;
  store: ArtifactStore;
  compiler: Compiler;
  log: Logger;
  metrics: ServerMetrics;
  /** Load balancers whose x-forwarded-for names the caller (--trusted-proxy). */
  trustedProxies?: BlockList | undefined;
}

export function createRegistryService(deps: RegistryDeps): HandlersOf<typeof PluginRegistryDefinition> {
  const { config, store, compiler, log } = deps;
  const framedInPlace = installInPlaceFraming();
  // The wrap reaches into grpc-js's internals: say at start whether it holds with this release.
  if (framedInPlace)
    log.info({ framing: "in place" }, "pull chunks are framed in place (grpc-js internals wrapped)");
  else
    log.warn(
      { framing: "copied" },
      "pull chunks are copied by grpc-js: this release's internals are not the ones wrapped",
    );

  // Streams pulling one artifact at once send the same chunk buffers, read once.
  const shared = new SharedChunks({ store, chunkSize: config.chunkSize, limitBytes: config.pullMemoryBytes });
  deps.metrics.observePullMemory(() => ({ chunkBytes: shared.heldBytes, openBlobs: shared.openBlobCount }));

  async function resolve(key: BuildKey, signal: AbortSignal, peer: CallPeer): Promise<ArtifactManifest> {
    const stored = await store.get(key, { signal });
    if (stored) return stored;
    if (config.pullPolicy === "never") {
      // Another patch release of a declared Node.js line is served its line's artifact.
      const storedKey = (await compiler.storedKey?.(key)) ?? key;
      const line = storedKey === key ? undefined : await store.get(storedKey, { signal });
      if (line) return line;
      throw new PluginError(
        Code.NotFound,
        `no artifact for ${formatBuildKey(key)}; compile it first (CompilePlugin) or push one`,
      );
    }
    // Who asks is worked out only for a build: a pull of a stored artifact pays nothing for it.
    // The lookup above answers the miss: the compiler does not repeat it.
    return compiler.compile(key, { signal, caller: callerOf(peer, deps.trustedProxies), missed: true });
  }

  async function pullPlugin(
    call: ServerWritableStream<PullPluginRequest, PullPluginResponse>,
  ): Promise<void> {
    const controller = new AbortController();
    let finished = false;
    // grpc-js also emits "cancelled" after a call that ended well; only a
    // pull still running has anything to abort.
    call.on("cancelled", () => {
      if (!finished) controller.abort();
    });
    const started = performance.now();
    let bytes = 0;
    const finish = (code: Code) =>
      deps.metrics.pullFinished({ code, bytes, seconds: (performance.now() - started) / 1000 });
    deps.metrics.pullStarted();
    try {
      const key = parseBuildKey(call.request);
      const requested = parseOffset(call.metadata);
      const manifest = await resolve(key, controller.signal, call);
      if (requested > BigInt(manifest.size)) {
        throw new PluginError(
          Code.OutOfRange,
          `${PULL_METADATA.offset} ${quoted(String(requested), 24)} is past the end of ${formatBuildKey(key)} (${manifest.size} bytes)`,
        );
      }
      const offset = Number(requested);
      const headers = new Metadata();
      headers.set(PULL_METADATA.digest, manifest.digest);
      headers.set(PULL_METADATA.size, String(manifest.size));
      call.sendMetadata(headers);

      if (call.metadata.get(PULL_METADATA.ifNoneMatch).includes(manifest.digest)) {
        const trailers = new Metadata();
        trailers.set(PULL_METADATA.notModified, "true");
        finished = true;
        call.end(trailers);
        finish(Code.Ok);
        return;
      }

      const budget = new WriteBudget<{ data: Buffer; frame?: Buffer }>(
        call,
        config.streamBufferBytes,
        controller.signal,
      );
      if (shared.available && framedInPlace) {
        const blob = await shared.open(manifest);
        try {
          for (let position = offset; position < manifest.size; position += config.chunkSize) {
            const { chunk, release } = await blob.acquire(position, controller.signal);
            await budget.write(chunk, chunk.data.byteLength, release);
            bytes += chunk.data.byteLength;
          }
        } finally {
          blob.close();
        }
        finished = true;
        call.end();
        finish(Code.Ok);
        return;
      }

      // A store without random access: chunks are read into recycled
      // buffers of this stream with room in front for the protobuf header
      // and the gRPC prefix, so each is sent without a copy (grpc-framing.ts);
      // a buffer returns to the pool once its write is done.
      const pool = new BufferPool();
      const chunks = store.read(manifest, {
        offset,
        chunkSize: config.chunkSize,
        headroom: GRPC_PREFIX_BYTES + PULL_FRAME_HEADROOM,
        allocate: pool.acquire,
        signal: controller.signal,
      });
      for await (const data of chunks) {
        const frame = pool.owns(data) ? frameInPlace(data) : undefined;
        if (frame && framedInPlace) sendInPlace(frame);
        await budget.write(frame ? { data, frame } : { data }, data.byteLength, () => pool.release(data));
        bytes += data.byteLength;
      }
      finished = true;
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

/**
 * The `x-plugin-offset` asked for, 0 without one: any whole number of bytes
 * (one past the end is OUT_OF_RANGE, however large); anything else (a sign,
 * a fraction, two values, hex) is INVALID_ARGUMENT, never read as 0.
 */
function parseOffset(metadata: Metadata): bigint {
  const values = metadata.get(PULL_METADATA.offset);
  if (values.length === 0) return 0n;
  const text = values.map(String).join(", ");
  if (values.length !== 1 || !/^\d+$/.test(text)) {
    throw new PluginError(
      Code.InvalidArgument,
      `${PULL_METADATA.offset} ${quoted(text)} must be one non-negative whole number of bytes, in decimal digits only`,
    );
  }
  return BigInt(text);
}
