import type { BlockList } from "node:net";
import type { ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type {
  CompilePluginRequest,
  CompilePluginResponse,
  PluginCompilerDefinition,
} from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, parseBuildKey } from "atomix-plugins-core/model/build-key";
import { formatReference } from "atomix-plugins-core/model/reference";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import { callerOf } from "./caller-identity.js";
import type { HandlersOf } from "./grpc-service.js";
import type { ServerMetrics } from "./metrics.js";
import { toServiceError } from "./status.js";

/** PluginCompiler: answers with a reference (see model/reference.ts). */
export function createCompilerService(deps: {
  compiler: Compiler;
  store: ArtifactStore;
  log: Logger;
  metrics: ServerMetrics;
  /** Load balancers whose x-forwarded-for names the caller (--trusted-proxy). */
  trustedProxies?: BlockList | undefined;
}): HandlersOf<typeof PluginCompilerDefinition> {
  const finished = (code: Code, started: number) =>
    deps.metrics.compileFinished({ code, seconds: (performance.now() - started) / 1000 });
  return {
    compilePlugin(
      call: ServerUnaryCall<CompilePluginRequest, CompilePluginResponse>,
      callback: sendUnaryData<CompilePluginResponse>,
    ) {
      const started = performance.now();
      let key: BuildKey;
      try {
        key = parseBuildKey(call.request);
      } catch (error) {
        finished(PluginError.from(error).code, started);
        callback(toServiceError(error, deps.log));
        return;
      }
      // The hot path: a key already built is answered from the store's
      // manifest cache, synchronously, with no AbortController, no compiler
      // and no closure. grpc-js emits "cancelled" at the end of every call,
      // even a successful one, so a controller per call costs an abort (and
      // a DOMException) each time: 0.4x the calls/s of a bare unary
      // handler, measured.
      const known = deps.store.getCached?.(key);
      if (known) {
        finished(Code.Ok, started);
        callback(null, { plugin: referenceOf(key, known.digest) });
        return;
      }
      // Anything else (a key not built yet, or a store shared with other
      // replicas) goes to the compiler, which looks the key up in the store
      // once for all concurrent callers and builds it if needed.
      const controller = new AbortController();
      let done = false;
      call.on("cancelled", () => {
        if (!done) controller.abort();
      });
      deps.compiler
        .compile(key, { signal: controller.signal, caller: callerOf(call, deps.trustedProxies) })
        .then(
          (manifest) => {
            done = true;
            finished(Code.Ok, started);
            callback(null, { plugin: referenceOf(key, manifest.digest) });
          },
          (error: unknown) => {
            done = true;
            finished(PluginError.from(error).code, started);
            callback(toServiceError(error, deps.log));
          },
        );
    },
  };
}

/**
 * The last reference formatted for each key (parseBuildKey hands out one
 * object per valid key), so that a fleet asking for the same artifact gets
 * the same string instead of a new one a call.
 */
const references = new WeakMap<BuildKey, { digest: Digest; reference: string }>();

function referenceOf(key: BuildKey, digest: Digest): string {
  const last = references.get(key);
  if (last?.digest === digest) return last.reference;
  const reference = formatReference({ key, digest });
  references.set(key, { digest, reference });
  return reference;
}
