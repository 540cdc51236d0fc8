import type { ServerUnaryCall, sendUnaryData, UntypedServiceImplementation } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import { Code, PluginError } from "../errors/plugin-error.js";
import type { CompilePluginRequest, CompilePluginResponse } from "../gen/atomix/runtime/v1/plugin.js";
import { parseBuildKey } from "../model/build-key.js";
import { formatReference } from "../model/reference.js";
import type { ServerMetrics } from "./metrics.js";
import { toServiceError } from "./status.js";

/** PluginCompiler: answers with a reference (see model/reference.ts). */
export function createCompilerService(deps: {
  compiler: Compiler;
  log: Logger;
  metrics: ServerMetrics;
}): UntypedServiceImplementation {
  return {
    compilePlugin(
      call: ServerUnaryCall<CompilePluginRequest, CompilePluginResponse>,
      callback: sendUnaryData<CompilePluginResponse>,
    ) {
      const controller = new AbortController();
      call.on("cancelled", () => controller.abort());
      const started = performance.now();
      const finish = (code: Code) =>
        deps.metrics.compileFinished({ code, seconds: (performance.now() - started) / 1000 });
      const compile = async () => {
        const key = parseBuildKey(call.request);
        const manifest = await deps.compiler.compile(key, { signal: controller.signal });
        return { plugin: formatReference({ key, digest: manifest.digest }) };
      };
      compile().then(
        (response) => {
          finish(Code.Ok);
          callback(null, response);
        },
        (error: unknown) => {
          finish(PluginError.from(error).code);
          callback(toServiceError(error, deps.log));
        },
      );
    },
  };
}
