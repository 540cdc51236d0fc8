import { createHash } from "node:crypto";
import semver from "semver";
import validateNpmPackageName from "validate-npm-package-name";
import { Code, PluginError, quoted } from "../errors/plugin-error.js";

/** The runtime a plugin is built for: a release and the toolchain build of it. */
export interface RuntimeRef {
  readonly version: string;
  readonly buildVersion: string;
}

/** A plugin: an npm package name or a Go module path, and a semver version. */
export interface PluginRef {
  readonly name: string;
  readonly version: string;
}

/**
 * What one artifact is built for. Two requests with equal keys get the same
 * bytes. Versions are kept exactly as the caller wrote them (`v1.2.0` and
 * `1.2.0` are different keys), because Go module versions carry the `v` and
 * npm versions do not.
 */
export interface BuildKey {
  readonly runtime: RuntimeRef;
  readonly plugin: PluginRef;
}

const MAX_FIELD_BYTES = 256;

/** `go1.19.8`, `go1.22rc1`, `node20`, `node20.20.2`: a toolchain name and its release. */
const BUILD_VERSION = /^[a-z]+[0-9]+(\.[0-9]+){0,2}([a-z]+[0-9]+)?$/;

/**
 * A Go module path (golang.org/x/mod/module.CheckPath, simplified): a domain
 * with a dot as first element, then path elements of safe characters.
 */
const GO_MODULE_PATH = /^[a-z0-9-]+(\.[a-z0-9-]+)+(\/[A-Za-z0-9_~+-]+([.][A-Za-z0-9_~+-]+)*)*$/;

/** Human form of a key, used in every message about it. */
export function formatBuildKey(key: BuildKey): string {
  return `${key.plugin.name}@${key.plugin.version} for runtime ${key.runtime.version}/${key.runtime.buildVersion}`;
}

/** A stable identifier of a key: safe as a file name, a log field or a map key. */
export function buildKeyId(key: BuildKey): string {
  const canonical = JSON.stringify([
    key.runtime.version,
    key.runtime.buildVersion,
    key.plugin.name,
    key.plugin.version,
  ]);
  return createHash("sha256").update(canonical).digest("hex");
}

interface KeyInput {
  runtime?: { version?: string; buildVersion?: string } | undefined;
  plugin?: { name?: string; version?: string } | undefined;
}

/**
 * Checks every field of a request's runtime and plugin and returns the key.
 * Throws INVALID_ARGUMENT naming the field (as in the proto) and the rule.
 */
export function parseBuildKey(input: KeyInput): BuildKey {
  // Fields joined by NUL, a missing one as "": a valid key has neither NULs
  // nor empty fields, so no other input joins to its string.
  const { runtime, plugin } = input;
  const joined = `${runtime?.version ?? ""}\0${runtime?.buildVersion ?? ""}\0${plugin?.name ?? ""}\0${plugin?.version ?? ""}`;
  const known = validKeys.get(joined);
  if (known) return known;
  const key = checkBuildKey(input);
  if (validKeys.size >= VALID_KEYS_KEPT) validKeys.clear();
  validKeys.set(joined, key);
  keyTexts.set(key, joined);
  return key;
}

/**
 * The key's fields joined by NUL: a map key that costs no hash (buildKeyId
 * is a SHA-256). Made once per key object; parseBuildKey hands out one
 * object per valid key, so the cache-hit hot path makes no string.
 */
export function buildKeyText(key: BuildKey): string {
  let text = keyTexts.get(key);
  if (text === undefined) {
    text = `${key.runtime.version}\0${key.runtime.buildVersion}\0${key.plugin.name}\0${key.plugin.version}`;
    keyTexts.set(key, text);
  }
  return text;
}

const keyTexts = new WeakMap<BuildKey, string>();

/**
 * Keys that passed the checks, so that a fleet asking for the same few keys
 * does not run them (the npm name check above all) on every call: the
 * cache-hit CompilePlugin is a hot path. Bounded; cleared when full.
 */
const validKeys = new Map<string, BuildKey>();
const VALID_KEYS_KEPT = 4096;

function checkBuildKey(input: KeyInput): BuildKey {
  const runtimeVersion = field("runtime.version", input.runtime?.version);
  const buildVersion = field("runtime.build_version", input.runtime?.buildVersion);
  const name = field("plugin.name", input.plugin?.name);
  const pluginVersion = field("plugin.version", input.plugin?.version);
  checkSemver("runtime.version", runtimeVersion);
  checkSemver("plugin.version", pluginVersion);
  if (!BUILD_VERSION.test(buildVersion)) {
    throw invalid(
      "runtime.build_version",
      buildVersion,
      "must name a toolchain build such as go1.19.8, node20 or node20.20.2",
    );
  }
  checkPluginName(name);
  return Object.freeze({
    runtime: Object.freeze({ version: runtimeVersion, buildVersion }),
    plugin: Object.freeze({ name, version: pluginVersion }),
  });
}

/** Splits `name@version` (a scoped npm name keeps its leading `@`). */
export function parsePluginSpec(spec: string): PluginRef {
  const at = spec.lastIndexOf("@");
  if (at <= 0) {
    throw new PluginError(
      Code.InvalidArgument,
      `plugin ${quoted(spec)} must be written name@version, for example counter@1.0.0 or @acme/driver@1.2.0`,
    );
  }
  return { name: spec.slice(0, at), version: spec.slice(at + 1) };
}

function field(name: string, value: string | undefined): string {
  if (value === undefined || value === "") throw invalid(name, "", "is required");
  if (Buffer.byteLength(value) > MAX_FIELD_BYTES) {
    throw invalid(name, value, `must be at most ${MAX_FIELD_BYTES} bytes`);
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f\\]/.test(value)) {
    throw invalid(name, value, "must not contain control characters or backslashes");
  }
  return value;
}

function checkSemver(name: string, value: string): void {
  const bare = value.startsWith("v") ? value.slice(1) : value;
  if (semver.valid(bare) !== bare) {
    throw invalid(name, value, "must be a semantic version such as 1.2.0 or v1.2.0");
  }
}

function checkPluginName(name: string): void {
  if (name.includes("..") || name.startsWith("/") || name.endsWith("/") || name.includes("//")) {
    throw invalid("plugin.name", name, "must not contain '..', '//' or a leading or trailing '/'");
  }
  const npm = validateNpmPackageName(name);
  if (npm.validForNewPackages || npm.validForOldPackages) return;
  if (GO_MODULE_PATH.test(name)) return;
  throw invalid(
    "plugin.name",
    name,
    "must be an npm package name (counter, @acme/driver) or a Go module path (example.com/drivers/counter)",
  );
}

function invalid(field: string, value: string, rule: string): PluginError {
  const shown = value === "" ? "" : ` ${quoted(value)}`;
  return new PluginError(Code.InvalidArgument, `${field}${shown} ${rule}`);
}
