import type { BinaryWriter } from "@bufbuild/protobuf/wire";

/**
 * The shape of a service as the generated code describes it (ts-proto's
 * `outputServices=generic-definitions`): names, message codecs and whether
 * each side streams, with no gRPC library attached. The server turns it into
 * a grpc-js service (server/grpc-service.ts); the client speaks it over
 * `node:http2` (packages/client/src/transport/grpc-channel.ts), so the client needs no gRPC library.
 */
export interface MessageCodec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
  decode(input: Uint8Array): T;
}

export interface MethodDefinition<Request = unknown, Response = unknown> {
  readonly name: string;
  readonly requestType: MessageCodec<Request>;
  readonly responseType: MessageCodec<Response>;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

export interface ServiceDefinition {
  readonly name: string;
  readonly fullName: string;
  readonly methods: { readonly [method: string]: MethodDefinition };
}

export type RequestOf<M> = M extends { requestType: MessageCodec<infer T> } ? T : never;
export type ResponseOf<M> = M extends { responseType: MessageCodec<infer T> } ? T : never;

/** The HTTP/2 path a method is called at: `/package.Service/Method`. */
export function methodPath(service: ServiceDefinition, method: MethodDefinition): string {
  return `/${service.fullName}/${method.name}`;
}
