import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import type { DescriptorProto } from "@bufbuild/protobuf/wkt";
import type { Server, ServerDuplexStream, ServiceDefinition } from "@grpc/grpc-js";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { Logger } from "pino";
import { toServiceError } from "./status.js";

/** The reflection services this module serves; both speak the same messages. */
export const REFLECTION_SERVICE_NAMES = [
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

/** One .proto file as protoc compiled it: its serialized FileDescriptorProto, untouched. */
interface ProtoFile {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly dependencies: readonly string[];
}

/**
 * What reflection knows: every file by name, the file declaring each fully
 * qualified symbol (message, field, oneof, enum, enum value, service,
 * method), and the services to list.
 */
export interface ReflectionIndex {
  readonly files: ReadonlyMap<string, ProtoFile>;
  readonly symbols: ReadonlyMap<string, ProtoFile>;
  readonly messages: ReadonlySet<string>;
  readonly services: readonly string[];
}

/**
 * Indexes the descriptor set generated from the .proto files
 * (src/gen/descriptor-set.ts). Each file is served as the bytes protoc wrote,
 * so names, paths, snake_case fields, json names and imports are the
 * proto's. Throws if a service to list is not declared in the set: a service
 * added to the server without its .proto in scripts/generate.sh.
 *
 * The descriptor set and @bufbuild/protobuf's descriptor decoder are loaded
 * here, at the first reflection call, not at start: a server that is never
 * asked does not hold them (README, Performance: a fresh server's memory).
 */
export async function createReflectionIndex(services: readonly string[]): Promise<ReflectionIndex> {
  const [{ fromBinary }, { FileDescriptorProtoSchema }, { FILE_DESCRIPTOR_SET_BASE64 }] = await Promise.all([
    import("@bufbuild/protobuf"),
    import("@bufbuild/protobuf/wkt"),
    import("atomix-plugins-core/gen/descriptor-set"),
  ]);
  const files = new Map<string, ProtoFile>();
  const symbols = new Map<string, ProtoFile>();
  const messages = new Set<string>();
  const set = new BinaryReader(Buffer.from(FILE_DESCRIPTOR_SET_BASE64, "base64"));
  while (set.pos < set.len) {
    const [field, wireType] = set.tag();
    if (field !== 1) {
      set.skip(wireType);
      continue;
    }
    const bytes = set.bytes();
    const proto = fromBinary(FileDescriptorProtoSchema, bytes);
    const file: ProtoFile = { name: proto.name, bytes, dependencies: proto.dependency };
    files.set(file.name, file);
    const scope = proto.package === "" ? "" : `${proto.package}.`;
    const add = (name: string) => symbols.set(name, file);
    const addMessage = (message: DescriptorProto, prefix: string) => {
      const name = `${prefix}${message.name}`;
      add(name);
      messages.add(name);
      for (const field of message.field) add(`${name}.${field.name}`);
      for (const oneof of message.oneofDecl) add(`${name}.${oneof.name}`);
      for (const extension of message.extension) add(`${name}.${extension.name}`);
      for (const nested of message.nestedType) addMessage(nested, `${name}.`);
      for (const enumType of message.enumType) {
        add(`${name}.${enumType.name}`);
        // Enum values are siblings of their enum, as in C++ scoping.
        for (const value of enumType.value) add(`${name}.${value.name}`);
      }
    };
    for (const message of proto.messageType) addMessage(message, scope);
    for (const enumType of proto.enumType) {
      add(`${scope}${enumType.name}`);
      for (const value of enumType.value) add(`${scope}${value.name}`);
    }
    for (const extension of proto.extension) add(`${scope}${extension.name}`);
    for (const service of proto.service) {
      add(`${scope}${service.name}`);
      for (const method of service.method) add(`${scope}${service.name}.${method.name}`);
    }
  }
  for (const service of services) {
    if (!symbols.has(service)) throw new Error(`reflection: no .proto file declares service ${service}`);
  }
  return { files, symbols, messages, services: [...services].sort() };
}

/**
 * Serves grpc.reflection.v1 and v1alpha (ServerReflectionInfo) for
 * `services`, as grpc-go does: a file is answered with the files it imports,
 * directly or not, that this stream has not been sent yet; lookups that fail
 * answer an error_response and the stream goes on. The index is built at the
 * first call (createReflectionIndex).
 */
export function addReflectionService(server: Server, services: readonly string[], log: Logger): void {
  let index: Promise<ReflectionIndex> | undefined;
  const loadIndex = () => {
    index ??= createReflectionIndex(services);
    return index;
  };
  for (const service of REFLECTION_SERVICE_NAMES) {
    const definition: ServiceDefinition<{ serverReflectionInfo: Uint8Array }> = {
      serverReflectionInfo: {
        path: `/${service}/ServerReflectionInfo`,
        requestStream: true,
        responseStream: true,
        requestSerialize: (bytes: Uint8Array) => Buffer.from(bytes),
        requestDeserialize: (bytes: Buffer) => bytes,
        responseSerialize: (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length),
        responseDeserialize: (bytes: Buffer) => bytes,
        originalName: "ServerReflectionInfo",
      },
    };
    server.addService(definition as unknown as ServiceDefinition, {
      serverReflectionInfo: (call: ServerDuplexStream<Uint8Array, Uint8Array>) => {
        const sent = new Set<string>();
        // Answers go out in the order of the requests, each once the index is there.
        let answered: Promise<void> = Promise.resolve();
        call.on("data", (request: Uint8Array) => {
          answered = answered
            .then(loadIndex)
            .then((loaded) => {
              call.write(answer(loaded, request, sent));
            })
            .catch((error: unknown) => {
              call.emit("error", toServiceError(error, log));
            });
        });
        call.on("end", () => {
          answered.then(() => call.end());
        });
      },
    });
  }
}

type Lookup =
  | {
      kind: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices";
      value: string;
    }
  | { kind: "fileContainingExtension"; value: string; number: number };

/** Answers one serialized ServerReflectionRequest with a serialized ServerReflectionResponse. */
function answer(index: ReflectionIndex, request: Uint8Array, sent: Set<string>): Uint8Array {
  const { host, lookup } = decodeRequest(request);
  const response = new BinaryWriter();
  if (host !== "") response.tag(1, 2).string(host);
  response.tag(2, 2).bytes(request);
  try {
    switch (lookup?.kind) {
      case "listServices": {
        const list = response.tag(6, 2).fork();
        for (const name of index.services) list.tag(1, 2).fork().tag(1, 2).string(name).join();
        list.join();
        break;
      }
      case "fileByFilename":
      case "fileContainingSymbol": {
        const file =
          lookup.kind === "fileByFilename" ? index.files.get(lookup.value) : index.symbols.get(lookup.value);
        if (!file) {
          const what = lookup.kind === "fileByFilename" ? "file" : "symbol";
          throw new PluginError(Code.NotFound, `no ${what} ${JSON.stringify(lookup.value)} is served`);
        }
        const files = response.tag(4, 2).fork();
        for (const bytes of withDependencies(index, file, sent)) files.tag(1, 2).bytes(bytes);
        files.join();
        break;
      }
      case "fileContainingExtension":
        throw new PluginError(
          Code.NotFound,
          `no extension ${lookup.number} of ${JSON.stringify(lookup.value)} is served`,
        );
      case "allExtensionNumbersOfType":
        if (!index.messages.has(lookup.value)) {
          throw new PluginError(Code.NotFound, `no message type ${JSON.stringify(lookup.value)} is served`);
        }
        // No served message declares extensions.
        response.tag(5, 2).fork().tag(1, 2).string(lookup.value).join();
        break;
      default:
        throw new PluginError(Code.InvalidArgument, "the reflection request names no lookup");
    }
  } catch (error) {
    const failure = PluginError.from(error);
    const retry = new BinaryWriter();
    if (host !== "") retry.tag(1, 2).string(host);
    retry.tag(2, 2).bytes(request);
    retry.tag(7, 2).fork().tag(1, 0).int32(failure.code).tag(2, 2).string(failure.message).join();
    return retry.finish();
  }
  return response.finish();
}

/** `file`, then every file it imports transitively that this stream was not sent yet. */
function withDependencies(index: ReflectionIndex, file: ProtoFile, sent: Set<string>): Uint8Array[] {
  const out = [file.bytes];
  sent.add(file.name);
  const pending = [...file.dependencies];
  for (let name = pending.shift(); name !== undefined; name = pending.shift()) {
    if (sent.has(name)) continue;
    const dependency = index.files.get(name);
    if (!dependency) continue; // protoc --include_imports puts every import in the set
    sent.add(name);
    out.push(dependency.bytes);
    pending.push(...dependency.dependencies);
  }
  return out;
}

function decodeRequest(bytes: Uint8Array): { host: string; lookup: Lookup | undefined } {
  const reader = new BinaryReader(bytes);
  let host = "";
  let lookup: Lookup | undefined;
  try {
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      switch (field) {
        case 1:
          host = reader.string();
          break;
        case 3:
          lookup = { kind: "fileByFilename", value: reader.string() };
          break;
        case 4:
          lookup = { kind: "fileContainingSymbol", value: reader.string() };
          break;
        case 5: {
          const extension = new BinaryReader(reader.bytes());
          let value = "";
          let number = 0;
          while (extension.pos < extension.len) {
            const [inner, innerType] = extension.tag();
            if (inner === 1) value = extension.string();
            else if (inner === 2) number = extension.int32();
            else extension.skip(innerType);
          }
          lookup = { kind: "fileContainingExtension", value, number };
          break;
        }
        case 6:
          lookup = { kind: "allExtensionNumbersOfType", value: reader.string() };
          break;
        case 7:
          lookup = { kind: "listServices", value: reader.string() };
          break;
        default:
          reader.skip(wireType);
      }
    }
  } catch (error) {
    throw new PluginError(Code.InvalidArgument, "malformed ServerReflectionRequest", { cause: error });
  }
  return { host, lookup };
}
