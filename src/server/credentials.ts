import { readFile } from "node:fs/promises";
import { ServerCredentials } from "@grpc/grpc-js";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { adminTokenSchema, type ServeConfig } from "../config.js";
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

/**
 * The admin token: the configuration's (ATOMIX_PLUGINS_ADMIN_TOKEN) or the
 * one in `adminTokenFile`, checked by the same rule. No message shows it.
 */
export async function loadAdminAuth(
  config: Pick<ServeConfig, "adminToken" | "adminTokenFile" | "listen"> &
    Partial<Pick<ServeConfig, "trustedProxies">>,
): Promise<AdminAuth> {
  const options = { listen: config.listen, trustedProxies: config.trustedProxies ?? [] };
  if (config.adminToken) return createAdminAuth(config.adminToken, options);
  if (!config.adminTokenFile) return createAdminAuth(undefined, options);
  let text: string;
  try {
    text = await readFile(config.adminTokenFile, "utf8");
  } catch (error) {
    throw PluginError.from(error, `reading the admin token file ${config.adminTokenFile}`);
  }
  const token = adminTokenSchema.safeParse(text.trim());
  if (!token.success) {
    throw new PluginError(
      Code.InvalidArgument,
      `the admin token in ${config.adminTokenFile}: ${token.error.issues.map((issue) => issue.message).join("; ")}`,
    );
  }
  return createAdminAuth(token.data, options);
}
