import { readFile } from "node:fs/promises";
import { ServerCredentials } from "@grpc/grpc-js";
import type { ServeConfig } from "../config.js";
import { type AdminAuth, createAdminAuth } from "./admin-auth.js";

/** Plaintext, TLS, or mutual TLS, from the PEM files the config names. */
export async function loadServerCredentials(
  config: Pick<ServeConfig, "tlsCert" | "tlsKey" | "tlsClientCa">,
): Promise<ServerCredentials> {
  if (!config.tlsCert || !config.tlsKey) return ServerCredentials.createInsecure();
  const [certChain, privateKey, clientCa] = await Promise.all([
    readFile(config.tlsCert),
    readFile(config.tlsKey),
    config.tlsClientCa ? readFile(config.tlsClientCa) : Promise.resolve(null),
  ]);
  return ServerCredentials.createSsl(
    clientCa,
    [{ cert_chain: certChain, private_key: privateKey }],
    clientCa !== null,
  );
}

/** The admin token from its file (ATOMIX_PLUGINS_ADMIN_TOKEN wins, for containers' secrets). */
export async function loadAdminAuth(
  config: Pick<ServeConfig, "adminTokenFile">,
  env: NodeJS.ProcessEnv = process.env,
): Promise<AdminAuth> {
  const direct = env.ATOMIX_PLUGINS_ADMIN_TOKEN;
  if (direct) return createAdminAuth(direct);
  if (!config.adminTokenFile) return createAdminAuth(undefined);
  return createAdminAuth((await readFile(config.adminTokenFile, "utf8")).trim());
}
