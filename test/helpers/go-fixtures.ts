import { readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import type { RuntimeDescriptor } from "../../src/compiler/toolchain.js";

export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const EXAMPLES = join(REPO_ROOT, "examples");
export const EXAMPLE_PLUGINS = join(EXAMPLES, "plugins");
export const EXAMPLE_GOPROXY = join(EXAMPLES, "goproxy");
export const EXAMPLE_GO_RUNTIME = join(EXAMPLES, "go-runtime");
/** The release of the `go` on PATH the examples are written for (Debian 12's). */
export const GO_RELEASE = "go1.19.8";
export const COUNTER = "example.com/atomix/drivers/counter";
export const ECHO = "example.com/atomix/drivers/echo";

/** The example Go runtime's descriptor, as the runtime catalog hands it to toolchains. */
export function exampleGoRuntime(overrides: Record<string, unknown> = {}): RuntimeDescriptor {
  const dir = join(EXAMPLES, "runtimes", "3.0.0");
  const { toolchain, ...spec } = JSON.parse(readFileSync(join(dir, "runtime.json"), "utf8")) as Record<
    string,
    unknown
  >;
  return { version: "3.0.0", toolchain: String(toolchain), dir, spec: { ...spec, ...overrides } };
}

export function goKey(name: string, version: string, buildVersion = GO_RELEASE): BuildKey {
  return { runtime: { version: "3.0.0", buildVersion }, plugin: { name, version } };
}

/**
 * One directory for the tests of a file: a Go build cache shared by all of
 * them (a cold build of the standard library in plugin mode takes tens of
 * seconds, a warm one a second), a module cache, and whatever else they make.
 * ATOMIX_PLUGINS_TEST_GO_CACHE names a persistent cache instead, to keep
 * repeated local runs warm.
 */
export async function goTestDir(): Promise<{ dir: string; cacheDir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "atomix-go-test-"));
  const cacheDir = process.env.ATOMIX_PLUGINS_TEST_GO_CACHE ?? join(dir, "go-cache");
  return {
    dir,
    cacheDir,
    // Module cache files are read-only: make them removable first.
    remove: async () => {
      await chmodWritable(dir);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Writes a module into a catalog directory: `<catalog>/<module>/<version>/<file>`. */
export async function writeModule(
  catalog: string,
  module: string,
  version: string,
  files: Record<string, string>,
): Promise<string> {
  const root = join(catalog, module, version);
  for (const [name, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, name)), { recursive: true });
    await writeFile(join(root, name), text);
  }
  return root;
}

async function chmodWritable(dir: string): Promise<void> {
  const walk = async (path: string): Promise<void> => {
    await chmod(path, 0o755).catch(() => {});
    const entries = await readdir(path, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) if (entry.isDirectory()) await walk(join(path, entry.name));
  };
  await walk(dir);
}
