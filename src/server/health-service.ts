import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { Server, ServerUnaryCall, ServerWritableStream, sendUnaryData } from "@grpc/grpc-js";
import { Code, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import type { Logger } from "pino";
import { toServiceError } from "./status.js";

/** What this server reports for a service it knows. */
export type ServingStatus = "SERVING" | "NOT_SERVING";

export const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";
export const HEALTH_WATCH_PATH = `/${HEALTH_SERVICE_NAME}/Watch`;

/** HealthCheckResponse.ServingStatus (proto-vendor/grpc/health/v1/health.proto). */
const STATUS_NUMBER = { SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;

/** A HealthCheckResponse for each status: one field, one varint. */
const RESPONSE = {
  SERVING: Uint8Array.of(0x08, STATUS_NUMBER.SERVING),
  NOT_SERVING: Uint8Array.of(0x08, STATUS_NUMBER.NOT_SERVING),
  SERVICE_UNKNOWN: Uint8Array.of(0x08, STATUS_NUMBER.SERVICE_UNKNOWN),
} as const;

export interface HealthService {
  /**
   * Every service's status at once, or, given `only`, those services'
   * statuses (the others, the server's own "" included, as they are); each
   * open Watch hears of a change of its service.
   */
  setStatus(status: ServingStatus, only?: readonly string[]): void;
}

/**
 * The standard grpc.health.v1.Health service (Check, Watch, List) for
 * `services` and the server as a whole (""), all SERVING at first.
 * Written here rather than taken from grpc-health-check, whose proto loader
 * (protobufjs) held 4-6 MiB of a fresh server's memory for three one-field
 * messages, encoded here by hand. Reflection serves the same protocol from
 * the vendored health.proto.
 *
 * A service this server does not know: Check answers NOT_FOUND, Watch sends
 * SERVICE_UNKNOWN and stays open, as the protocol says.
 */
export function addHealthService(server: Server, services: readonly string[], log: Logger): HealthService {
  const known = new Set(["", ...services]);
  const statuses = new Map<string, ServingStatus>([...known].map((service) => [service, "SERVING"]));
  const watchers = new Map<(status: ServingStatus) => void, string>();
  const statusOf = (service: string) => statuses.get(service) ?? "SERVICE_UNKNOWN";
  const bytes = (data: Uint8Array) => Buffer.from(data.buffer, data.byteOffset, data.byteLength);

  const check = (call: ServerUnaryCall<Buffer, Uint8Array>, callback: sendUnaryData<Uint8Array>) => {
    try {
      const service = serviceOf(call.request);
      if (!known.has(service)) {
        throw new PluginError(Code.NotFound, `health status unknown for service ${quoted(service)}`);
      }
      callback(null, RESPONSE[statusOf(service)]);
    } catch (error) {
      callback(toServiceError(error, log));
    }
  };

  const watch = (call: ServerWritableStream<Buffer, Uint8Array>) => {
    let service: string;
    try {
      service = serviceOf(call.request);
    } catch (error) {
      call.emit("error", toServiceError(error, log));
      return;
    }
    if (!known.has(service)) {
      // The set of services is fixed: this one never becomes known, but the
      // protocol keeps the call open all the same.
      call.write(RESPONSE.SERVICE_UNKNOWN);
      return;
    }
    const tell = (now: ServingStatus) => call.write(RESPONSE[now]);
    watchers.set(tell, service);
    const forget = () => watchers.delete(tell);
    call.once("cancelled", forget);
    call.once("close", forget);
    call.once("finish", forget);
    tell(statusOf(service) as ServingStatus);
  };

  const list = (_call: ServerUnaryCall<Buffer, Uint8Array>, callback: sendUnaryData<Uint8Array>) => {
    // HealthListResponse: map<string, HealthCheckResponse> statuses = 1.
    const response = new BinaryWriter();
    for (const service of [...known].sort()) {
      response
        .tag(1, WireType.LengthDelimited)
        .fork()
        .tag(1, WireType.LengthDelimited)
        .string(service)
        .tag(2, WireType.LengthDelimited)
        .bytes(RESPONSE[statusOf(service)])
        .join();
    }
    callback(null, response.finish());
  };

  const path = (method: string) => `/${HEALTH_SERVICE_NAME}/${method}`;
  server.register(path("Check"), check, bytes, bytes, "unary");
  server.register(path("Watch"), watch, bytes, bytes, "serverStream");
  server.register(path("List"), list, bytes, bytes, "unary");

  return {
    setStatus(next, only) {
      const changed = new Set<string>();
      for (const service of only ?? known) {
        if (!known.has(service) || statuses.get(service) === next) continue;
        statuses.set(service, next);
        changed.add(service);
      }
      for (const [tell, service] of [...watchers]) if (changed.has(service)) tell(next);
    },
  };
}

/** HealthCheckRequest.service (field 1); unknown fields are skipped, as protobuf says. */
function serviceOf(request: Uint8Array): string {
  let service = "";
  try {
    const reader = new BinaryReader(request);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType === WireType.LengthDelimited) service = reader.string(true);
      else reader.skip(wireType, field);
    }
  } catch (error) {
    throw new PluginError(Code.InvalidArgument, "the request is not a grpc.health.v1.HealthCheckRequest", {
      cause: error,
    });
  }
  return service;
}
