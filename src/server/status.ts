import { Metadata, type ServiceError, type status } from "@grpc/grpc-js";
import { Code, codeName, PluginError } from "atomix-plugins-core/errors/plugin-error";

/**
 * The one place a PluginError becomes a gRPC status. Errors the caller did
 * not cause (INTERNAL, UNKNOWN, DATA_LOSS) are logged with their cause; an
 * error's `detail` (server paths, never sent) is logged with its message.
 */
export function toServiceError(
  error: unknown,
  log: { error: (obj: object, msg: string) => void; warn: (obj: object, msg: string) => void },
): Partial<ServiceError> {
  const pluginError = PluginError.from(error);
  if ([Code.Internal, Code.Unknown, Code.DataLoss].includes(pluginError.code)) {
    log.error({ err: pluginError.cause ?? pluginError, detail: pluginError.detail }, pluginError.message);
  } else if (pluginError.detail !== undefined) {
    log.warn({ code: codeName(pluginError.code), detail: pluginError.detail }, pluginError.message);
  }
  return {
    code: pluginError.code as number as status,
    details: pluginError.message,
    metadata: new Metadata(),
  };
}
