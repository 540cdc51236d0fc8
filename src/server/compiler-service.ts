import type { ServerUnaryCall, sendUnaryData, UntypedServiceImplementation } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import type { CompilePluginRequest, CompilePluginResponse } from "../gen/atomix/runtime/v1/plugin.js";
import { parseBuildKey } from "../model/build-key.js";
import { formatReference } from "../model/reference.js";
import { toServiceError } from "./status.js";

/** PluginCompiler: answers with a reference (see model/reference.ts). */
export function createCompilerService(deps: {
  compiler: Compiler;
  log: Logger;
}): UntypedServiceImplementation {
  return {
    compilePlugin(
      call: ServerUnaryCall<CompilePluginRequest, CompilePluginResponse>,
      callback: sendUnaryData<CompilePluginResponse>,
    ) {
      const controller = new AbortController();
      call.on("cancelled", () => controller.abort());
      let key: ReturnType<typeof parseBuildKey>;
      try {
        key = parseBuildKey(call.request);
      } catch (error) {
        callback(toServiceError(error, deps.log));
        return;
      }
      deps.compiler.compile(key, { signal: controller.signal }).then(
        (manifest) => callback(null, { plugin: formatReference({ key, digest: manifest.digest }) }),
        (error: unknown) => callback(toServiceError(error, deps.log)),
      );
    },
  };
}
