import { createServer, type Server } from "node:http";
import type { Duplex } from "node:stream";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { PrewarmProgress } from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import {
  type BuildKey,
  formatBuildKey,
  parseBuildKey,
  parsePluginSpec,
} from "atomix-plugins-core/model/build-key";
import { plural } from "atomix-plugins-core/model/plural";
import { PROVENANCE } from "atomix-plugins-core/model/provenance";
import type { RuntimeReleaseSummary } from "atomix-plugins-core/model/runtime-release";
import { GRPC_ADDRESS_HEADER } from "atomix-plugins-core/protocol/metadata";
import type { Logger } from "pino";
import { splitHostPort } from "../config.js";
import { isReplicaStore } from "../server/cache-metrics.js";
import { listenError } from "../server/listen-error.js";
import type { ServerMetrics } from "../server/metrics.js";
import type { ArtifactStore } from "../store/artifact-store.js";
import type { BuildRecordStore } from "../store/build-record-store.js";
import { listPage, mapOrdered } from "../store/manifest-pages.js";
import { renderBuildLogPage, renderBuildSection, renderRuntimeSection } from "./release-sections.js";

export interface HttpDeps {
  listen: string;
  store: ArtifactStore;
  metrics: ServerMetrics;
  log: Logger;
  /** The gRPC address shown on the catalog page. */
  grpcAddress: string;
  /** False once shutdown began: /healthz answers 503 then. */
  isServing: () => boolean;
  /** True while the store is unreachable but held keys are served: /healthz says so. */
  isDegraded?: (() => boolean) | undefined;
  /** Registered runtime releases, listed on the catalog page. */
  runtimes?: { releases(): Promise<RuntimeReleaseSummary[]> } | undefined;
  prewarmProgress?: ((version: string) => PrewarmProgress | undefined) | undefined;
  /** Build records: the recent builds on the catalog page, and /build-log. */
  records?: BuildRecordStore | undefined;
}

/** Artifacts on one catalog page unless `limit` says otherwise (at most MAX_PAGE_SIZE). */
const CATALOG_PAGE_SIZE = 100;

/** Recent builds shown on the catalog page. */
const RECENT_BUILDS = 50;

export interface RunningHttpServer {
  readonly address: string;
  close(): Promise<void>;
}

/**
 * The HTTP side port: the catalog page at /, Prometheus metrics at /metrics,
 * signed provenance at /provenance, and /healthz for probes that do not
 * speak gRPC.
 */
export async function startHttpServer(deps: HttpDeps): Promise<RunningHttpServer> {
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    const send = (status: number, type: string, body: string) => {
      response.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      response.end(request.method === "HEAD" ? undefined : body);
    };
    if (request.method !== "GET" && request.method !== "HEAD") {
      send(405, "text/plain; charset=utf-8", "method not allowed\n");
      return;
    }
    /**
     * The signed provenance of one artifact, as the Sigstore bundle itself:
     * `/provenance?plugin=name@version&runtime=V&build=B`, for verifiers
     * that speak HTTP rather than gRPC.
     */
    const sendProvenance = async (params: URLSearchParams) => {
      let key: BuildKey;
      try {
        key = parseBuildKey({
          runtime: { version: params.get("runtime") ?? "", buildVersion: params.get("build") ?? "" },
          plugin: parsePluginSpec(params.get("plugin") ?? ""),
        });
      } catch (error) {
        return send(400, "text/plain; charset=utf-8", `${PluginError.from(error).message}\n`);
      }
      const found = await deps.store.getProvenance(key);
      if (!found?.bundle) {
        const why = found ? "it was stored without provenance (no --signing-key)" : "no artifact is stored";
        return send(404, "text/plain; charset=utf-8", `no provenance for ${formatBuildKey(key)}: ${why}\n`);
      }
      response.setHeader("x-plugin-digest", found.manifest.digest);
      return send(200, PROVENANCE.bundleMediaType, found.bundle.toString("utf8"));
    };
    const route = async () => {
      switch (url.pathname) {
        case "/": {
          // The page's code is loaded at its first request, not at start.
          const { renderCatalogPage, matchesQuery } = await import("./catalog-page.js");
          const q = url.searchParams;
          const query = q.get("q") ?? "";
          const plugin = q.get("plugin")?.trim() ?? "";
          const runtime = q.get("runtime")?.trim() ?? "";
          const limitText = q.get("limit") ?? "";
          const limit = limitText ? Number(limitText) : undefined;
          let page: Awaited<ReturnType<typeof listPage>>;
          try {
            if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 1)) {
              throw new PluginError(
                Code.InvalidArgument,
                `limit "${limitText}" is not a whole number of at least 1`,
              );
            }
            page = await listPage(deps.store, {
              pluginName: plugin,
              runtimeVersion: runtime,
              limit: limit ?? CATALOG_PAGE_SIZE,
              pageToken: q.get("page") || undefined,
              where: (m) => matchesQuery(m, query),
            });
          } catch (error) {
            const failure = PluginError.from(error);
            if (failure.code !== Code.InvalidArgument) throw failure;
            return send(400, "text/plain; charset=utf-8", `${failure.message}\n`);
          }
          // Read for the page's rows only, a few at a time as listing reads
          // (a page of 1,000 rows must not open 1,000 files or registry
          // requests at once): a row links its provenance only when there is one.
          const signed = new Set<ArtifactManifest>();
          const reads = mapOrdered(page.manifests, PROVENANCE_READS_AT_ONCE, (m) =>
            deps.store.getProvenance(m.key).then(
              (provenance) => (provenance?.bundle ? m : undefined),
              // Unknown (the store did not answer): the link stays, /provenance tells.
              () => m,
            ),
          );
          for await (const m of reads) if (m) signed.add(m);
          return send(
            200,
            "text/html; charset=utf-8",
            renderCatalogPage({
              manifests: page.manifests,
              signed: (m) => signed.has(m),
              next: page.next,
              continued: Boolean(q.get("page")),
              query,
              plugin,
              runtime,
              limit,
              storeDescription: deps.store.description,
              ...replicaView(deps.store),
              grpcAddress: deps.grpcAddress,
              appendix: [
                deps.runtimes
                  ? renderRuntimeSection(await deps.runtimes.releases(), (v) => deps.prewarmProgress?.(v))
                  : "",
                deps.records ? renderBuildSection(await deps.records.listBuildRecords(RECENT_BUILDS)) : "",
              ].join("\n"),
            }),
          );
        }
        case "/provenance":
          return sendProvenance(url.searchParams);
        case "/build-log": {
          const q = url.searchParams;
          let key: ReturnType<typeof parseBuildKey>;
          try {
            key = parseBuildKey({
              runtime: { version: q.get("runtime") ?? "", buildVersion: q.get("build") ?? "" },
              plugin: { name: q.get("plugin") ?? "", version: q.get("version") ?? "" },
            });
          } catch (error) {
            return send(400, "text/plain; charset=utf-8", `${(error as Error).message}\n`);
          }
          const record = await deps.records?.getBuildRecord(key);
          return record
            ? send(200, "text/html; charset=utf-8", renderBuildLogPage(record))
            : send(404, "text/plain; charset=utf-8", "no build of this key is recorded\n");
        }
        case "/metrics":
          return send(200, deps.metrics.registry.contentType, await deps.metrics.registry.metrics());
        case "/healthz":
          if (!deps.isServing()) return send(503, "text/plain; charset=utf-8", "not serving\n");
          return send(
            200,
            "text/plain; charset=utf-8",
            deps.isDegraded?.()
              ? "serving, store degraded: held keys are served, builds and pushes are refused\n"
              : "serving\n",
          );
        default:
          return send(404, "text/plain; charset=utf-8", "not found\n");
      }
    };
    route().catch((error: unknown) => {
      deps.log.error({ err: error, path: url.pathname }, "HTTP request failed");
      send(503, "text/plain; charset=utf-8", `unavailable: ${(error as Error).message}\n`);
    });
  });
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) =>
    answerClientError(error, socket, deps),
  );
  const { host, port } = splitHostPort(deps.listen);
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(listenError(deps.listen, "HTTP", error)));
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  const address =
    typeof bound === "object" && bound
      ? `${host.includes(":") ? `[${host}]` : host}:${bound.port}`
      : deps.listen;
  deps.log.info({ address }, "http serving");
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** What the catalog page says of a replica's or tier's local copies; nothing for a store on local disk. */
function replicaView(store: HttpDeps["store"]) {
  if (!isReplicaStore(store)) return {};
  const { state, counters } = store.cache;
  const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  const summary = [
    `content cache: ${plural(state.blobs, "artifact")} held here, ${mib(state.bytes)}`,
    `${counters.upstreamFetches} fetched from upstream (${mib(counters.upstreamBytes)})`,
    `${counters.hits} ${counters.hits === 1 ? "pull" : "pulls"} served from disk`,
    ...(store.degraded ? ["upstream unreachable: held artifacts served as last seen"] : []),
  ].join(" · ");
  return {
    heldHere: (manifest: { digest: string }) => store.cache.holds(manifest.digest),
    cacheSummary: summary,
  };
}

/**
 * What Node.js answers a request it cannot parse, and, to a gRPC client
 * pointed at this port by mistake (its HTTP/2 preface is no HTTP/1.1
 * request), where the gRPC port is: a header the client reads, and a line
 * for whoever looks (curl). Node.js answers nothing of its own once
 * 'clientError' has a listener, so the other answers are its own, kept.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex, deps: HttpDeps): void {
  const fresh = socket.writable && (socket as Duplex & { bytesWritten?: number }).bytesWritten === 0;
  if (fresh && error.code === "HPE_PAUSED_H2_UPGRADE") {
    const body = `this is the HTTP port of atomix-plugins (catalog page, /metrics, /healthz); gRPC is at ${deps.grpcAddress}\n`;
    socket.end(
      `HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n${GRPC_ADDRESS_HEADER}: ${deps.grpcAddress}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    return;
  }
  if (fresh && error.code !== "ECONNRESET") {
    const status =
      error.code === "HPE_HEADER_OVERFLOW"
        ? "431 Request Header Fields Too Large"
        : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? "408 Request Timeout"
          : "400 Bad Request";
    socket.write(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
  }
  socket.destroy();
}

/** Provenance reads a catalog page makes at once, as listing reads index files (16) a few at a time. */
const PROVENANCE_READS_AT_ONCE = 16;
