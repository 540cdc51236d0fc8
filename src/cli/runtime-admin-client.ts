import { createReadStream } from "node:fs";
import type { ConnectionOptions } from "atomix-plugins-client/connection-options";
import type { CallControl } from "atomix-plugins-client/pull-artifact";
import { serverTarget } from "atomix-plugins-client/server-target";
import { callSettings, grpcChannel } from "atomix-plugins-client/transport/grpc-channel";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  type BuildRecord,
  PluginAdminDefinition,
  type RegisterRuntimeRequest,
  type RegisterRuntimeResponse,
  type RuntimeRelease,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { RUNTIME_DESCRIPTOR_FILE } from "atomix-plugins-core/model/runtime-release";
import type { GatheredRelease } from "../runtime-releases/runtime-release-layout.js";

const CHUNK = 256 * 1024;

/** The admin API's runtime release and build record calls. */
export interface RuntimeAdminClient {
  /** Uploads a gathered release (see gatherRuntimeRelease); needs the admin token. */
  register(release: GatheredRelease, options?: CallControl): Promise<RegisterRuntimeResponse>;
  list(options?: CallControl): Promise<RuntimeRelease[]>;
  inspect(version: string, options?: CallControl): Promise<RuntimeRelease>;
  /**
   * Removes a release no stored artifact records; needs the admin token.
   * The removed release; NOT_FOUND, or FAILED_PRECONDITION saying what keeps it.
   */
  remove(version: string, options?: CallControl): Promise<RuntimeRelease>;
  /** The last build record of `key`; NOT_FOUND if it was never built. */
  buildLog(key: BuildKey, options?: CallControl): Promise<BuildRecord>;
  close(): void;
}

export function createRuntimeAdminClient(connection: ConnectionOptions): RuntimeAdminClient {
  const channel = grpcChannel(serverTarget(connection.address, connection.tls, connection.proxy), {
    token: connection.token,
  });
  const { methods } = PluginAdminDefinition;

  return {
    register(release, options) {
      async function* requests(): AsyncGenerator<RegisterRuntimeRequest> {
        yield { part: { $case: "header", value: { version: release.version } } };
        const files = [
          {
            path: RUNTIME_DESCRIPTOR_FILE,
            size: release.descriptor.byteLength,
            executable: false,
            bytes: release.descriptor,
          },
          ...release.files.map((file) => ({ ...file, bytes: undefined })),
        ];
        for (const file of files) {
          yield {
            part: { $case: "file", value: { path: file.path, size: file.size, executable: file.executable } },
          };
          const chunks: AsyncIterable<Buffer> | Iterable<Buffer> = file.bytes
            ? [file.bytes]
            : createReadStream((file as { source: string }).source, { highWaterMark: CHUNK });
          for await (const chunk of chunks) yield { part: { $case: "data", value: chunk } };
        }
      }
      return channel.clientStream(
        PluginAdminDefinition,
        methods.registerRuntime,
        requests(),
        callSettings(options),
      );
    },
    async list(options) {
      const response = await channel.unary(
        PluginAdminDefinition,
        methods.listRuntimes,
        {},
        { ...callSettings(options), idempotent: true },
      );
      return response.releases;
    },
    inspect(version, options) {
      return channel.unary(
        PluginAdminDefinition,
        methods.inspectRuntime,
        { version },
        {
          ...callSettings(options),
          idempotent: true,
        },
      );
    },
    async remove(version, options) {
      const response = await channel.unary(
        PluginAdminDefinition,
        methods.removeRuntime,
        { version },
        callSettings(options),
      );
      if (!response.release)
        throw new PluginError(Code.Internal, "the server removed no release it could name");
      return response.release;
    },
    buildLog(key, options) {
      return channel.unary(PluginAdminDefinition, methods.getBuildLog, key, {
        ...callSettings(options),
        idempotent: true,
      });
    },
    close: () => channel.close(),
  };
}
