import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/**
 * How a call is retried after a transient failure. Delays grow exponentially
 * from `initialDelayMs` up to `maxDelayMs`, and each is drawn at random
 * between zero and that bound ("full jitter"), so that a fleet of runtimes
 * that lost the server at the same moment does not come back in lockstep.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included; 1 disables retries. Default 6. */
  maxAttempts?: number;
  /** Upper bound of the first delay. Default 200 ms. */
  initialDelayMs?: number;
  /** Cap of every delay. Default 5000 ms. */
  maxDelayMs?: number;
  /** Growth of the bound from one delay to the next. Default 2. */
  multiplier?: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<Required<RetryPolicy>> = {
  maxAttempts: 6,
  initialDelayMs: 200,
  maxDelayMs: 5000,
  multiplier: 2,
};

export function resolveRetryPolicy(policy: RetryPolicy | undefined): Required<RetryPolicy> {
  const resolved = { ...DEFAULT_RETRY_POLICY, ...policy };
  if (!Number.isInteger(resolved.maxAttempts) || resolved.maxAttempts < 1) {
    throw new PluginError(Code.InvalidArgument, `retry.maxAttempts must be a whole number ≥ 1`);
  }
  return resolved;
}

/** The delay before attempt `attempt + 1`, after `attempt` (1-based) failed. */
export function backoffDelay(
  attempt: number,
  policy: Required<RetryPolicy>,
  random: () => number = Math.random,
): number {
  const bound = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.multiplier ** (attempt - 1));
  return Math.floor(random() * bound);
}

/** Codes after which any call is tried again: the server was unreachable, went away, or asked for it. */
const RETRYABLE = new Set<Code>([Code.Unavailable, Code.Aborted]);

/**
 * Whether a failure is worth another attempt, from its code alone, whichever
 * transport reported it. A pull also retries INTERNAL: gRPC reports a stream
 * broken in transit that way (reset by the server or a proxy, a message cut
 * short), and a pull resumes from the bytes in hand, so nothing is sent
 * twice; a server that answers INTERNAL every time fails after maxAttempts.
 * Everything else is the server's considered answer, returned at once.
 */
export function isRetryable(code: Code, call: "pull" | "unary" = "unary"): boolean {
  return RETRYABLE.has(code) || (call === "pull" && code === Code.Internal);
}

/** Waits `ms`, or rejects with CANCELLED as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelled(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(cancelled(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export function cancelled(signal: AbortSignal | undefined): PluginError {
  return new PluginError(Code.Cancelled, "the call was cancelled", { cause: signal?.reason });
}
