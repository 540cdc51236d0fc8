/**
 * A program of its own, run inside the build sandbox: bundles a plugin with
 * esbuild (which starts its own esbuild process, in the same sandbox) and
 * prints one JSON line, `{ ok, inputs }` with every file the bundle read, or
 * `{ errors }` with esbuild's messages. Imports nothing of the server.
 *
 * argv: one JSON object with `entry`, `dir` (the package), `outfile`,
 * `target`, `external` and `tsconfig`.
 */
import { writeFile } from "node:fs/promises";
import { isAbsolute, relative, resolve } from "node:path";
import { build, type Plugin } from "esbuild";

interface BundleRequest {
  maxBytes: number;
  entry: string;
  dir: string;
  outfile: string;
  target: string;
  external: string[];
  tsconfig: string;
}

const request = JSON.parse(process.argv[2] ?? "{}") as BundleRequest;

function report(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

/**
 * Refuses, by name, an import that leaves the package by its path (absolute
 * or `../` too far): the server checks every file read afterwards anyway,
 * this only gives the author the rule instead of "could not resolve".
 */
const stayInside: Plugin = {
  name: "stay-inside-the-package",
  setup(build) {
    build.onResolve({ filter: /^(\/|\.\.?(\/|$))/ }, (args) => {
      if (args.kind === "entry-point") return undefined;
      const target = resolve(args.resolveDir, args.path);
      const rel = relative(request.dir, target);
      if (rel === ".." || rel.startsWith("../") || isAbsolute(rel)) {
        return {
          errors: [{ text: `outside the package: ${args.path} (imports must stay inside the package)` }],
        };
      }
      return undefined;
    });
  },
};

try {
  const result = await build({
    plugins: [stayInside],
    entryPoints: [request.entry],
    absWorkingDir: request.dir,
    bundle: true,
    format: "esm",
    platform: "node",
    target: [request.target],
    external: request.external,
    // The package's own tsconfig.json was checked by the server; without one
    // a generated config stands in, so no folder above the package is searched.
    tsconfig: request.tsconfig,
    outfile: request.outfile,
    write: false,
    metafile: true,
    sourcemap: false,
    charset: "utf8",
    legalComments: "eof",
    logLevel: "silent",
  });
  const output = result.outputFiles[0];
  if (!output) throw new Error("esbuild produced no output");
  // A few bytes of source can fold into a huge bundle (constant strings
  // repeated at every use): refused before anything is written.
  if (output.contents.byteLength > request.maxBytes) {
    report({
      errors: [
        {
          text: `the bundle would be ${output.contents.byteLength} bytes, over the limit of ${request.maxBytes} (--max-build-output)`,
        },
      ],
    });
  } else {
    await writeFile(request.outfile, output.contents);
    report({ ok: true, inputs: Object.keys(result.metafile.inputs) });
  }
} catch (error) {
  const errors = (error as { errors?: { text: string; location?: { file: string; line: number } | null }[] })
    .errors;
  report({
    errors: errors
      ? errors.map((e) => ({ text: e.text, file: e.location?.file, line: e.location?.line }))
      : [{ text: (error as Error).message }],
  });
}
