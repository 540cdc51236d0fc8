import { type AddressInfo, connect, createServer, type Socket } from "node:net";

export interface TcpRelay {
  /** host:port to dial instead of the target. */
  readonly address: string;
  /** Connections accepted so far: each is a handshake the client paid. */
  accepted(): number;
  close(): Promise<void>;
}

/**
 * A TCP relay on 127.0.0.1 to `target` (a loopback host:port). With
 * `sourceAddress` its connections to the target come from that address
 * (any 127.x.y.z is this host on Linux): a second client, as the server
 * sees it, on the same machine. With `cutFirstAfter`, the first connection
 * is dropped once it has carried that many bytes from the target: a
 * network that breaks a stream halfway.
 */
export async function startTcpRelay(
  target: string,
  options: { sourceAddress?: string; cutFirstAfter?: number } = {},
): Promise<TcpRelay> {
  let accepted = 0;
  const sockets = new Set<Socket>();
  const relay = createServer((downstream) => {
    accepted++;
    const upstream = connect({
      port: Number(target.split(":").at(-1)),
      host: "127.0.0.1",
      ...(options.sourceAddress ? { localAddress: options.sourceAddress } : {}),
    });
    for (const socket of [downstream, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    }
    const { cutFirstAfter } = options;
    if (cutFirstAfter !== undefined && accepted === 1) {
      let carried = 0;
      upstream.on("data", (chunk: Buffer) => {
        carried += chunk.byteLength;
        if (carried > cutFirstAfter) {
          upstream.destroy();
          downstream.destroy();
        }
      });
    }
    downstream.pipe(upstream).pipe(downstream);
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(relay.address() as AddressInfo).port}`,
    accepted: () => accepted,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => relay.close(() => resolve()));
    },
  };
}
