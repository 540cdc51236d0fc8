import { parseArgs } from "node:util";

export interface BenchOptions {
  quick: boolean;
  /** Interleaved rounds of the side-by-side figures; medians are over these. */
  rounds: number;
  /** Sequential single-stream pulls per server per round. */
  singlePulls: number;
  singleMiB: number;
  concurrency: number;
  concurrentMiB: number;
  /** Bytes per second each slow client reads at. */
  slowRate: number;
  /** Artifact sizes (MiB) pulled from a fresh server to compare peak memory. */
  rssSizesMiB: number[];
  rssRounds: number;
  unarySeconds: number;
  unaryCallers: number;
  /** Fresh pairs of processes (ours, bare) the cache-hit calls are also measured on. */
  unaryFreshPairs: number;
  /** Bytes per message of the grpc-go peer; 0: the same as our server's. */
  peerChunk: number;
  /** Extra flags for `atomix-plugins serve` (e.g. "--chunk-size 1048576"). */
  serverArgs: string[];
  /** Extra Node.js flags for our server (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"). */
  serverNodeArgs: string[];
  /** A file our server's stdout (its logs, `--trace-gc` lines) is appended to. */
  serverLog: string | undefined;
  /** Concurrent pullers of the fan-out rows, each on its own connection (e.g. 100,1000,5000). */
  fanout: number[];
  /** Size of each fan-out artifact. */
  fanoutMiB: number;
  /** Distinct artifacts of the "different artifacts" fan-out rows. */
  fanoutArtifacts: number;
  /** Run only these sections (single, concurrent, slow, fanout, unary, client-unary, rss, compile, replica); all when empty. */
  only: string[];
  /** Keys of the filesystem store in the index rows (section index: ls, catalog pages, gc). */
  indexKeys: number[];
  /** Keys of the registry store in the index rows; 0 leaves that row out. */
  indexRegistryKeys: number;
}

const HELP = `npm run bench -- [--quick] [--rounds N] [--only single,concurrent,slow,fanout,unary,client-unary,rss,compile,replica]
  [--single-pulls N] [--concurrency N] [--slow-rate BYTES_PER_S] [--rss-sizes 1,64,512] [--fanout 100,1000,5000]
  [--unary-seconds S] [--unary-fresh-pairs N] [--peer-chunk BYTES] [--server-args "--chunk-size 1048576"]
  [--server-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"] [--server-log FILE]
  [--only index --index-keys 10000,100000 --index-registry-keys 10000]
Every flag also reads BENCH_<FLAG> from the environment (BENCH_ROUNDS=3).`;

/** Flags win over BENCH_* environment variables, which win over the defaults (full or --quick). */
export function parseBenchOptions(argv: string[], env: NodeJS.ProcessEnv): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      help: { type: "boolean" },
      rounds: { type: "string" },
      "single-pulls": { type: "string" },
      concurrency: { type: "string" },
      "slow-rate": { type: "string" },
      "rss-sizes": { type: "string" },
      "rss-rounds": { type: "string" },
      fanout: { type: "string" },
      "unary-seconds": { type: "string" },
      "unary-fresh-pairs": { type: "string" },
      "peer-chunk": { type: "string" },
      "server-args": { type: "string" },
      "server-node-args": { type: "string" },
      "server-log": { type: "string" },
      only: { type: "string" },
      "index-keys": { type: "string" },
      "index-registry-keys": { type: "string" },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const read = (flag: keyof typeof values): string | undefined => {
    const value = values[flag];
    if (typeof value === "string") return value;
    return env[`BENCH_${flag.toUpperCase().replaceAll("-", "_")}`] || undefined;
  };
  const quick = values.quick === true || env.BENCH_QUICK === "1";
  const number = (flag: keyof typeof values, fallback: number): number => {
    const raw = read(flag);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < 0) throw new Error(`--${flag}: expected a number, got "${raw}"`);
    return value;
  };
  return {
    quick,
    rounds: number("rounds", quick ? 1 : 5),
    singlePulls: number("single-pulls", quick ? 2 : 3),
    singleMiB: 64,
    concurrency: number("concurrency", 100),
    concurrentMiB: 16,
    slowRate: number("slow-rate", 5_000_000),
    rssSizesMiB: (read("rss-sizes") ?? "1,64,512").split(",").map(Number),
    rssRounds: number("rss-rounds", quick ? 1 : 2),
    fanout: (read("fanout") ?? "100,1000").split(",").filter(Boolean).map(Number),
    fanoutMiB: 2,
    fanoutArtifacts: 4,
    unarySeconds: number("unary-seconds", quick ? 1 : 3),
    unaryCallers: 64,
    unaryFreshPairs: number("unary-fresh-pairs", quick ? 2 : 5),
    peerChunk: number("peer-chunk", 0),
    serverArgs: (read("server-args") ?? "").split(/\s+/).filter(Boolean),
    serverNodeArgs: (read("server-node-args") ?? "").split(/\s+/).filter(Boolean),
    serverLog: read("server-log"),
    indexKeys: (read("index-keys") ?? (quick ? "10000" : "10000,100000"))
      .split(",")
      .filter(Boolean)
      .map(Number),
    indexRegistryKeys: number("index-registry-keys", quick ? 0 : 10_000),
    only: (read("only") ?? "").split(",").filter(Boolean),
  };
}
