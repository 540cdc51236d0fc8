import { writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, posix, relative } from "node:path";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { toolFolders } from "../../sandbox/node-program.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import type { NodeRuntime } from "./node-runtime-spec.js";
import { isOutside, OUTSIDE_FILE } from "./package-rules.js";
import type { PluginPackage } from "./plugin-package.js";

const require = createRequire(import.meta.url);
const TYPESCRIPT_DIR = dirname(require.resolve("typescript/package.json"));
const TYPESCRIPT_FOLDERS = toolFolders("typescript");
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
  sandbox: Sandbox;
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
  const configFile = typeCheckConfigPath(pkg);
  await writeFile(configFile, JSON.stringify(tsconfig, null, 2));
  // The package is read-only here: the check writes nothing (noEmit). The
  // compiler sees its own folders and the package, nothing else of the server.
  const result = await options.sandbox.run({
    file: process.execPath,
    args: [TSC, "-p", configFile, "--pretty", "false", "--listFiles"],
    cwd: pkg.dir,
    readable: [...TYPESCRIPT_FOLDERS, pkg.dir],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin" },
    signal: options.signal,
    timeoutMs: options.timeoutMs,
  });
  if (result.timedOut) {
    throw new PluginError(
      Code.DeadlineExceeded,
      `type-checking ${pkg.name}@${pkg.version} took longer than ${options.timeoutMs} ms and was stopped`,
    );
  }
  // Diagnostics first, then (--listFiles) every file the program read.
  const listed = result.stdout.split("\n").filter((line) => line.startsWith("/") && !DIAGNOSTIC.test(line));
  const outside = listed.filter((file) => isOutside(relative(pkg.dir, file)) && !isStandardLibrary(file));
  if (outside.length > 0) {
    // Any diagnostic could quote such a file (a literal type, a suggested name): none is shown.
    throw new PluginError(
      Code.FailedPrecondition,
      `${pkg.name}@${pkg.version} does not type-check against runtime ${runtime.version}: ${OUTSIDE_FILE}`,
    );
  }
  if (result.exitCode === 0) return;
  // The work directory is a temporary detail: messages name files as the package does.
  const output = result.stdout.split(`${pkg.dir}/`).join("");
  const diagnostics = parseDiagnostics(output, { spec, runtime });
  if (diagnostics.length === 0) {
    // Whatever stopped it, the input is the plugin's: not a fault of the server.
    throw new PluginError(
      Code.FailedPrecondition,
      `${pkg.name}@${pkg.version} could not be type-checked: ${result.outOfMemory ? "the TypeScript compiler ran out of memory" : `the TypeScript compiler stopped (exit ${result.exitCode ?? result.signal}) without diagnostics`}`,
    );
  }
  const shown = [...new Set(diagnostics)].slice(0, MAX_DIAGNOSTICS);
  const more = diagnostics.length > shown.length ? `; and ${diagnostics.length - shown.length} more` : "";
  throw new PluginError(
    Code.FailedPrecondition,
    `${pkg.name}@${pkg.version} does not type-check against runtime ${runtime.version}: ${shown.join("; ")}${more}`,
  );
}

/** TypeScript's own declarations of the language (`lib.es2023.d.ts`): the only files outside the package a check may read. */
function isStandardLibrary(file: string): boolean {
  return (
    /\/lib\.[\w.]+\.d\.ts$/.test(file) &&
    TYPESCRIPT_FOLDERS.some(
      (dir) => file.startsWith(`${dir}/`) && !file.slice(dir.length).includes("/node_modules/"),
    )
  );
}

const DIAGNOSTIC = /^(.+?)\((\d+),\d+\): error (TS\d+): (.*)$/;

/** "Cannot find module '/abs'" or "'../../x'" from a file of the package: the rule, not the symptom. */
function importsOutside(file: string, message: string): boolean {
  const specifier = /^Cannot find module '([^']+)'/.exec(message)?.[1];
  if (!specifier) return false;
  if (specifier.startsWith("/")) return true;
  return specifier.startsWith(".") && isOutside(posix.join(posix.dirname(file), specifier));
}

/** The generated configuration the check runs with; esbuild uses it too when the package has none. */
export function typeCheckConfigPath(pkg: PluginPackage): string {
  return join(pkg.dir, "tsconfig.atomix-check.json");
}

/** `file(line,col): error TS1234: message` plus indented continuation lines → `file:line: message`. */
function parseDiagnostics(
  output: string,
  context: { spec: NodeRuntime["export"]; runtime: NodeRuntime },
): string[] {
  const diagnostics: string[] = [];
  let outside = false;
  for (const line of output.split("\n")) {
    const match = DIAGNOSTIC.exec(line);
    if (match) {
      const [, file, lineNo, , message] = match;
      if (file === CHECK_FILE) {
        const from = context.runtime.modules.find((m) => m.name === context.spec.from);
        diagnostics.push(
          `export "${context.spec.name}" is not a ${context.spec.type} of ${context.spec.from}${from ? `@${from.version}` : ""}: ${message}`,
        );
      } else if (file !== undefined && isOutside(file)) {
        // Its message may quote the file (an identifier, a line): not shown.
        diagnostics.push(OUTSIDE_FILE);
        outside = true;
        continue;
      } else if (importsOutside(file ?? "", message ?? "")) {
        diagnostics.push(OUTSIDE_FILE);
      } else {
        diagnostics.push(`${file}:${lineNo}: ${message}`);
      }
      outside = false;
    } else if (/^\s+\S/.test(line) && diagnostics.length > 0 && !outside) {
      diagnostics[diagnostics.length - 1] += ` ${line.trim()}`;
    }
  }
  return diagnostics;
}
