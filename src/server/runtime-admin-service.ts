import type {
  handleClientStreamingCall,
  ServerReadableStream,
  ServerUnaryCall,
  sendUnaryData,
} from "@grpc/grpc-js";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  type BuildRecord,
  type PluginAdminDefinition,
  type PrewarmProgress,
  RegisterRuntimeRequest,
  type RegisterRuntimeResponse,
  type RemoveRuntimeResponse,
  type RuntimeRelease,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { formatBuildKey, parseBuildKey } from "atomix-plugins-core/model/build-key";
import type { BuildRecord as StoredBuildRecord } from "atomix-plugins-core/model/build-record";
import type { RuntimeReleaseSummary } from "atomix-plugins-core/model/runtime-release";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import type { IncomingReleaseFile } from "../runtime-releases/runtime-release-staging.js";
import type { RuntimeReleases } from "../runtime-releases/runtime-releases.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import type { BuildRecordStore } from "../store/build-record-store.js";
import { scanStore } from "../store/manifest-pages.js";
import type { AdminAuth, AdminCall } from "./admin-auth.js";
import { clientStreaming, pluginAdminDefinition } from "./admin-service.js";
import type { HandlersOf } from "./grpc-service.js";
import { toServiceError } from "./status.js";

export interface RuntimeAdminDeps {
  auth: AdminAuth;
  log: Logger;
  /** Absent: the runtime calls answer UNIMPLEMENTED. */
  runtimes?: RuntimeReleases | undefined;
  /** Pre-warm progress of a release, for listings. */
  prewarmProgress?: ((version: string) => PrewarmProgress | undefined) | undefined;
  /** Absent: GetBuildLog answers UNIMPLEMENTED. */
  records?: BuildRecordStore | undefined;
  /** The artifacts, which RemoveRuntime checks no longer record the release. */
  store: Pick<ArtifactStore, "scan" | "list">;
  /** Builds under way, which RemoveRuntime waits for; absent: none here. */
  compiler?: Pick<Compiler, "building"> | undefined;
}

/** The handlers below, with RegisterRuntime's requests as `registerRuntimeDefinition` decodes them. */
type RuntimeAdminServer = Pick<
  HandlersOf<typeof PluginAdminDefinition>,
  "listRuntimes" | "inspectRuntime" | "removeRuntime" | "getBuildLog"
> & {
  registerRuntime: handleClientStreamingCall<DecodedRegisterRequest, RegisterRuntimeResponse>;
};

/**
 * PluginAdmin's runtime release calls, RegisterRuntime (admin token),
 * ListRuntimes and InspectRuntime, and GetBuildLog.
 */
export function createRuntimeAdminService(deps: RuntimeAdminDeps): RuntimeAdminServer {
  const { log } = deps;
  const runtimes = (): RuntimeReleases => {
    if (!deps.runtimes) throw new PluginError(Code.Unimplemented, "this server keeps no runtime releases");
    return deps.runtimes;
  };
  const message = (release: RuntimeReleaseSummary): RuntimeRelease =>
    toRuntimeReleaseMessage(release, deps.prewarmProgress?.(release.version));

  async function registerRuntime(
    call: ServerReadableStream<DecodedRegisterRequest, RegisterRuntimeResponse>,
    signal: AbortSignal,
  ): Promise<RegisterRuntimeResponse> {
    deps.auth.check(call);
    const registry = runtimes();
    const messages = call[Symbol.asyncIterator]() as AsyncIterator<DecodedRegisterRequest>;
    const first = await messages.next();
    const part = first.done ? undefined : decoded(first.value).part;
    if (part?.$case !== "header") {
      throw new PluginError(Code.InvalidArgument, "the first RegisterRuntimeRequest must carry the header");
    }
    const version = part.value.version;
    async function* files(): AsyncGenerator<IncomingReleaseFile> {
      let next = await messages.next();
      while (!next.done) {
        const current = decoded(next.value).part;
        if (current?.$case !== "file") {
          throw new PluginError(
            Code.InvalidArgument,
            "file data must follow a RuntimeFile that announces it",
          );
        }
        let after: IteratorResult<DecodedRegisterRequest> | undefined;
        async function* data(): AsyncGenerator<Uint8Array> {
          for (;;) {
            const chunk = await messages.next();
            const chunkPart = chunk.done ? undefined : decoded(chunk.value).part;
            if (chunkPart?.$case !== "data") {
              after = chunk;
              return;
            }
            yield chunkPart.value;
          }
        }
        yield { ...current.value, data: data() };
        if (!after) throw new PluginError(Code.Internal, "a runtime file was not read to its end");
        next = after;
      }
    }
    const outcome = await registry.register(version, files(), { signal });
    return { release: message(outcome.release), created: outcome.created };
  }

  /**
   * RemoveRuntime: a release stays while any stored artifact records it (its
   * build keys name the version): removing it would leave artifacts that
   * runtimes still pull built for a release nobody can inspect or build
   * again. Removing those is a separate, deliberate step per key, so there
   * is no force here.
   */
  async function removeRuntime(version: string, call: AdminCall): Promise<RemoveRuntimeResponse> {
    deps.auth.check(call);
    const registry = runtimes();
    const release = await registry.inspect(version);
    if (registry.installedFrom(version) !== undefined) {
      throw new PluginError(
        Code.FailedPrecondition,
        `runtime ${version} is installed from this server's --runtimes folders, which register it again at every start: remove its folder there (and restart) instead`,
      );
    }
    // Checked while the registry holds off new builds of the release, so
    // that none starts between the check and the removal.
    const check = async () => {
      if (deps.compiler?.building?.(release.version)) {
        throw new PluginError(
          Code.FailedPrecondition,
          `a build for runtime ${version} is under way on this server; its artifact will record the release, so remove that first once the build is done (atomix-plugins ls --runtime ${version} --all), then the release`,
        );
      }
      let recorded = 0;
      for await (const { manifest } of scanStore(deps.store)) {
        if (manifest?.key.runtime.version === version) recorded++;
      }
      if (recorded > 0) {
        throw new PluginError(
          Code.FailedPrecondition,
          `runtime ${version} is recorded by ${recorded === 1 ? "1 stored artifact" : `${recorded} stored artifacts`}; remove ${recorded === 1 ? "it" : "them"} first (atomix-plugins ls --runtime ${version} --all lists them, atomix-plugins rm NAME@VERSION -r ${version} -b BUILD removes each), then remove the release`,
        );
      }
    };
    const removed = await registry.remove(release.version, { check });
    log.info({ runtime: version, digest: removed.digest }, "runtime release removed over the admin API");
    return { release: message(removed) };
  }

  function unary<Request, Response>(handler: (request: Request, call: AdminCall) => Promise<Response>) {
    return (call: ServerUnaryCall<Request, Response>, callback: sendUnaryData<Response>) => {
      Promise.resolve()
        .then(() => handler(call.request, call))
        .then(
          (response) => callback(null, response),
          (error: unknown) => callback(toServiceError(error, log)),
        );
    };
  }

  return {
    registerRuntime: clientStreaming(registerRuntime, log),
    listRuntimes: unary(async () => ({ releases: (await runtimes().releases()).map(message) })),
    inspectRuntime: unary(async (request: { version: string }) =>
      message(await runtimes().inspect(request.version)),
    ),
    removeRuntime: unary((request: { version: string }, call) => removeRuntime(request.version, call)),
    getBuildLog: unary(async (request: Parameters<typeof parseBuildKey>[0]) => {
      if (!deps.records) throw new PluginError(Code.Unimplemented, "this server keeps no build records");
      const key = parseBuildKey(request);
      const record = await deps.records.getBuildRecord(key);
      if (!record) throw new PluginError(Code.NotFound, `no build of ${formatBuildKey(key)} is recorded`);
      return toBuildRecordMessage(record);
    }),
  };
}

export function toRuntimeReleaseMessage(
  release: RuntimeReleaseSummary,
  prewarm: PrewarmProgress | undefined,
): RuntimeRelease {
  return {
    version: release.version,
    toolchain: release.toolchain,
    digest: release.digest,
    registeredAt: release.registeredAt,
    fileCount: release.fileCount,
    size: release.size,
    description: release.description,
    buildVersions: [...release.buildVersions],
    prewarm,
  };
}

/** RegisterRuntime's requests, decoded here so that a message that cannot be is INVALID_ARGUMENT, not INTERNAL. */
type DecodedRegisterRequest = RegisterRuntimeRequest | { undecodable: PluginError };

function decoded(request: DecodedRegisterRequest): RegisterRuntimeRequest {
  if ("undecodable" in request) throw request.undecodable;
  return request;
}

/** The RegisterRuntime method with its requests decoded by the function above. */
export const registerRuntimeDefinition = {
  ...pluginAdminDefinition.registerRuntime,
  requestDeserialize: (bytes: Buffer): DecodedRegisterRequest => {
    try {
      return RegisterRuntimeRequest.decode(bytes);
    } catch (error) {
      return {
        undecodable: new PluginError(
          Code.InvalidArgument,
          `a RegisterRuntimeRequest is not a valid protobuf message: ${(error as Error).message}`,
        ),
      };
    }
  },
};

export function toBuildRecordMessage(record: StoredBuildRecord): BuildRecord {
  return {
    runtime: { ...record.key.runtime },
    plugin: { ...record.key.plugin },
    outcome: record.outcome,
    code: record.code,
    message: record.message,
    durationMs: record.durationMs,
    finishedAt: record.finishedAt,
    toolchain: { ...record.toolchain },
    runtimeDigest: record.runtimeDigest,
    artifactDigest: record.artifactDigest,
    output: record.output,
    outputTruncated: record.outputTruncated,
  };
}
