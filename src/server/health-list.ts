import { BinaryWriter } from "@bufbuild/protobuf/wire";
import type { Server, ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";

export type ServingStatus = "SERVING" | "NOT_SERVING";

const STATUS_NUMBER: Record<ServingStatus, number> = { SERVING: 1, NOT_SERVING: 2 };

/**
 * grpc.health.v1.Health/List, which the health.proto reflection serves
 * declares and grpc-health-check does not implement: every service's status
 * as `statuses()` reports it. Call after grpc-health-check's addToServer.
 * Encoded by hand (HealthListResponse is one map of HealthCheckResponse);
 * the request has no fields.
 */
export function addHealthList(server: Server, statuses: () => ReadonlyMap<string, ServingStatus>): void {
  const identity = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const path = "/grpc.health.v1.Health/List";
  // grpc-health-check registers List as UNIMPLEMENTED; this takes its place.
  server.unregister(path);
  server.register(
    path,
    (_call: ServerUnaryCall<Buffer, Uint8Array>, callback: sendUnaryData<Uint8Array>) => {
      const response = new BinaryWriter();
      for (const [service, status] of [...statuses()].sort(([a], [b]) => a.localeCompare(b))) {
        response
          .tag(1, 2)
          .fork()
          .tag(1, 2)
          .string(service)
          .tag(2, 2)
          .fork()
          .tag(1, 0)
          .int32(STATUS_NUMBER[status])
          .join()
          .join();
      }
      callback(null, response.finish());
    },
    identity,
    identity,
    "unary",
  );
}
