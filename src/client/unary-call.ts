import { type CallOptions, Metadata } from "@grpc/grpc-js";
import { fromServiceError } from "./call-error.js";
import { cancelled } from "./retry-policy.js";

/** Starts one grpc-js call: what a generated client's method does with these arguments. */
export type StartCall<Response> = (
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: unknown, response: Response) => void,
) => { cancel(): void };

/**
 * One grpc-js call (unary, or client-streaming once its writes are done) as
 * a promise: cancelled when `signal` aborts, bounded by `deadline` (epoch
 * ms), rejected with a PluginError carrying the server's code and message.
 */
export function unaryCall<Response>(
  signal: AbortSignal | undefined,
  deadline: number | undefined,
  start: StartCall<Response>,
): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelled(signal));
      return;
    }
    const call = start(new Metadata(), deadline ? { deadline } : {}, (error, response) => {
      signal?.removeEventListener("abort", cancel);
      if (error) reject(fromServiceError(error));
      else resolve(response);
    });
    const cancel = () => call.cancel();
    signal?.addEventListener("abort", cancel, { once: true });
  });
}
