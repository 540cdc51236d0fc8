import { Code, codeName, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { ANNOTATIONS } from "atomix-plugins-core/model/annotations";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import type { BuildRecord } from "atomix-plugins-core/model/build-record";
import type { Logger } from "pino";
import type { BuildRecordStore } from "../store/build-record-store.js";
import type { SourceStamp } from "./sources/source-stamp.js";
import type { RuntimeDescriptor } from "./toolchain.js";

export interface BuildRecordContext {
  readonly records: BuildRecordStore | undefined;
  readonly failureTtlMs: number;
  readonly sourceStamp: SourceStamp | undefined;
  readonly log: Logger | undefined;
}

/**
 * The failure to answer instead of building `key`: its last build failed
 * with FAILED_PRECONDITION less than the TTL ago, for this very runtime
 * release and an unchanged source. Such a failure is the plugin's (it does
 * not compile, conflicts with the runtime, lacks its export): building it
 * again gives the same answer, only later. Other codes (a timeout, a full
 * disk) may pass, so they are never remembered. A store that cannot be read
 * remembers nothing: the call builds.
 */
export async function rememberedFailure(
  context: BuildRecordContext,
  key: BuildKey,
  runtime: RuntimeDescriptor,
): Promise<PluginError | undefined> {
  if (!context.records || context.failureTtlMs <= 0) return undefined;
  const record = await context.records.getBuildRecord(key).catch(() => undefined);
  if (record?.outcome !== "failure" || record.code !== codeName(Code.FailedPrecondition)) return undefined;
  const age = Date.now() - Date.parse(record.finishedAt);
  if (!(age >= 0 && age < context.failureTtlMs)) return undefined;
  if (record.runtimeDigest !== (runtime.digest ?? "")) return undefined;
  const stamp = await context.sourceStamp?.(key.plugin).catch(() => undefined);
  if (stamp === undefined || stamp !== record.sourceStamp) return undefined;
  context.log?.info({ key: formatBuildKey(key), ageMs: age }, "answered with the remembered build failure");
  return new PluginError(Code.FailedPrecondition, record.message);
}

/** Leaves the record of one toolchain run in the store; a store that refuses it is logged, not fatal. */
export async function writeBuildRecord(
  context: BuildRecordContext,
  key: BuildKey,
  runtime: RuntimeDescriptor,
  outcome: (
    | { manifest: ArtifactManifest; failure?: undefined }
    | { failure: PluginError; manifest?: undefined }
  ) & {
    toolchainName?: string;
    durationMs?: number;
    sourceStamp?: string;
    output?: { text: string; truncated: boolean };
  },
): Promise<void> {
  if (!context.records) return;
  const toolchain: Record<string, string> = {
    [ANNOTATIONS.toolchain]: outcome.toolchainName ?? runtime.toolchain,
  };
  for (const [name, value] of Object.entries(outcome.manifest?.annotations ?? {})) {
    if (name.startsWith(ANNOTATIONS.toolchain)) toolchain[name] = value;
  }
  const record: BuildRecord = {
    key,
    outcome: outcome.manifest ? "success" : "failure",
    code: codeName(outcome.failure?.code ?? Code.Ok),
    message: outcome.failure?.message ?? "",
    durationMs: outcome.durationMs ?? 0,
    finishedAt: new Date().toISOString(),
    toolchain,
    runtimeDigest: runtime.digest ?? "",
    sourceStamp: outcome.sourceStamp ?? "",
    artifactDigest: outcome.manifest?.digest ?? "",
    output: outcome.output?.text ?? "",
    outputTruncated: outcome.output?.truncated ?? false,
  };
  try {
    await context.records.putBuildRecord(record);
  } catch (error) {
    context.log?.warn(
      { key: formatBuildKey(key), error: PluginError.from(error).message },
      "the build record could not be stored",
    );
  }
}
