import { once } from "node:events";
import { createReadStream } from "node:fs";
import type { ClientWritableStream } from "@grpc/grpc-js";
import type { GatheredRelease } from "../compiler/runtime-release-layout.js";
import type {
  BuildRecord,
  RegisterRuntimeRequest,
  RegisterRuntimeResponse,
  RuntimeRelease,
} from "../gen/atomix/plugins/admin/v1/admin.js";
import type { BuildKey } from "../model/build-key.js";
import { RUNTIME_DESCRIPTOR_FILE } from "../model/runtime-release.js";
import { type ConnectionOptions, createGrpcClients } from "./grpc-clients.js";
import type { CallControl } from "./pull-artifact.js";
import { type StartCall, unaryCall } from "./unary-call.js";

const CHUNK = 256 * 1024;

/** The admin API's runtime release and build record calls. */
export interface RuntimeAdminClient {
  /** Uploads a gathered release (see gatherRuntimeRelease); needs the admin token. */
  register(release: GatheredRelease, options?: CallControl): Promise<RegisterRuntimeResponse>;
  list(options?: CallControl): Promise<RuntimeRelease[]>;
  inspect(version: string, options?: CallControl): Promise<RuntimeRelease>;
  /** The last build record of `key`; NOT_FOUND if it was never built. */
  buildLog(key: BuildKey, options?: CallControl): Promise<BuildRecord>;
  close(): void;
}

export function createRuntimeAdminClient(connection: ConnectionOptions): RuntimeAdminClient {
  const { admin, close } = createGrpcClients(connection);
  const unary = <Response>(options: CallControl | undefined, start: StartCall<Response>) =>
    unaryCall(options?.signal, options?.timeoutMs ? Date.now() + options.timeoutMs : undefined, start);

  return {
    async register(release, options) {
      let call: ClientWritableStream<RegisterRuntimeRequest> | undefined;
      const answer = unary<RegisterRuntimeResponse>(options, (metadata, call_, callback) => {
        call = admin.registerRuntime(metadata, call_, callback);
        return call;
      });
      const stream = call as unknown as ClientWritableStream<RegisterRuntimeRequest>;
      // The server may answer before the upload ends (a refused token, a bad file): the answer says why.
      stream.on("error", () => {});
      let answered = false;
      answer.then(
        () => {
          answered = true;
        },
        () => {
          answered = true;
        },
      );
      const write = async (message: RegisterRuntimeRequest) => {
        if (answered) return;
        if (!stream.write(message)) await Promise.race([once(stream, "drain"), answer.catch(() => {})]);
      };
      try {
        await write({ part: { $case: "header", value: { version: release.version } } });
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
          await write({
            part: { $case: "file", value: { path: file.path, size: file.size, executable: file.executable } },
          });
          const chunks: AsyncIterable<Buffer> | Iterable<Buffer> = file.bytes
            ? [file.bytes]
            : createReadStream((file as { source: string }).source, { highWaterMark: CHUNK });
          for await (const chunk of chunks) await write({ part: { $case: "data", value: chunk } });
        }
        stream.end();
      } catch (error) {
        stream.cancel();
        await answer.catch(() => {});
        throw error;
      }
      return answer;
    },
    async list(options) {
      const response = await unary<{ releases: RuntimeRelease[] }>(options, (md, o, cb) =>
        admin.listRuntimes({}, md, o, cb),
      );
      return response.releases;
    },
    inspect(version, options) {
      return unary<RuntimeRelease>(options, (md, o, cb) => admin.inspectRuntime({ version }, md, o, cb));
    },
    buildLog(key, options) {
      return unary<BuildRecord>(options, (md, o, cb) => admin.getBuildLog(key, md, o, cb));
    },
    close,
  };
}
