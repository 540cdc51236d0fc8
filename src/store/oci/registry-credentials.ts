import { readFile } from "node:fs/promises";
import { Code, PluginError } from "../../errors/plugin-error.js";

/** A user name and password (or token) for an OCI registry. */
export interface RegistryCredentials {
  readonly username: string;
  readonly password: string;
}

export const CREDENTIAL_ENVIRONMENT = {
  username: "ATOMIX_PLUGINS_OCI_USERNAME",
  password: "ATOMIX_PLUGINS_OCI_PASSWORD",
} as const;

/**
 * Finds the credentials for `host` (`host:port` as in the store URL):
 * `ATOMIX_PLUGINS_OCI_USERNAME` / `ATOMIX_PLUGINS_OCI_PASSWORD` first, then
 * the file, a docker-style `config.json` (`{"auths": {"host:port": {"auth":
 * base64("user:password")}}}` or `{"username", "password"}` in place of
 * `auth`), so the file `docker login` or `oras login` writes works as is.
 * Undefined means anonymous access.
 */
export async function loadRegistryCredentials(options: {
  host: string;
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
}): Promise<RegistryCredentials | undefined> {
  const env = options.env ?? process.env;
  const username = env[CREDENTIAL_ENVIRONMENT.username];
  const password = env[CREDENTIAL_ENVIRONMENT.password];
  if (username || password) {
    if (!username || password === undefined) {
      throw new PluginError(
        Code.InvalidArgument,
        `set both ${CREDENTIAL_ENVIRONMENT.username} and ${CREDENTIAL_ENVIRONMENT.password}, or neither`,
      );
    }
    return { username, password };
  }
  if (!options.file) return undefined;
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(await readFile(options.file, "utf8"));
  } catch (error) {
    throw PluginError.from(error, `reading the OCI credentials file ${options.file}`);
  }
  const entry =
    config.auths?.[options.host] ??
    config.auths?.[`https://${options.host}`] ??
    config.auths?.[`http://${options.host}`];
  if (!entry) return undefined;
  if (entry.username !== undefined && entry.password !== undefined) {
    return { username: entry.username, password: entry.password };
  }
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  throw new PluginError(
    Code.InvalidArgument,
    `the entry for ${options.host} in ${options.file} has neither "auth" nor "username" and "password"`,
  );
}
