import { randomUUID } from "node:crypto";
import { mkdir, rename } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey, parseBuildKey } from "atomix-plugins-core/model/build-key";
import { type PluginReference, parseReference } from "atomix-plugins-core/model/reference";
import type { ConnectionOptions } from "./connection-options.js";
import { type CompileResult, createPluginClient, type PluginClient } from "./plugin-client.js";
import type { CallControl, PullProgress, RetryControl } from "./pull-artifact.js";

export interface LoadPluginOptions<T> extends CallControl, RetryControl {
  /**
   * A client to pull with (left open; it verifies provenance if it was made
   * with trustedKeys), or `server` to connect for this call only.
   */
  client?: PluginClient;
  server?: ConnectionOptions;
  /**
   * Where pulled artifacts are cached; a plugin whose bytes are cached and
   * still current is loaded without transferring them again.
   */
  cacheDir: string;
  /** Bytes the cache's artifacts may take (least recently used evicted first); unbounded by default. */
  cacheMaxBytes?: number;
  /**
   * Where the verified module is written and imported from, as
   * `<modulesDir>/<hex>.mjs`. A plugin imports the modules its runtime
   * supplies (its SDK) by bare name, and Node.js resolves those from the
   * module's own directory upwards: put this directory where the runtime's
   * `node_modules` is found. Default `<cacheDir>/modules`.
   */
  modulesDir?: string;
  /** The export the runtime requires of a plugin (its descriptor names it). Default "default". */
  exportName?: string;
  /** Refuse any other artifact; implied when the target is a reference. */
  expectedDigest?: Digest;
  /** Checks the export's shape; returning false refuses the plugin with FAILED_PRECONDITION. */
  check?: (value: unknown) => value is T;
  /**
   * Refuse (FAILED_PRECONDITION) a plugin built for another Node.js release
   * than this process's. Default true.
   */
  checkNodeVersion?: boolean;
  onProgress?: (progress: PullProgress) => void;
}

export interface LoadedPlugin<T> {
  /** The required export. */
  plugin: T;
  key: BuildKey;
  digest: Digest;
  /** The verified module file that was imported. */
  path: string;
  /** True when no artifact bytes were transferred. */
  fromCache: boolean;
}

/**
 * Loads a Node.js plugin into this process: pulls its artifact (or takes it
 * from the cache), verifies it, `import()`s it and checks the required
 * export. `target` is a build key, a reference from CompilePlugin (which
 * pins the digest: a cached copy of it loads without calling the server), or
 * what `client.compile` returned (pinned when the server answered a
 * reference, pulled by key otherwise).
 *
 * The module file is named by its digest (`<modulesDir>/<hex>.mjs`), so loading a new version of a key
 * in a long-running process imports the new bytes, and loading the same
 * bytes twice returns the module already imported.
 */
export async function loadPlugin<T = unknown>(
  target: BuildKey | PluginReference | CompileResult | string,
  options: LoadPluginOptions<T>,
): Promise<LoadedPlugin<T>> {
  const named: { key: BuildKey; digest?: Digest | undefined } | undefined =
    typeof target === "string" ? parseReference(target) : "key" in target ? target : undefined;
  const key = parseBuildKey(named ? named.key : (target as BuildKey));
  const expectedDigest = options.expectedDigest ?? named?.digest;
  if (named?.digest && options.expectedDigest && options.expectedDigest !== named.digest) {
    throw new PluginError(Code.InvalidArgument, "expectedDigest contradicts the reference's digest");
  }
  if (options.checkNodeVersion !== false) checkNodeRelease(key);
  if (!options.client && !options.server) {
    throw new PluginError(Code.InvalidArgument, "loadPlugin needs a client or a server to pull from");
  }
  if (options.client && options.server?.trustedKeys?.length) {
    // The client given is the one that pulls: keys it was not made with would check nothing.
    throw new PluginError(
      Code.InvalidArgument,
      "loadPlugin pulls with the client given, so server.trustedKeys would go unused: create the client with trustedKeys (createPluginClient), or give only server",
    );
  }

  const modules = options.modulesDir ?? join(options.cacheDir, "modules");
  await mkdir(modules, { recursive: true });
  const client = options.client ?? createPluginClient(options.server as ConnectionOptions);
  let pulled: Awaited<ReturnType<PluginClient["pull"]>>;
  try {
    pulled = await client.pull(key, {
      to: join(modules, `.${randomUUID()}.mjs`),
      cacheDir: options.cacheDir,
      ...(options.cacheMaxBytes !== undefined ? { cacheMaxBytes: options.cacheMaxBytes } : {}),
      ...(expectedDigest ? { expectedDigest } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  } finally {
    if (!options.client) client.close();
  }
  const path = join(modules, `${pulled.digest.slice("sha256:".length)}.mjs`);
  await rename(pulled.path, path);

  let namespace: Record<string, unknown>;
  try {
    namespace = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (error) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${formatBuildKey(key)} (${pulled.digest}) does not load: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const exportName = options.exportName ?? "default";
  if (!(exportName in namespace) || namespace[exportName] === undefined) {
    const names = Object.keys(namespace);
    throw new PluginError(
      Code.FailedPrecondition,
      `${formatBuildKey(key)} does not export "${exportName}"; it exports ${names.length ? names.map((n) => `"${n}"`).join(", ") : "nothing"}`,
    );
  }
  const value = namespace[exportName];
  if (options.check && !options.check(value)) {
    throw new PluginError(
      Code.FailedPrecondition,
      `the "${exportName}" export of ${formatBuildKey(key)} does not have the shape this runtime requires`,
    );
  }
  return { plugin: value as T, key, digest: pulled.digest, path, fromCache: pulled.fromCache };
}

/** `node20` or `node20.20.2` must match this process's Node.js release. */
function checkNodeRelease(key: BuildKey): void {
  const build = key.runtime.buildVersion;
  const match = /^node(\d+(?:\.\d+){0,2})$/.exec(build);
  if (!match?.[1]) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${formatBuildKey(key)} is built for ${build}, which is not a Node.js runtime`,
    );
  }
  const wanted = match[1].split(".");
  const running = process.versions.node.split(".");
  if (wanted.some((part, i) => part !== running[i])) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${formatBuildKey(key)} is built for ${build}, but this process runs Node.js ${process.versions.node}`,
    );
  }
}
