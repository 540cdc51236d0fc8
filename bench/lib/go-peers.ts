import { existsSync } from "node:fs";
import { cp, mkdir, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { run } from "./processes.js";

/** Where Debian's golang-*-dev packages put Go sources (GOPATH layout). */
const DEBIAN_GOPATH = "/usr/share/gocode";

export interface GoPeers {
  server: string;
  client: string;
  goVersion: string;
}

/**
 * Builds the grpc-go peer server and load-generating client offline, from
 * Debian's Go packages: protoc-gen-go and protoc-gen-go-grpc from their
 * sources, code generated from proto/, then both commands in GOPATH mode
 * (Debian ships sources, not a module cache). Skips work whose output is
 * newer than its inputs; the Go build cache keeps rebuilds short.
 */
export async function buildGoPeers(options: { root: string; outDir: string }): Promise<GoPeers> {
  const { root, outDir } = options;
  if (!existsSync(join(DEBIAN_GOPATH, "src/google.golang.org/grpc"))) {
    throw new Error(
      "grpc-go sources are missing: apt-get install golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev",
    );
  }
  const gopath = join(outDir, "gopath");
  const bin = join(outDir, "bin");
  const env = {
    GO111MODULE: "off",
    GOFLAGS: "",
    GOPROXY: "off",
    GOPATH: `${gopath}:${DEBIAN_GOPATH}`,
  };
  await mkdir(bin, { recursive: true });
  const inputs = [
    join(root, "bench/go"),
    join(root, "proto/atomix/runtime/v1/plugin.proto"),
    join(root, "proto/atomix/plugins/admin/v1/admin.proto"),
  ];
  const server = join(bin, "peer-server");
  const client = join(bin, "peer-client");
  const goVersion = (await run("go", ["version"])).trim();
  if ((await newest(inputs)) < (await oldest([server, client]))) return { server, client, goVersion };

  for (const plugin of [
    "google.golang.org/protobuf/cmd/protoc-gen-go",
    "google.golang.org/grpc/cmd/protoc-gen-go-grpc",
  ]) {
    const out = join(bin, plugin.slice(plugin.lastIndexOf("/") + 1));
    if (!existsSync(out))
      await run("go", ["build", "-o", out, plugin], { env: { ...env, GOPATH: DEBIAN_GOPATH } });
  }
  const pkg = join(gopath, "src/benchpeer");
  await rm(pkg, { recursive: true, force: true });
  await mkdir(join(pkg, "pb"), { recursive: true });
  // The admin API too (the parity suite's calls), its imports of
  // atomix.runtime.v1 messages resolved to the runtime's package.
  const mapping =
    "Matomix/runtime/v1/plugin.proto=benchpeer/pb,Matomix/plugins/admin/v1/admin.proto=benchpeer/adminpb";
  await run(
    "protoc",
    [
      `--plugin=protoc-gen-go=${join(bin, "protoc-gen-go")}`,
      `--plugin=protoc-gen-go-grpc=${join(bin, "protoc-gen-go-grpc")}`,
      "-I",
      join(root, "proto"),
      `--go_out=${join(gopath, "src")}`,
      `--go_opt=${mapping}`,
      `--go-grpc_out=${join(gopath, "src")}`,
      `--go-grpc_opt=${mapping}`,
      "atomix/runtime/v1/plugin.proto",
      "atomix/plugins/admin/v1/admin.proto",
    ],
    { env },
  );
  for (const command of ["server", "client"]) {
    await cp(join(root, "bench/go", command), join(pkg, command), { recursive: true });
  }
  await run("go", ["build", "-trimpath", "-o", server, "./server"], { env, cwd: pkg });
  await run("go", ["build", "-trimpath", "-o", client, "./client"], { env, cwd: pkg });
  return { server, client, goVersion };
}

async function newest(paths: string[]): Promise<number> {
  let latest = 0;
  for (const path of paths) {
    const info = await stat(path);
    if (info.isDirectory()) {
      const children = (await readdir(path)).map((name) => join(path, name));
      latest = Math.max(latest, await newest(children));
    } else {
      latest = Math.max(latest, info.mtimeMs);
    }
  }
  return latest;
}

async function oldest(paths: string[]): Promise<number> {
  let earliest = Number.POSITIVE_INFINITY;
  for (const path of paths) {
    if (!existsSync(path)) return 0;
    earliest = Math.min(earliest, (await stat(path)).mtimeMs);
  }
  return earliest;
}
