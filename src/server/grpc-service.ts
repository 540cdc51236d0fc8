import type {
  MethodDefinition as GrpcMethodDefinition,
  handleBidiStreamingCall,
  handleClientStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
} from "@grpc/grpc-js";
import {
  type MethodDefinition,
  methodPath,
  type RequestOf,
  type ResponseOf,
  type ServiceDefinition,
} from "atomix-plugins-core/protocol/service-definition";

/**
 * A generated service definition (protocol/service-definition.ts) as
 * grpc-js serves it, and the handler types it calls: what ts-proto's
 * `outputServices=grpc-js` would generate, derived instead, so that the
 * generated code carries no gRPC library and the client package needs none.
 */
export type GrpcServiceOf<Service extends ServiceDefinition> = {
  [Name in keyof Service["methods"]]: GrpcMethodDefinition<
    RequestOf<Service["methods"][Name]>,
    ResponseOf<Service["methods"][Name]>
  >;
};

/** The handlers of a service, one per method, typed as grpc-js calls them. */
export type HandlersOf<Service extends ServiceDefinition> = {
  [Name in keyof Service["methods"]]: HandlerOf<Service["methods"][Name]>;
};

type HandlerOf<Method> = Method extends { requestStream: true; responseStream: true }
  ? handleBidiStreamingCall<RequestOf<Method>, ResponseOf<Method>>
  : Method extends { requestStream: true }
    ? handleClientStreamingCall<RequestOf<Method>, ResponseOf<Method>>
    : Method extends { responseStream: true }
      ? handleServerStreamingCall<RequestOf<Method>, ResponseOf<Method>>
      : handleUnaryCall<RequestOf<Method>, ResponseOf<Method>>;

export function grpcService<Service extends ServiceDefinition>(service: Service): GrpcServiceOf<Service> {
  const methods = Object.entries(service.methods).map(([name, method]) => [
    name,
    grpcMethod(service, method as MethodDefinition),
  ]);
  return Object.fromEntries(methods) as GrpcServiceOf<Service>;
}

function grpcMethod(
  service: ServiceDefinition,
  method: MethodDefinition,
): GrpcMethodDefinition<unknown, unknown> {
  const { requestType, responseType } = method;
  return {
    path: methodPath(service, method),
    originalName: method.name,
    requestStream: method.requestStream,
    responseStream: method.responseStream,
    requestSerialize: (value) => Buffer.from(requestType.encode(value).finish()),
    requestDeserialize: (bytes) => requestType.decode(bytes),
    responseSerialize: (value) => Buffer.from(responseType.encode(value).finish()),
    responseDeserialize: (bytes) => responseType.decode(bytes),
  };
}
