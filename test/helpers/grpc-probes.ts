import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Client, credentials, loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

type Callback<T> = (error: Error | null, response: T) => void;

/** A grpc.health.v1.Health client: Check, Watch and List, statuses as their enum names. */
export type HealthClient = Client & {
  check(request: { service: string }, callback: Callback<{ status: string }>): void;
  watch(request: { service: string }): NodeJS.EventEmitter & { cancel(): void };
  list(
    request: Record<string, never>,
    callback: Callback<{ statuses: Record<string, { status: string }> }>,
  ): void;
};

/**
 * A health client built the way grpc-health-probe's is: from the upstream
 * health.proto (the copy in proto-vendor/), with protobufjs, not with the
 * server's own codec.
 */
export function healthClient(address: string): HealthClient {
  const root = join(dirname(fileURLToPath(import.meta.url)), "../../../proto-vendor");
  const definition = loadSync("grpc/health/v1/health.proto", { includeDirs: [root], enums: String });
  // biome-ignore lint/suspicious/noExplicitAny: the package object is untyped by construction
  const pkg = loadPackageDefinition(definition) as any;
  return new pkg.grpc.health.v1.Health(address, credentials.createInsecure()) as HealthClient;
}

/** Asks grpc.health.v1.Health/Check, as a Kubernetes probe or grpc-health-probe would. */
export async function checkHealth(address: string, service = ""): Promise<string> {
  const client = healthClient(address);
  try {
    return await new Promise<string>((resolve, reject) =>
      client.check({ service }, (error, response) => (error ? reject(error) : resolve(response.status))),
    );
  } finally {
    client.close();
  }
}

/** Lists services through grpc.reflection.v1, as grpcurl does. */
export async function listServicesByReflection(address: string): Promise<string[]> {
  const require = createRequire(import.meta.url);
  const root = join(dirname(require.resolve("@grpc/reflection/package.json")), "build/proto");
  const definition = loadSync(join(root, "grpc/reflection/v1/reflection.proto"), { includeDirs: [root] });
  // biome-ignore lint/suspicious/noExplicitAny: the package object is untyped by construction
  const pkg = loadPackageDefinition(definition) as any;
  const client = new pkg.grpc.reflection.v1.ServerReflection(address, credentials.createInsecure());
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = client.ServerReflectionInfo();
      call.on("data", (response: { listServicesResponse?: { service: { name: string }[] } }) => {
        resolve((response.listServicesResponse?.service ?? []).map((s) => s.name).sort());
        call.end();
      });
      call.on("error", reject);
      call.write({ listServices: "*" });
    });
  } finally {
    client.close();
  }
}
