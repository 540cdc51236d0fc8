import { Metadata, type ServiceError, type status } from "@grpc/grpc-js";
import { Code, PluginError } from "../errors/plugin-error.js";

/**
 * The one place a PluginError becomes a gRPC status. Errors the caller did
 * not cause (INTERNAL, UNKNOWN, DATA_LOSS) are logged with their cause.
 */
export function toServiceError(
  error: unknown,
  log: { error: (obj: object, msg: string) => void },
): Partial<ServiceError> {
  const pluginError = PluginError.from(error);
  if ([Code.Internal, Code.Unknown, Code.DataLoss].includes(pluginError.code)) {
    log.error({ err: pluginError.cause ?? pluginError }, pluginError.message);
  }
  return {
    code: pluginError.code as number as status,
    details: pluginError.message,
    metadata: new Metadata(),
  };
}
