import type {
  Metadata,
  ServerInterceptingCall,
  ServerInterceptingCallInterface,
  ServerInterceptor,
  ServerMethodDefinition,
} from "@grpc/grpc-js";
import type { PluginError } from "atomix-plugins-core/errors/plugin-error";

type PartialStatusObject = Parameters<ServerInterceptingCallInterface["sendStatus"]>[0];
type InterceptingServerListener = Parameters<ServerInterceptingCallInterface["start"]>[0];

/**
 * Knows every call in flight, so that shutdown can end them with a status
 * of its choosing (UNAVAILABLE: clients retry on another replica) instead of
 * grpc-js's stream resets, which clients report as CANCELLED. Install
 * `interceptor` in the grpc-js Server's `interceptors` option.
 */
export class CallTracker {
  private readonly calls = new Set<TrackedCall>();

  // grpc-js types an interceptor's result as its ServerInterceptingCall
  // class, but uses only ServerInterceptingCallInterface, which TrackedCall
  // implements: each interceptor's result is the next one's `next`, and the
  // last one's is what the handler runs on (getServerInterceptingCall).
  readonly interceptor: ServerInterceptor = (method: ServerMethodDefinition<unknown, unknown>, next) =>
    new TrackedCall(this.calls, method.path, next) as unknown as ServerInterceptingCall;

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
      call.sendStatus({ code: error.code as number, details: error.message });
      ended += 1;
    }
    return ended;
  }
}

/**
 * One call, passed straight through to grpc-js's own, noting only when it
 * ends (its status sent, or cancelled). Not a grpc-js ServerInterceptingCall:
 * that one orders metadata, messages and status through a state machine of
 * its own for every call, which cost about a third of the CPU of a cache-hit
 * CompilePlugin (README, Performance); this adds two small objects a call.
 */
class TrackedCall implements ServerInterceptingCallInterface {
  constructor(
    private readonly calls: Set<TrackedCall>,
    readonly path: string,
    private readonly next: ServerInterceptingCallInterface,
  ) {
    calls.add(this);
  }

  start(listener: InterceptingServerListener): void {
    this.next.start(new TrackedListener(this, listener));
  }

  /** The call is over: shutdown has nothing more to end. */
  forget(): void {
    this.calls.delete(this);
  }

  sendStatus(status: PartialStatusObject): void {
    this.calls.delete(this);
    this.next.sendStatus(status);
  }

  sendMetadata(metadata: Metadata): void {
    this.next.sendMetadata(metadata);
  }

  // biome-ignore lint/suspicious/noExplicitAny: grpc-js's own signature (the serializer's input)
  sendMessage(message: any, callback: () => void): void {
    this.next.sendMessage(message, callback);
  }

  startRead(): void {
    this.next.startRead();
  }

  getPeer() {
    return this.next.getPeer();
  }

  getDeadline() {
    return this.next.getDeadline();
  }

  getHost() {
    return this.next.getHost();
  }

  getAuthContext() {
    return this.next.getAuthContext();
  }

  getConnectionInfo() {
    return this.next.getConnectionInfo();
  }

  getMetricsRecorder() {
    return this.next.getMetricsRecorder();
  }
}

/** The handler's listener, told first that a cancelled call is over. */
class TrackedListener implements InterceptingServerListener {
  constructor(
    private readonly call: TrackedCall,
    private readonly listener: InterceptingServerListener,
  ) {}

  onReceiveMetadata(metadata: Metadata): void {
    this.listener.onReceiveMetadata(metadata);
  }

  // biome-ignore lint/suspicious/noExplicitAny: grpc-js's own signature (the deserializer's output)
  onReceiveMessage(message: any): void {
    this.listener.onReceiveMessage(message);
  }

  onReceiveHalfClose(): void {
    this.listener.onReceiveHalfClose();
  }

  onCancel(): void {
    this.call.forget();
    this.listener.onCancel();
  }
}
