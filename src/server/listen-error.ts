import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/** A listen that failed, said in one line a person can act on. */
export function listenError(address: string, what: string, error: Error): PluginError {
  const inUse = /EADDRINUSE|No address added/.test(error.message);
  return new PluginError(
    Code.Unavailable,
    `cannot listen on ${address} (${what}): ${inUse ? "the address is in use (another server on this port?)" : error.message.split("\n")[0]}`,
    { cause: error },
  );
}
