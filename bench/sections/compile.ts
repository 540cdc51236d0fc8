import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { run, SERVER_NODE_FLAGS, type ServerProcess, startServer } from "../lib/processes.js";
import { median } from "../lib/stats.js";
import type { Row } from "../lib/table.js";

/** The bundled examples (examples/runtimes, examples/plugins): what `npm start` serves. */
const NODE_EXAMPLE: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "node20" },
  plugin: { name: "counter", version: "1.0.0" },
};
const GO_EXAMPLE: BuildKey = {
  runtime: { version: "3.0.0", buildVersion: "go1.19.8" },
  plugin: { name: "example.com/atomix/drivers/counter", version: "v1.0.0" },
};

export interface CompileOptions {
  root: string;
  /** The grpc-go load client (bench/go/client): one connection per caller, as a fleet has. */
  goClient: string;
  work: string;
  /** GOCACHE/GOMODCACHE kept between runs: the Go figure is for a warm build cache. */
  goCache: string;
  rounds: number;
  concurrency: number;
  log: (message: string) => void;
}

/**
 * Cold compiles (an empty store each time) on our server with its bundled
 * examples: the example Node.js plugin, the example Go driver with a warm Go
 * build cache, and `concurrency` identical cold compiles at once, with the
 * toolchain runs counted from the server's "built" log lines. The calls come
 * from the grpc-go client, each caller on its own connection dialed before
 * the clock starts: one Node.js process starting 100 grpc-js calls at once
 * puts its first request on the wire 30–60 ms late, which is the client's
 * cost, not the server's.
 */
export async function compileRows(options: CompileOptions): Promise<Row[]> {
  const cli = join(options.root, "dist/src/cli/main.js");
  let builds = 0;
  const start = async (sandbox: Sandboxing): Promise<ServerProcess> =>
    startServer({
      name: "atomix-plugins (compiler)",
      command: process.execPath,
      args: [
        ...SERVER_NODE_FLAGS,
        cli,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        await mkdtemp(join(options.work, "compile-")),
        "--go-cache",
        options.goCache,
        "--sandbox",
        sandbox,
      ],
      cwd: options.root,
      onLine(line) {
        if (line.includes('"msg":"built"')) builds += 1;
      },
    });
  const timed = async (
    key: BuildKey,
    callers = 1,
    sandbox: Sandboxing = "bwrap",
  ): Promise<{ seconds: number; builds: number }> => {
    const server = await start(sandbox);
    try {
      builds = 0;
      const out = await run(options.goClient, [
        "-mode",
        "compile",
        "-addr",
        server.address,
        "-runtime",
        key.runtime.version,
        "-build",
        key.runtime.buildVersion,
        "-name",
        key.plugin.name,
        "-version",
        key.plugin.version,
        "-n",
        String(callers),
      ]);
      const { wallMs, references } = JSON.parse(out) as { wallMs: number; references: number };
      if (references !== 1) throw new Error(`${callers} identical compiles got ${references} references`);
      return { seconds: wallMs / 1000, builds };
    } finally {
      await server.stop();
    }
  };

  const rows: Row[] = [];
  try {
    const node: number[] = [];
    const nodeUnsandboxed: number[] = [];
    const many: { seconds: number; builds: number; ratio: number }[] = [];
    for (let round = 0; round < options.rounds; round++) {
      options.log(`cold compiles, round ${round + 1}/${options.rounds}`);
      const one = await timed(NODE_EXAMPLE);
      node.push(one.seconds);
      nodeUnsandboxed.push((await timed(NODE_EXAMPLE, 1, "off")).seconds);
      const all = await timed(NODE_EXAMPLE, options.concurrency);
      many.push({ ...all, ratio: all.seconds / one.seconds });
    }
    rows.push(
      {
        figure: `cold compile, example Node.js plugin (${NODE_EXAMPLE.plugin.name}@${NODE_EXAMPLE.plugin.version})`,
        ours: median(node),
        unit: "s",
        target: { oursAtMost: 1.5 },
      },
      sandboxOverhead(node, nodeUnsandboxed),
      {
        figure: `${options.concurrency} identical cold compiles at once: wall, / one compile`,
        ours: median(many.map((m) => m.seconds)),
        ratio: median(many.map((m) => m.ratio)),
        unit: "s",
        target: { ratioAtMost: 1.2 },
      },
      {
        figure: "  toolchain runs for them",
        ours: Math.max(...many.map((m) => m.builds)),
        unit: "runs",
        target: { oursAtMost: 1 },
      },
    );
  } catch (error) {
    rows.push(unavailable("cold compile, example Node.js plugin", error));
  }
  try {
    options.log("cold compile of the example Go driver (warming the Go build cache first)");
    await timed(GO_EXAMPLE);
    const go: number[] = [];
    const goUnsandboxed: number[] = [];
    for (let round = 0; round < options.rounds; round++) {
      go.push((await timed(GO_EXAMPLE)).seconds);
      goUnsandboxed.push((await timed(GO_EXAMPLE, 1, "off")).seconds);
    }
    rows.push(
      {
        figure: "cold compile, example Go driver (warm Go build cache)",
        ours: median(go),
        unit: "s",
      },
      sandboxOverhead(go, goUnsandboxed),
    );
  } catch (error) {
    rows.push(unavailable("cold compile, example Go driver", error));
  }
  return rows;
}

type Sandboxing = "bwrap" | "off";

/** What the build sandbox adds to a compile: the same compile with `--sandbox off`, side by side. */
function sandboxOverhead(sandboxed: number[], unsandboxed: number[]): Row {
  return {
    figure: "  the build sandbox's share: bubblewrap - --sandbox off",
    ours: Math.round((median(sandboxed) - median(unsandboxed)) * 1000),
    unit: "ms",
    target: { oursAtMost: 150 },
  };
}

function unavailable(figure: string, error: unknown): Row {
  const reason = error instanceof Error ? error.message : String(error);
  return { figure, ours: `not available: ${reason.split("\n")[0]?.slice(0, 160)}`, unit: "s" };
}
