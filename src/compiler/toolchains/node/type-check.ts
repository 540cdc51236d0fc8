import { writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { Code, PluginError } from "../../../errors/plugin-error.js";
import { runProcess } from "../../run-process.js";
import type { NodeRuntime } from "./node-runtime-spec.js";
import type { PluginPackage } from "./plugin-package.js";

const require = createRequire(import.meta.url);
const TYPESCRIPT_DIR = dirname(require.resolve("typescript/package.json"));
/** typescript@7 is a native compiler with no JavaScript API: its `tsc` is run as a process. */
const TSC = join(TYPESCRIPT_DIR, "bin", "tsc");
export const TYPESCRIPT_VERSION = (require("typescript/package.json") as { version: string }).version;

const CHECK_FILE = "__atomix_export_check__.ts";
const MAX_DIAGNOSTICS = 5;

/**
 * Type-checks the plugin's TypeScript against the runtime's declarations
 * (the supplied modules are already in the package's node_modules), plus a
 * generated module that assigns the plugin's export to the type the runtime
 * requires. Bundler resolution, as the bundle is what runs. Errors →
 * FAILED_PRECONDITION with the first diagnostics as `file:line: message`.
 */
export async function typeCheck(options: {
  pkg: PluginPackage;
  runtime: NodeRuntime;
  signal: AbortSignal;
  timeoutMs: number;
}): Promise<void> {
  const { pkg, runtime } = options;
  const files: string[] = [];
  const spec = runtime.export;
  if (spec.type && spec.from) {
    const entry = `./${relative(pkg.dir, pkg.entry).split("\\").join("/")}`;
    // An absent export passes here (the verification step names it); an
    // export of the wrong type fails with the compiler's explanation.
    await writeFile(
      join(pkg.dir, CHECK_FILE),
      [
        `import type { ${spec.type} as Required } from ${JSON.stringify(spec.from)};`,
        `import * as plugin from ${JSON.stringify(entry)};`,
        `const exported: { ${spec.name}?: Required; [name: string]: unknown } = plugin;`,
        "export { exported };",
        "",
      ].join("\n"),
    );
    files.push(CHECK_FILE);
  }
  const tsconfig = {
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: "ES2022",
      lib: ["ES2023"],
      module: "preserve",
      moduleResolution: "bundler",
      allowImportingTsExtensions: true,
      resolveJsonModule: true,
      allowJs: true,
      checkJs: false,
      skipLibCheck: true,
      types: [],
    },
    files: [...files, relative(pkg.dir, pkg.entry)],
    include: ["**/*.ts", "**/*.mts", "**/*.cts"],
    exclude: ["node_modules", "**/*.test.ts", "test", "dist"],
  };
  const configFile = join(pkg.dir, "tsconfig.atomix-check.json");
  await writeFile(configFile, JSON.stringify(tsconfig, null, 2));
  const result = await runProcess(process.execPath, [TSC, "-p", configFile, "--pretty", "false"], {
    cwd: pkg.dir,
    env: { PATH: process.env.PATH ?? "" },
    signal: options.signal,
    timeoutMs: options.timeoutMs,
  });
  if (result.exitCode === 0) return;
  // The work directory is a temporary detail: messages name files as the package does.
  const output = result.stdout.split(`${pkg.dir}/`).join("");
  const diagnostics = parseDiagnostics(output, { spec, runtime });
  if (diagnostics.length === 0) {
    throw new PluginError(
      Code.Internal,
      `the TypeScript compiler failed without diagnostics (exit ${result.exitCode ?? result.signal}${result.timedOut ? ", timed out" : ""}): ${result.stderr.slice(0, 500)}`,
    );
  }
  const shown = diagnostics.slice(0, MAX_DIAGNOSTICS);
  const more = diagnostics.length > shown.length ? `; and ${diagnostics.length - shown.length} more` : "";
  throw new PluginError(
    Code.FailedPrecondition,
    `${pkg.name}@${pkg.version} does not type-check against runtime ${runtime.version}: ${shown.join("; ")}${more}`,
  );
}

/** `file(line,col): error TS1234: message` plus indented continuation lines → `file:line: message`. */
function parseDiagnostics(
  output: string,
  context: { spec: NodeRuntime["export"]; runtime: NodeRuntime },
): string[] {
  const diagnostics: string[] = [];
  for (const line of output.split("\n")) {
    const match = /^(.+?)\((\d+),\d+\): error (TS\d+): (.*)$/.exec(line);
    if (match) {
      const [, file, lineNo, , message] = match;
      if (file === CHECK_FILE) {
        const from = context.runtime.modules.find((m) => m.name === context.spec.from);
        diagnostics.push(
          `export "${context.spec.name}" is not a ${context.spec.type} of ${context.spec.from}${from ? `@${from.version}` : ""}: ${message}`,
        );
      } else {
        diagnostics.push(`${file}:${lineNo}: ${message}`);
      }
    } else if (/^\s+\S/.test(line) && diagnostics.length > 0) {
      diagnostics[diagnostics.length - 1] += ` ${line.trim()}`;
    }
  }
  return diagnostics;
}
