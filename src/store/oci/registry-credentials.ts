import { readFile } from "node:fs/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { Secret } from "atomix-plugins-core/model/secret";

/** A user name and password (or token) for an OCI registry; the password prints as `[secret]`. */
export interface RegistryCredentials {
  readonly username: string;
  readonly password: Secret;
}

/**
 * The credentials for `host` (`host:port` as in the store URL): `given` (the
 * configuration's ATOMIX_PLUGINS_OCI_USERNAME / ATOMIX_PLUGINS_OCI_PASSWORD)
 * first, then the file, a docker-style `config.json` (`{"auths":
 * {"host:port": {"auth": base64("user:password")}}}` or `{"username",
 * "password"}` in place of `auth`), so the file `docker login` or `oras
 * login` writes works as is. Undefined means anonymous access.
 */
export async function loadRegistryCredentials(options: {
  host: string;
  given?: RegistryCredentials | undefined;
  file?: string | undefined;
}): Promise<RegistryCredentials | undefined> {
  if (options.given) return options.given;
  if (!options.file) return undefined;
  let text: string;
  try {
    text = await readFile(options.file, "utf8");
  } catch (error) {
    throw PluginError.from(error, `reading the OCI credentials file ${options.file}`);
  }
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(text);
  } catch {
    // JSON.parse's message quotes the text around the fault: it could be a password.
    throw new PluginError(Code.InvalidArgument, `the OCI credentials file ${options.file} is not valid JSON`);
  }
  const entry =
    config.auths?.[options.host] ??
    config.auths?.[`https://${options.host}`] ??
    config.auths?.[`http://${options.host}`];
  if (!entry) return undefined;
  if (entry.username !== undefined && entry.password !== undefined) {
    return { username: entry.username, password: new Secret(entry.password) };
  }
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon > 0)
      return { username: decoded.slice(0, colon), password: new Secret(decoded.slice(colon + 1)) };
  }
  throw new PluginError(
    Code.InvalidArgument,
    `the entry for ${options.host} in ${options.file} has neither "auth" nor "username" and "password"`,
  );
}
