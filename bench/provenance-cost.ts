/**
 * `npm run bench:provenance`: what signed provenance costs. Our TypeScript
 * client pulls a 64 MiB artifact with and without checking its provenance
 * (fetch the bundle, verify the signature, match the subject), in
 * interleaved rounds from one signing server; and cache-hit CompilePlugin
 * calls/s (grpc-go client, 64 callers) against a server that signs beside
 * one that does not. Prints a table like `npm run bench`.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createPluginClient } from "atomix-plugins-client";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { buildGoPeers } from "./lib/go-peers.js";
import { killAll, run, SERVER_NODE_FLAGS, type ServerProcess, startServer } from "./lib/processes.js";
import { MiB, median } from "./lib/stats.js";
import { formatTable, type Row } from "./lib/table.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = join(ROOT, "dist/src/cli/main.js");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);
const PULLS = Number(process.env.BENCH_SINGLE_PULLS ?? 8);
const UNARY_SECONDS = Number(process.env.BENCH_UNARY_SECONDS ?? 3);
const CALLERS = 64;
const TOKEN = "bench-provenance";
// The grpc-go client's unary mode asks for plugin <name>@1.0.0 of runtime 1.0.0 with -build.
const KEY: BuildKey = {
  runtime: { version: "1.0.0", buildVersion: "go1.19.8" },
  plugin: { name: "bench-64m", version: "1.0.0" },
};

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "atomix-bench-provenance-"));
  const sink = existsSync("/dev/shm") ? await mkdtemp("/dev/shm/atomix-bench-") : work;
  const servers: ServerProcess[] = [];
  try {
    const go = await buildGoPeers({ root: ROOT, outDir: join(ROOT, "dist/bench-go") });
    await run(process.execPath, [CLI, "keygen", "-o", join(work, "signing")]);
    const trusted = await readFile(join(work, "signing.pub"), "utf8");
    const artifact = join(work, "artifact");
    await writeFile(artifact, randomBytes(64 * MiB));
    const start = (name: string, extra: string[]) =>
      startServer({
        name,
        command: process.execPath,
        // A signing server signs only what a known credential pushes.
        env: { ATOMIX_PLUGINS_ADMIN_TOKEN: TOKEN },
        args: [...SERVER_NODE_FLAGS, CLI, "serve", "--listen", "127.0.0.1:0", "--http", "off"].concat([
          "--data",
          join(work, name),
          "--log-level",
          "info",
          ...extra,
        ]),
      });
    const signed = await start("signed", ["--signing-key", join(work, "signing.key")]);
    servers.push(signed);
    const unsigned = await start("unsigned", []);
    servers.push(unsigned);
    for (const server of servers) {
      const client = createPluginClient({ address: server.address, token: TOKEN });
      await client.pushFile(KEY, artifact);
      client.close();
    }

    const pull = async (verify: boolean) => {
      const out = await run(process.execPath, [
        join(ROOT, "dist/bench/ts-pull.js"),
        JSON.stringify({
          address: signed.address,
          key: KEY,
          dir: sink,
          count: PULLS,
          ...(verify ? { trustedKeys: [trusted] } : {}),
        }),
      ]);
      return (JSON.parse(out) as { results: { ms: number }[] }).results.map((r) => r.ms);
    };
    const unary = async (server: ServerProcess) => {
      const out = await run(go.client, [
        ...["-mode", "unary", "-addr", server.address, "-name", KEY.plugin.name],
        ...["-build", KEY.runtime.buildVersion, "-c", String(CALLERS), "-duration", `${UNARY_SECONDS}s`],
      ]);
      return JSON.parse(out) as { callsPerSec: number; p50Ms: number };
    };
    const rounds: {
      off: number;
      on: number;
      unsigned: number;
      signed: number;
      p50Off: number;
      p50On: number;
    }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const flip = round % 2 === 1;
      const [first, second] = flip ? [true, false] : [false, true];
      const a = median(await pull(first));
      const b = median(await pull(second));
      const [u1, u2] = flip
        ? [await unary(signed), await unary(unsigned)]
        : [await unary(unsigned), await unary(signed)];
      const [signedFigures, unsignedFigures] = flip ? [u1, u2] : [u2, u1];
      rounds.push({
        off: flip ? b : a,
        on: flip ? a : b,
        signed: signedFigures.callsPerSec,
        unsigned: unsignedFigures.callsPerSec,
        p50On: signedFigures.p50Ms,
        p50Off: unsignedFigures.p50Ms,
      });
      console.error(`round ${round + 1}/${ROUNDS} done`);
    }
    const m = (pick: (r: (typeof rounds)[number]) => number) => median(rounds.map(pick));
    const rows: Row[] = [
      {
        figure: "TS client pull of 64 MiB, provenance verified vs not",
        unit: "ms",
        ours: m((r) => r.on),
        peer: m((r) => r.off),
        ratio: m((r) => r.on / r.off),
        target: { ratioAtMost: 1.05 },
        note: "peer column: the same pull without trustedKeys",
      },
      {
        figure: `cache-hit CompilePlugin, ${CALLERS} callers, signing server vs unsigned`,
        unit: "calls/s",
        ours: m((r) => r.signed),
        peer: m((r) => r.unsigned),
        ratio: m((r) => r.signed / r.unsigned),
        note: `p50 ${m((r) => r.p50On).toFixed(2)} vs ${m((r) => r.p50Off).toFixed(2)} ms`,
      },
    ];
    console.log(formatTable(rows));
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    killAll();
    await rm(work, { recursive: true, force: true });
    if (sink !== work) await rm(sink, { recursive: true, force: true });
  }
}

await main();
