import { createServer, type Server } from "node:http";
import type { Logger } from "pino";
import { splitHostPort } from "../config.js";
import { listenError } from "../server/listen-error.js";
import type { ServerMetrics } from "../server/metrics.js";
import type { ArtifactStore } from "../store/artifact-store.js";

export interface HttpDeps {
  listen: string;
  store: ArtifactStore;
  metrics: ServerMetrics;
  log: Logger;
  /** The gRPC address shown on the catalog page. */
  grpcAddress: string;
  /** False once shutdown began: /healthz answers 503 then. */
  isServing: () => boolean;
}

export interface RunningHttpServer {
  readonly address: string;
  close(): Promise<void>;
}

/**
 * The HTTP side port: the catalog page at /, Prometheus metrics at /metrics,
 * and /healthz for probes that do not speak gRPC.
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
    const route = async () => {
      switch (url.pathname) {
        case "/": {
          // The page's code is loaded at its first request, not at start.
          const { renderCatalogPage } = await import("./catalog-page.js");
          return send(
            200,
            "text/html; charset=utf-8",
            renderCatalogPage({
              manifests: await deps.store.list(),
              query: url.searchParams.get("q") ?? "",
              storeDescription: deps.store.description,
              grpcAddress: deps.grpcAddress,
            }),
          );
        }
        case "/metrics":
          return send(200, deps.metrics.registry.contentType, await deps.metrics.registry.metrics());
        case "/healthz":
          return deps.isServing()
            ? send(200, "text/plain; charset=utf-8", "serving\n")
            : send(503, "text/plain; charset=utf-8", "shutting down\n");
        default:
          return send(404, "text/plain; charset=utf-8", "not found\n");
      }
    };
    route().catch((error: unknown) => {
      deps.log.error({ err: error, path: url.pathname }, "HTTP request failed");
      send(503, "text/plain; charset=utf-8", `unavailable: ${(error as Error).message}\n`);
    });
  });
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
