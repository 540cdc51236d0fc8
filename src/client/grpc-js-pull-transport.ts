import { type CallOptions, Metadata, type StatusObject } from "@grpc/grpc-js";
import type { PluginRegistryClient, PullPluginResponse } from "../gen/atomix/runtime/v1/plugin.js";
import type { BuildKey } from "../model/build-key.js";
import { PULL_METADATA } from "../protocol/metadata.js";
import {
  type AttemptOptions,
  type AttemptOutcome,
  announcedArtifact,
  attemptOutcome,
  type PullTransport,
  pullRequestMetadata,
} from "./pull-transport.js";
import { cancelled } from "./retry-policy.js";

/**
 * PullPlugin over the generated grpc-js client: for targets and credentials
 * only grpc-js understands (name resolvers, proxies, credentials objects).
 * Every call goes over the client's one channel, which keeps its connection.
 */
export function grpcJsPullTransport(registry: PluginRegistryClient): PullTransport {
  return {
    pullOnce: (key, options) => pullWithGrpcJs(registry, key, options),
    close() {},
  };
}

async function pullWithGrpcJs(
  registry: PluginRegistryClient,
  key: BuildKey,
  options: AttemptOptions,
): Promise<AttemptOutcome> {
  const metadata = new Metadata();
  for (const [name, value] of pullRequestMetadata(options)) metadata.set(name, value);
  const callOptions: Partial<CallOptions> = options.deadline ? { deadline: options.deadline } : {};
  const call = registry.pullPlugin(
    { runtime: { ...key.runtime }, plugin: { ...key.plugin } },
    metadata,
    callOptions,
  );
  const cancel = () => call.cancel();
  options.signal?.addEventListener("abort", cancel, { once: true });
  let headersError: unknown;
  let changed = false;
  call.once("metadata", (headers: Metadata) => {
    try {
      const announced = announcedArtifact(
        String(headers.get(PULL_METADATA.digest)[0] ?? ""),
        String(headers.get(PULL_METADATA.size)[0] ?? ""),
      );
      if (announced && !options.onHeaders(announced)) {
        changed = true;
        call.cancel();
      }
    } catch (error) {
      headersError = error;
      call.cancel();
    }
  });
  let trailers: Metadata | undefined;
  call.on("status", (status: StatusObject) => {
    trailers = status.metadata;
  });
  try {
    for await (const message of call as AsyncIterable<PullPluginResponse>) {
      if (headersError || changed) break;
      await options.onData([message.data as Buffer]);
    }
  } catch (error) {
    if (!headersError && !changed) throw error;
  } finally {
    options.signal?.removeEventListener("abort", cancel);
    call.cancel(); // a no-op once the call has ended; frees it when we broke out early
  }
  if (headersError) throw headersError;
  if (changed) return "changed";
  if (options.signal?.aborted) throw cancelled(options.signal);
  return attemptOutcome(String(trailers?.get(PULL_METADATA.notModified)[0] ?? ""));
}
