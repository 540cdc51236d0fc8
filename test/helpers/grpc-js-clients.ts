import {
  type CallOptions,
  type ChannelCredentials,
  type Client,
  type ClientOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ClientWritableStream,
  credentials,
  InterceptingCall,
  type Metadata,
  makeGenericClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import {
  PluginAdminDefinition,
  type PushPluginRequest,
  type PushPluginResponse,
  type RegisterRuntimeRequest,
  type RegisterRuntimeResponse,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import {
  type CompilePluginRequest,
  type CompilePluginResponse,
  PluginCompilerDefinition,
  PluginRegistryDefinition,
  type PullPluginRequest,
  type PullPluginResponse,
} from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import type { ServiceDefinition } from "atomix-plugins-core/protocol/service-definition";
import { grpcService } from "../../src/server/grpc-service.js";

/**
 * grpc-js clients of our services, for tests that want a gRPC client other
 * than our own (and, through it, what any grpc-js runtime would see). Only
 * the methods the tests call are typed.
 */
export interface PluginRegistryClient extends Client {
  pullPlugin(
    request: PullPluginRequest,
    metadata?: Metadata,
    options?: Partial<CallOptions>,
  ): ClientReadableStream<PullPluginResponse>;
}

export interface PluginCompilerClient extends Client {
  compilePlugin(
    request: CompilePluginRequest,
    callback: (error: ServiceError | null, response: CompilePluginResponse) => void,
  ): ClientUnaryCall;
}

export interface PluginAdminClient extends Client {
  pushPlugin(
    metadata: Metadata,
    callback: (error: ServiceError | null, response: PushPluginResponse) => void,
  ): ClientWritableStream<PushPluginRequest>;
  registerRuntime(
    metadata: Metadata,
    callback: (error: ServiceError | null, response: RegisterRuntimeResponse) => void,
  ): ClientWritableStream<RegisterRuntimeRequest>;
}

type ClientConstructor<T> = new (
  address: string,
  credentials: ChannelCredentials,
  options?: Partial<ClientOptions>,
) => T;

function clientOf<T>(service: ServiceDefinition): ClientConstructor<T> {
  return makeGenericClientConstructor(grpcService(service), service.name) as unknown as ClientConstructor<T>;
}

export const PluginRegistryClient = clientOf<PluginRegistryClient>(PluginRegistryDefinition);
export const PluginCompilerClient = clientOf<PluginCompilerClient>(PluginCompilerDefinition);
export const PluginAdminClient = clientOf<PluginAdminClient>(PluginAdminDefinition);

export interface GrpcClients {
  registry: PluginRegistryClient;
  compiler: PluginCompilerClient;
  admin: PluginAdminClient;
  close(): void;
}

/** The three clients over one plaintext channel, with the admin token on every call. */
export function createGrpcClients(options: {
  address: string;
  token?: string;
  channelOptions?: Partial<ClientOptions>;
}): GrpcClients {
  const channelOptions: Partial<ClientOptions> = { ...options.channelOptions };
  const { token } = options;
  if (token) {
    channelOptions.interceptors = [
      (callOptions, nextCall) =>
        new InterceptingCall(nextCall(callOptions), {
          start(metadata, listener, next) {
            metadata.set("authorization", `Bearer ${token}`);
            next(metadata, listener);
          },
        }),
    ];
  }
  const insecure = credentials.createInsecure();
  const registry = new PluginRegistryClient(options.address, insecure, channelOptions);
  const channelOverride = registry.getChannel();
  const compiler = new PluginCompilerClient(options.address, insecure, {
    ...channelOptions,
    channelOverride,
  });
  const admin = new PluginAdminClient(options.address, insecure, { ...channelOptions, channelOverride });
  return { registry, compiler, admin, close: () => registry.close() };
}

/** A grpc-js call's error as a PluginError carrying the server's code and message. */
export function fromServiceError(error: unknown): PluginError {
  const serviceError = error as Partial<ServiceError>;
  if (typeof serviceError.code === "number" && typeof serviceError.details === "string") {
    return new PluginError(serviceError.code as number as Code, serviceError.details, { cause: error });
  }
  return PluginError.from(error);
}

export { Code };
