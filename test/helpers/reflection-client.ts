import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { create, createFileRegistry, type FileRegistry, fromBinary } from "@bufbuild/protobuf";
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { type ClientDuplexStream, credentials, loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

interface ReflectionResponse {
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  listServicesResponse?: { service: { name: string }[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

/** One file as the server sent it: its bytes, and those bytes decoded. */
export interface ServedFile {
  bytes: Uint8Array;
  proto: FileDescriptorProto;
}

/**
 * A reflection client that asks what grpcurl asks (list services, the file
 * containing a symbol, a file by name), over one ServerReflectionInfo
 * stream, with the reflection protocol's own .proto from @grpc/reflection:
 * nothing of the server's code decodes the answers.
 */
export class ReflectionClient {
  private readonly client: { close(): void };
  private readonly call: ClientDuplexStream<unknown, ReflectionResponse>;
  private readonly waiting: {
    resolve: (response: ReflectionResponse) => void;
    reject: (error: Error) => void;
  }[] = [];

  constructor(address: string, version: "v1" | "v1alpha") {
    const require = createRequire(import.meta.url);
    const root = join(dirname(require.resolve("@grpc/reflection/package.json")), "build/proto");
    const definition = loadSync(join(root, `grpc/reflection/${version}/reflection.proto`), {
      includeDirs: [root],
    });
    // biome-ignore lint/suspicious/noExplicitAny: the package object is untyped by construction
    const pkg = loadPackageDefinition(definition) as any;
    this.client = new pkg.grpc.reflection[version].ServerReflection(address, credentials.createInsecure());
    this.call = (
      this.client as unknown as { ServerReflectionInfo(): ClientDuplexStream<unknown, ReflectionResponse> }
    ).ServerReflectionInfo();
    this.call.on("data", (response: ReflectionResponse) => this.waiting.shift()?.resolve(response));
    this.call.on("error", (error: Error) => {
      for (const waiter of this.waiting.splice(0)) waiter.reject(error);
    });
  }

  private ask(request: object): Promise<ReflectionResponse> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.call.write(request);
    });
  }

  async listServices(): Promise<string[]> {
    const response = await this.ask({ listServices: "*" });
    return (response.listServicesResponse?.service ?? []).map((s) => s.name).sort();
  }

  async fileContainingSymbol(symbol: string): Promise<ServedFile[]> {
    return files(await this.ask({ fileContainingSymbol: symbol }), symbol);
  }

  async fileByFilename(name: string): Promise<ServedFile[]> {
    return files(await this.ask({ fileByFilename: name }), name);
  }

  /** Sends a request and returns the raw answer (for error responses). */
  raw(request: object): Promise<ReflectionResponse> {
    return this.ask(request);
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}

function files(response: ReflectionResponse, asked: string): ServedFile[] {
  if (response.errorResponse) {
    throw new Error(`reflection refused ${asked}: ${response.errorResponse.errorMessage}`);
  }
  return (response.fileDescriptorResponse?.fileDescriptorProto ?? []).map((bytes) => ({
    bytes: new Uint8Array(bytes),
    proto: fromBinary(FileDescriptorProtoSchema, bytes),
  }));
}

/**
 * Resolves `services` as grpcurl does: the file containing each service,
 * then every import by file name until nothing is missing. Returns every
 * file received, by name.
 */
export async function resolveByReflection(
  client: ReflectionClient,
  services: readonly string[],
): Promise<Map<string, ServedFile>> {
  const known = new Map<string, ServedFile>();
  const learn = (served: ServedFile[]) => {
    for (const file of served) known.set(file.proto.name, file);
  };
  for (const service of services) learn(await client.fileContainingSymbol(service));
  for (;;) {
    const missing = [...known.values()]
      .flatMap((file) => file.proto.dependency)
      .filter((name) => !known.has(name));
    if (missing.length === 0) return known;
    for (const name of new Set(missing)) learn(await client.fileByFilename(name));
  }
}

/**
 * A registry of the files reflection sent, imports first (the order a
 * registry needs). Throws if an import is missing: the set is not closed.
 */
export function registryOf(files: ReadonlyMap<string, ServedFile>): FileRegistry {
  const ordered: FileDescriptorProto[] = [];
  const placed = new Set<string>();
  const place = (name: string) => {
    const file = files.get(name);
    if (placed.has(name) || !file) return;
    placed.add(name);
    for (const dependency of file.proto.dependency) place(dependency);
    ordered.push(file.proto);
  };
  for (const name of files.keys()) place(name);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
}
