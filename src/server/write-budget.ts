import type { ServerWritableStream } from "@grpc/grpc-js";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/**
 * Bounds the bytes a server stream has handed to grpc-js and not yet seen
 * written to the HTTP/2 stream. grpc-js's own backpressure counts messages
 * (16 before `write` returns false), which with large chunks lets a slow
 * client pin tens of MiB per stream; this counts bytes instead.
 */
export class WriteBudget<Message> {
  private inFlight = 0;
  private wake: (() => void) | undefined;

  constructor(
    private readonly call: ServerWritableStream<unknown, Message>,
    private readonly limitBytes: number,
    private readonly signal: AbortSignal,
  ) {}

  /**
   * Resolves once `message` is queued and the budget has room for more.
   * `written` runs once grpc-js is done with the message (it has serialized
   * it and handed the frame to HTTP/2), so its buffers may be reused.
   */
  async write(message: Message, bytes: number, written?: () => void): Promise<void> {
    this.inFlight += bytes;
    this.call.write(message, () => {
      written?.();
      this.inFlight -= bytes;
      const wake = this.wake;
      this.wake = undefined;
      wake?.();
    });
    while (this.inFlight >= this.limitBytes) await this.waitForProgress();
  }

  private waitForProgress(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.signal.aborted) {
        reject(new PluginError(Code.Cancelled, "the client cancelled the pull"));
        return;
      }
      const onAbort = () => reject(new PluginError(Code.Cancelled, "the client cancelled the pull"));
      this.signal.addEventListener("abort", onAbort, { once: true });
      this.wake = () => {
        this.signal.removeEventListener("abort", onAbort);
        resolve();
      };
    });
  }
}
