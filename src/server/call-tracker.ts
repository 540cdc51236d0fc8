import { ServerInterceptingCall, type ServerInterceptor, type ServerMethodDefinition } from "@grpc/grpc-js";
import type { PluginError } from "../errors/plugin-error.js";

type PartialStatusObject = Parameters<ServerInterceptingCall["sendStatus"]>[0];

interface TrackedCall {
  readonly path: string;
  end(status: PartialStatusObject): void;
}

/**
 * Knows every call in flight, so that shutdown can end them with a status
 * of its choosing (UNAVAILABLE: clients retry on another replica) instead of
 * grpc-js's stream resets, which clients report as CANCELLED. Install
 * `interceptor` in the grpc-js Server's `interceptors` option.
 */
export class CallTracker {
  private readonly calls = new Set<TrackedCall>();

  readonly interceptor: ServerInterceptor = (method: ServerMethodDefinition<unknown, unknown>, next) => {
    const tracked: TrackedCall = {
      path: method.path,
      end: (status) => call.sendStatus(status),
    };
    const call = new ServerInterceptingCall(next, {
      start: (proceed) => proceed({ onCancel: () => this.calls.delete(tracked) }),
      sendStatus: (status, proceed) => {
        this.calls.delete(tracked);
        proceed(status);
      },
    });
    this.calls.add(tracked);
    return call;
  };

  /** Calls in flight now. */
  get size(): number {
    return this.calls.size;
  }

  /**
   * Ends the calls in flight whose method path `matches` (every call by
   * default) with `error`'s code and message. A call whose client stopped
   * reading cannot take its status until it reads again (HTTP/2 sends the
   * trailers after the data queued before them).
   */
  endCalls(error: PluginError, matches: (path: string) => boolean = () => true): number {
    let ended = 0;
    for (const call of [...this.calls]) {
      if (!matches(call.path)) continue;
      this.calls.delete(call);
      call.end({ code: error.code as number, details: error.message });
      ended += 1;
    }
    return ended;
  }
}
