import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import {
  type Client,
  credentials,
  loadPackageDefinition,
  makeGenericClientConstructor,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";

type Callback<T> = (error: Error | null, response: T) => void;

/** Asks grpc.health.v1.Health/Check, as a Kubernetes probe or grpc-health-probe would. */
export async function checkHealth(address: string, service = ""): Promise<string> {
  const HealthClient = makeGenericClientConstructor(
    healthService as ServiceDefinition,
    "grpc.health.v1.Health",
  );
  const client = new HealthClient(address, credentials.createInsecure()) as unknown as Client & {
    check(request: { service: string }, callback: Callback<{ status: string }>): void;
  };
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
