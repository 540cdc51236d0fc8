import { cp, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Code, PluginError } from "../../../errors/plugin-error.js";
import { runProcess } from "../../run-process.js";
import type { NodeRuntime } from "./node-runtime-spec.js";

/**
 * Runs in the sandbox: imports the bundle and reports, as one JSON line,
 * whether the required export is there with the right shape. It exits
 * explicitly, so a plugin that leaves a timer running cannot hold it open.
 */
const CHECKER = `
import { pathToFileURL } from "node:url";
const [bundle, specText] = process.argv.slice(1);
const spec = JSON.parse(specText);
const report = (result) => { process.stdout.write(JSON.stringify(result) + "\\n", () => process.exit(0)); };
let plugin;
try {
  plugin = await import(pathToFileURL(bundle).href);
} catch (error) {
  report({ problem: "loading it threw " + (error?.name ?? "an error") + ": " + (error?.message ?? String(error)) });
}
if (plugin) {
  const value = plugin[spec.name];
  const exported = Object.keys(plugin).sort();
  if (value === undefined) {
    report({ problem: 'it has no export "' + spec.name + '" (its exports: ' + (exported.join(", ") || "none") + ")" });
  } else if (spec.kind === "object" ? typeof value !== "object" || value === null : typeof value !== "function") {
    report({ problem: 'its export "' + spec.name + '" is ' + (value === null ? "null" : "a " + typeof value) + ", not " + (spec.kind === "object" ? "an object" : "a function") });
  } else {
    const wrong = Object.entries(spec.members).filter(([member, type]) => typeof value[member] !== type);
    report(wrong.length
      ? { problem: 'its export "' + spec.name + '" lacks ' + wrong.map(([m, t]) => m + " (" + t + ", found " + typeof value[m] + ")").join(", ") }
      : { ok: true });
  }
}
`;

/**
 * Loads the bundle in a child Node.js process under the permission model:
 * it may read only its own folder (the bundle and the runtime's modules,
 * resolvable as in the runtime), and may not write files, spawn processes
 * or start workers. Node 20's permission model does not cover the network;
 * the child gets an empty environment, a memory cap and a time limit.
 * This is the only place plugin code runs on the server.
 */
export async function verifyBundle(options: {
  bundle: Uint8Array;
  runtime: NodeRuntime;
  dir: string;
  name: string;
  signal: AbortSignal;
  timeoutMs: number;
}): Promise<void> {
  const { dir, runtime } = options;
  await mkdir(join(dir, "node_modules"), { recursive: true });
  for (const module of runtime.modules) {
    await cp(module.dir, join(dir, "node_modules", module.name), { recursive: true });
  }
  const bundlePath = join(dir, "plugin.mjs");
  await writeFile(bundlePath, options.bundle);
  const result = await runProcess(
    process.execPath,
    [
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
    { cwd: dir, env: {}, signal: options.signal, timeoutMs: options.timeoutMs, maxOutputBytes: 64 * 1024 },
  );
  if (result.timedOut) {
    throw new PluginError(
      Code.FailedPrecondition,
      `${options.name} did not finish loading within ${options.timeoutMs} ms (a top-level await that never settles, or an endless loop)`,
    );
  }
  const line = result.stdout.trim().split("\n").pop() ?? "";
  let report: { ok?: boolean; problem?: string } | undefined;
  try {
    report = JSON.parse(line) as typeof report;
  } catch {
    report = undefined;
  }
  if (report?.ok) return;
  const problem =
    report?.problem ??
    `loading it ended the process (exit ${result.exitCode ?? result.signal}): ${lastLines(result.stderr)}`;
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
