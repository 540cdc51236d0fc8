import { randomBytes } from "node:crypto";
import { copyFile, cp, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { packageFolder } from "atomix-plugins-core/model/package-name";
import type { Sandbox } from "../../sandbox/sandbox.js";
import { stepReports } from "../../sandbox/step-report.js";
import type { NodeRuntime } from "./node-runtime-spec.js";

/** All the memory a verification load may use: heap, buffers, code. */
const VERIFY_MEMORY_BYTES = 512 * 1024 * 1024;

/**
 * Runs in the sandbox: imports the bundle and reports, as one JSON line,
 * whether the required export is there with the right shape. The plugin
 * runs in this same process and may replace any global (JSON, Object,
 * Array.prototype, process.stdout, fs.writeSync), so everything the checker
 * uses after the import is taken before it, the report is written with
 * those copies, and it carries a nonce the plugin cannot read (gone from the
 * environment before the import; the permission model keeps it from
 * /proc/self/environ and the inspector, and heap snapshots are disabled).
 * A plugin can make its check fail, never pass.
 */
const CHECKER = `
import * as fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { pathToFileURL } from "node:url";
// Heap snapshots would show the plugin this process's memory, the nonce
// included; Node's permission model does not cover them (it does the
// inspector), so they are gone before the plugin loads.
const v8 = process.getBuiltinModule("v8");
for (const name of ["getHeapSnapshot", "writeHeapSnapshot"]) {
  v8[name] = () => { throw new Error("heap snapshots are not available while a plugin is verified"); };
}
syncBuiltinESMExports();
const write = fs.writeSync;
const stringify = JSON.stringify;
const keysOf = Object.keys;
const exit = process.exit.bind(process);
const toText = String;
const [bundle, specText] = process.argv.slice(1);
const spec = JSON.parse(specText);
const members = [];
for (const member of keysOf(spec.members)) members[members.length] = [member, spec.members[member]];
const nonce = process.env.ATOMIX_VERIFY_NONCE;
delete process.env.ATOMIX_VERIFY_NONCE;
const url = pathToFileURL(bundle).href;
const report = (problem) => {
  const body = problem === undefined ? '"ok":true' : '"problem":' + stringify(toText(problem));
  write(1, "\\n{" + body + ',"nonce":' + stringify(nonce) + "}\\n");
  exit(0);
};
let plugin;
try {
  plugin = await import(url);
} catch (error) {
  let what = "an error";
  try { what = toText(error?.name ?? "an error") + ": " + toText(error?.message ?? error); } catch {}
  report("loading it threw " + what);
}
if (plugin) {
  const value = plugin[spec.name];
  if (value === undefined) {
    let exported = "";
    const names = keysOf(plugin);
    for (let i = 0; i < names.length; i++) exported += (i ? ", " : "") + names[i];
    report('it has no export "' + spec.name + '" (its exports: ' + (exported || "none") + ")");
  } else if (spec.kind === "object" ? typeof value !== "object" || value === null : typeof value !== "function") {
    report('its export "' + spec.name + '" is ' + (value === null ? "null" : "a " + typeof value) + ", not " + (spec.kind === "object" ? "an object" : "a function"));
  } else {
    let wrong = "";
    for (let i = 0; i < members.length; i++) {
      const found = typeof value[members[i][0]];
      if (found !== members[i][1]) wrong += (wrong ? ", " : "") + members[i][0] + " (" + members[i][1] + ", found " + found + ")";
    }
    report(wrong ? 'its export "' + spec.name + '" lacks ' + wrong : undefined);
  }
}
`;

/**
 * Loads the bundle in a child Node.js process, in the build sandbox (no
 * network, its own PID namespace, a filesystem of its own folder and the
 * OS, a memory limit on everything it allocates) and under Node's permission
 * model besides: it may read only its own folder (the bundle and the
 * runtime's modules, resolvable as in the runtime), and may not write files,
 * spawn processes or start workers. This is the only place plugin code runs
 * on the server.
 */
export async function verifyBundle(options: {
  /** The bundle's file: copied next to the runtime's modules, never read into memory. */
  bundle: string;
  runtime: NodeRuntime;
  dir: string;
  name: string;
  sandbox: Sandbox;
  signal: AbortSignal;
  timeoutMs: number;
}): Promise<void> {
  const { dir, runtime } = options;
  await mkdir(join(dir, "node_modules"), { recursive: true });
  for (const module of runtime.modules) {
    await cp(module.dir, packageFolder(join(dir, "node_modules"), module.name), { recursive: true });
  }
  const bundlePath = join(dir, "plugin.mjs");
  await copyFile(options.bundle, bundlePath);
  const nonce = randomBytes(16).toString("hex");
  const result = await options.sandbox.run({
    file: process.execPath,
    args: [
      "--experimental-permission",
      `--allow-fs-read=${dir}/`,
      "--disable-warning=ExperimentalWarning",
      "--max-old-space-size=256",
      "--input-type=module",
      "--eval",
      CHECKER,
      bundlePath,
      JSON.stringify(runtime.export),
    ],
    cwd: dir,
    env: { ATOMIX_VERIFY_NONCE: nonce },
    readable: [dir],
    limits: { memoryBytes: VERIFY_MEMORY_BYTES, processes: 32, tmpBytes: 16 * 1024 * 1024 },
    signal: options.signal,
    timeoutMs: options.timeoutMs,
    maxOutputBytes: 64 * 1024,
  });
  if (result.timedOut) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${options.name} did not finish loading within ${options.timeoutMs} ms (a top-level await that never settles, or an endless loop)`,
    );
  }
  // Only the checker knows the nonce: a line without it is the plugin's.
  const report = stepReports(result.stdout).find((candidate) => candidate.nonce === nonce) as
    | { ok?: boolean; problem?: string }
    | undefined;
  if (report?.ok) return;
  const problem =
    report?.problem ??
    (result.outOfMemory
      ? `loading it used more than ${VERIFY_MEMORY_BYTES / 1024 / 1024} MiB of memory`
      : `loading it ended the process (exit ${result.exitCode ?? result.signal}): ${lastLines(result.stderr)}`);
  throw new PluginError(
    Code.FailedPrecondition,
    `${options.name} fails verification for runtime ${runtime.version}: ${problem}`,
  );
}

function lastLines(text: string): string {
  const lines = text
    .trim()
    .split("\n")
    .filter((line) => line.trim() !== "");
  return lines.slice(-3).join(" | ").slice(0, 600) || "no output";
}
