import { randomBytes } from "node:crypto";
import { cp, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Code, PluginError } from "../../../errors/plugin-error.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import { lastJsonLine } from "../../sources/source-unpacker.js";
import type { NodeRuntime } from "./node-runtime-spec.js";

/** All the memory a verification load may use: heap, buffers, code. */
const VERIFY_MEMORY_BYTES = 512 * 1024 * 1024;

/**
 * Runs in the sandbox: imports the bundle and reports, as one JSON line,
 * whether the required export is there with the right shape. It exits
 * explicitly, so a plugin that leaves a timer running cannot hold it open.
 */
const CHECKER = `
import { pathToFileURL } from "node:url";
const [bundle, specText] = process.argv.slice(1);
const spec = JSON.parse(specText);
// The report carries a nonce the plugin cannot read (it is gone from the
// environment before the plugin loads), so a plugin cannot print a false one.
const nonce = process.env.ATOMIX_VERIFY_NONCE;
delete process.env.ATOMIX_VERIFY_NONCE;
const report = (result) => { process.stdout.write(JSON.stringify({ ...result, nonce }) + "\\n", () => process.exit(0)); };
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
 * Loads the bundle in a child Node.js process, in the build sandbox (no
 * network, its own PID namespace, a filesystem of its own folder and the
 * OS, a memory limit on everything it allocates) and under Node's permission
 * model besides: it may read only its own folder (the bundle and the
 * runtime's modules, resolvable as in the runtime), and may not write files,
 * spawn processes or start workers. This is the only place plugin code runs
 * on the server.
 */
export async function verifyBundle(options: {
  bundle: Uint8Array;
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
    await cp(module.dir, join(dir, "node_modules", module.name), { recursive: true });
  }
  const bundlePath = join(dir, "plugin.mjs");
  await writeFile(bundlePath, options.bundle);
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
  const last = lastJsonLine(result.stdout) as { ok?: boolean; problem?: string; nonce?: string } | undefined;
  const report = last?.nonce === nonce ? last : undefined;
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
