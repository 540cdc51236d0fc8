/**
 * The client library for runtimes and pipelines: `import { createPluginClient } from "atomix-plugins"`.
 */
export { Code, PluginError } from "../errors/plugin-error.js";
export type { BuildKey, PluginRef, RuntimeRef } from "../model/build-key.js";
export { formatBuildKey, parseBuildKey, parsePluginSpec } from "../model/build-key.js";
export type { PluginReference } from "../model/reference.js";
export { formatReference, parseReference } from "../model/reference.js";
export { PULL_METADATA } from "../protocol/metadata.js";
export type { Digest } from "../store/artifact-store.js";
export type { ConnectionOptions } from "./grpc-clients.js";
export type {
  CallControl,
  PluginClient,
  PluginManifest,
  PullOptions,
  PullResult,
  PushOptions,
} from "./plugin-client.js";
export { createPluginClient } from "./plugin-client.js";
