import type {
  ServerReadableStream,
  ServerUnaryCall,
  sendUnaryData,
  UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ServeConfig } from "../config.js";
import { Code, PluginError } from "../errors/plugin-error.js";
import type {
  PushHeader,
  PushPluginRequest,
  PushPluginResponse,
} from "../gen/atomix/plugins/admin/v1/admin.js";
import { formatBuildKey, parseBuildKey } from "../model/build-key.js";
import { type ArtifactStore, DIGEST_PATTERN, type Digest } from "../store/artifact-store.js";
import type { AdminAuth } from "./admin-auth.js";
import { toManifestMessage } from "./manifest-message.js";
import { toServiceError } from "./status.js";

export interface AdminDeps {
  config: Pick<ServeConfig, "maxArtifactBytes">;
  auth: AdminAuth;
  store: ArtifactStore;
  log: Logger;
}

/** atomix.plugins.admin.v1.PluginAdmin: push, list, inspect, remove, gc. */
export function createAdminService(deps: AdminDeps): UntypedServiceImplementation {
  const { store, log } = deps;

  /**
   * Adapts a promise-returning handler to grpc-js's callback style. Calls
   * that change the store need the admin token; reads are as open as the
   * catalog page.
   */
  function unary<Request, Response>(
    access: "read" | "write",
    handler: (request: Request) => Promise<Response>,
  ) {
    return (call: ServerUnaryCall<Request, Response>, callback: sendUnaryData<Response>) => {
      Promise.resolve()
        .then(() => {
          if (access === "write") deps.auth.check(call.metadata);
          return handler(call.request);
        })
        .then(
          (response) => callback(null, response),
          (error: unknown) => callback(toServiceError(error, log)),
        );
    };
  }

  async function pushPlugin(call: ServerReadableStream<PushPluginRequest, PushPluginResponse>) {
    deps.auth.check(call.metadata);
    const messages = call[Symbol.asyncIterator]() as AsyncIterator<PushPluginRequest>;
    const first = await messages.next();
    if (first.done || first.value.part?.$case !== "header") {
      throw new PluginError(Code.InvalidArgument, "the first PushPluginRequest must carry the header");
    }
    const header: PushHeader = first.value.part.value;
    const key = parseBuildKey(header);
    if (header.digest && !DIGEST_PATTERN.test(header.digest)) {
      throw new PluginError(
        Code.InvalidArgument,
        `digest "${header.digest}" must be sha256:<64 lowercase hex>`,
      );
    }
    async function* data(): AsyncGenerator<Uint8Array> {
      for (let next = await messages.next(); !next.done; next = await messages.next()) {
        if (next.value.part?.$case !== "data") {
          throw new PluginError(Code.InvalidArgument, "only the first PushPluginRequest may carry a header");
        }
        yield next.value.part.value;
      }
    }
    const manifest = await store.put(key, data(), {
      mediaType: header.mediaType,
      annotations: header.annotations,
      maxSize: deps.config.maxArtifactBytes,
      ...(header.digest ? { expectedDigest: header.digest as Digest, expectedSize: header.size } : {}),
    });
    log.info({ key: formatBuildKey(key), digest: manifest.digest, size: manifest.size }, "artifact pushed");
    return { manifest: toManifestMessage(manifest) };
  }

  return {
    pushPlugin: (
      call: ServerReadableStream<PushPluginRequest, PushPluginResponse>,
      callback: sendUnaryData<PushPluginResponse>,
    ) => {
      pushPlugin(call).then(
        (response) => callback(null, response),
        (error: unknown) => callback(toServiceError(error, log)),
      );
    },
    listPlugins: unary("read", async (request: { pluginName: string; runtimeVersion: string }) => {
      const manifests = await store.list({
        pluginName: request.pluginName,
        runtimeVersion: request.runtimeVersion,
      });
      return { manifests: manifests.map(toManifestMessage) };
    }),
    inspectPlugin: unary("read", async (request: Parameters<typeof parseBuildKey>[0]) => {
      const key = parseBuildKey(request);
      const manifest = await store.get(key);
      if (!manifest) throw new PluginError(Code.NotFound, `no artifact stored for ${formatBuildKey(key)}`);
      return toManifestMessage(manifest);
    }),
    removePlugin: unary("write", async (request: Parameters<typeof parseBuildKey>[0]) => {
      const key = parseBuildKey(request);
      const removed = await store.remove(key);
      if (removed) log.info({ key: formatBuildKey(key) }, "artifact removed");
      return { removed };
    }),
    collectGarbage: unary("write", async () => {
      const report = await store.collectGarbage();
      log.info(report, "garbage collected");
      return report;
    }),
  };
}
