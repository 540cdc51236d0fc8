/**
 * The client library for runtimes and pipelines:
 * `import { createPluginClient, loadPlugin } from "atomix-plugins-client"`
 * (packages/client, which builds only what its tsconfig lists; the server
 * package exports the same as "atomix-plugins").
 */
export { Code, codeName, PluginError, UntrustedArtifactError } from "atomix-plugins-core/errors/plugin-error";
export type { Digest } from "atomix-plugins-core/model/artifact";
export type { BuildKey, PluginRef, RuntimeRef } from "atomix-plugins-core/model/build-key";
export { formatBuildKey, parseBuildKey, parsePluginSpec } from "atomix-plugins-core/model/build-key";
export type { ProvenanceStatement } from "atomix-plugins-core/model/provenance";
export { PROVENANCE, subjectName } from "atomix-plugins-core/model/provenance";
export type { PluginReference } from "atomix-plugins-core/model/reference";
export { formatReference, parseReference } from "atomix-plugins-core/model/reference";
export { PULL_METADATA } from "atomix-plugins-core/protocol/metadata";
export type { ConnectionOptions } from "./connection-options.js";
export type { LoadedPlugin, LoadPluginOptions } from "./load-plugin.js";
export { loadPlugin } from "./load-plugin.js";
export type {
  CacheReport,
  CompileResult,
  GarbageReport,
  ListPageRequest,
  ManifestPage,
  PluginClient,
  PluginManifest,
  ProvenanceAnswer,
  PushOptions,
} from "./plugin-client.js";
export { createPluginClient } from "./plugin-client.js";
export type { TrustedKey, TrustedKeySet } from "./provenance-check.js";
export { trustedKeySet, verifyProvenance } from "./provenance-check.js";
export type {
  CallControl,
  PullAttempt,
  PullOptions,
  PullProgress,
  PullResult,
  RetryControl,
  VerifiedBy,
} from "./pull-artifact.js";
export type { RetryPolicy } from "./retry-policy.js";
export { DEFAULT_RETRY_POLICY } from "./retry-policy.js";
export type { TlsOptions } from "./server-target.js";
