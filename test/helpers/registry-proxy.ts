import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** What the proxy does to the next blob GETs, in order; then it forwards as they are. */
export type BlobFault =
  /** Sends this many bytes of the body, then drops the connection. */
  | { cutAfter: number }
  /** Sends this many bytes, then nothing more until the connection is closed (or `until` settles: the rest). */
  | { stallAfter: number; until?: Promise<void> }
  /** Flips one byte of the body. */
  | { corrupt: true }
  /** Forwards the read without its Range header: the registry answers 200 with the whole blob. */
  | { ignoreRange: true }
  /** Forwards a ranged read as one from `shiftRange` bytes earlier: a 206 whose Content-Range is not the one asked. */
  | { shiftRange: number }
  /** Answers itself with these bytes from the offset asked (206 to a ranged read): a blob that changed. */
  | { body: (offset: number) => Buffer };

export interface RegistryProxy {
  /** host:port of the proxy. */
  readonly address: string;
  storeUrl(repository: string): string;
  /** Requests seen, as `METHOD kind` (kind: blobs, manifests, tags, uploads, base). */
  readonly seen: { method: string; kind: string; range: string | undefined }[];
  count(method: string, kind: string): number;
  /** Faults for the next blob GETs. */
  faults: BlobFault[];
  /** While true, every request gets its connection dropped, as from a registry that is gone. */
  down: boolean;
  close(): Promise<void>;
}

function kindOf(url: string): string {
  if (/\/blobs\/uploads\//.test(url)) return "uploads";
  if (/\/blobs\//.test(url)) return "blobs";
  if (/\/manifests\//.test(url)) return "manifests";
  if (/\/tags\/list/.test(url)) return "tags";
  if (/\/referrers\//.test(url)) return "referrers";
  return "base";
}

/**
 * An HTTP proxy in front of a real registry that counts what replicas ask
 * it, and fails blob reads the way a network or a registry does: a cut
 * connection, a stall, a flipped byte, or being gone altogether.
 */
export async function startRegistryProxy(registryAddress: string): Promise<RegistryProxy> {
  const [host, port] = registryAddress.split(":") as [string, string];
  const seen: RegistryProxy["seen"] = [];
  const sockets = new Set<import("node:net").Socket>();
  const proxy: RegistryProxy = {
    address: "",
    storeUrl: (repository) => `oci://${proxy.address}/${repository}`,
    seen,
    count: (method, kind) => seen.filter((s) => s.method === method && s.kind === kind).length,
    faults: [],
    down: false,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const server: Server = createServer((incoming: IncomingMessage, outgoing) => {
    if (proxy.down) {
      incoming.socket.destroy();
      return;
    }
    const url = incoming.url ?? "";
    const kind = kindOf(url);
    const range = incoming.headers.range;
    seen.push({ method: incoming.method ?? "", kind, range });
    const fault = incoming.method === "GET" && kind === "blobs" ? proxy.faults.shift() : undefined;
    const offset = Number(/^bytes=(\d+)-$/.exec(range ?? "")?.[1] ?? 0);
    if (fault && "body" in fault) {
      const body = fault.body(offset);
      outgoing.writeHead(range ? 206 : 200, {
        "content-length": body.byteLength,
        ...(range ? { "content-range": `bytes ${offset}-${offset + body.byteLength - 1}/*` } : {}),
      });
      outgoing.end(body);
      return;
    }
    const headers = { ...incoming.headers };
    if (fault && "ignoreRange" in fault) delete headers.range;
    if (fault && "shiftRange" in fault && range)
      headers.range = `bytes=${Math.max(0, offset - fault.shiftRange)}-`;
    const forwarded = httpRequest(
      { host, port: Number(port), method: incoming.method, path: url, headers },
      (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        if (!fault || "ignoreRange" in fault || "shiftRange" in fault) {
          answer.pipe(outgoing);
          return;
        }
        let sent = 0;
        const onData = (chunk: Buffer) => {
          if ("corrupt" in fault) {
            const copy = Buffer.from(chunk);
            if (sent === 0 && copy.byteLength > 0) copy[0] = (copy[0] as number) ^ 0xff;
            sent += copy.byteLength;
            outgoing.write(copy);
            return;
          }
          const limit = "cutAfter" in fault ? fault.cutAfter : "stallAfter" in fault ? fault.stallAfter : 0;
          const room = limit - sent;
          if (room > 0) outgoing.write(chunk.subarray(0, room));
          sent += chunk.byteLength;
          if (sent >= limit) {
            answer.pause();
            if ("cutAfter" in fault) setTimeout(() => outgoing.socket?.destroy(), 20);
            if ("until" in fault && fault.until) {
              const held = chunk.subarray(Math.max(0, room));
              fault.until.then(() => {
                if (held.byteLength > 0) outgoing.write(held);
                answer.off("data", onData);
                answer.pipe(outgoing);
                answer.resume();
              });
              fault.until = undefined;
            }
          }
        };
        answer.on("data", onData);
        answer.on("end", () => {
          if ("corrupt" in fault) outgoing.end();
        });
      },
    );
    forwarded.on("error", () => outgoing.socket?.destroy());
    incoming.pipe(forwarded);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  (proxy as { address: string }).address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
