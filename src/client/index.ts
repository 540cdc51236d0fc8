/**
 * The client library for runtimes and pipelines:
 * `import { createPluginClient, loadPlugin } from "atomix-plugins-client"`
 * (packages/client, which builds only what its tsconfig lists; the server
 * package exports the same as "atomix-plugins").
 */
export { Code, codeName, PluginError, UntrustedArtifactError } from "../errors/plugin-error.js";
export type { Digest } from "../model/artifact.js";
export type { BuildKey, PluginRef, RuntimeRef } from "../model/build-key.js";
export { formatBuildKey, parseBuildKey, parsePluginSpec } from "../model/build-key.js";
export type { ProvenanceStatement } from "../model/provenance.js";
export { PROVENANCE, subjectName } from "../model/provenance.js";
export type { PluginReference } from "../model/reference.js";
export { formatReference, parseReference } from "../model/reference.js";
export { PULL_METADATA } from "../protocol/metadata.js";
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
