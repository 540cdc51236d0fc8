import type { ServiceError } from "@grpc/grpc-js";
import { Code, PluginError } from "../errors/plugin-error.js";
import { statusFailure } from "./pull-transport.js";

/** A failed call as a PluginError carrying the server's code and message. */
export function fromServiceError(error: unknown): PluginError {
  if (error instanceof PluginError) return error;
  const serviceError = error as Partial<ServiceError>;
  if (typeof serviceError.code === "number" && typeof serviceError.details === "string") {
    // grpc-js ends connection failures with an empty "Resolution note: ".
    const details = serviceError.details.replace(/[\s.:;]*Resolution note:\s*$/, "");
    const failure = statusFailure(serviceError.code, details);
    return new PluginError(failure.code, failure.message, { cause: error });
  }
  return PluginError.from(error);
}

export { Code };
