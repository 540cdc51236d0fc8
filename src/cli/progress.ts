import { visibleText } from "atomix-plugins-core/errors/visible-text";
import cliProgress from "cli-progress";
import { formatBytes } from "./cli-common.js";

/** A byte-count progress display; every method is a no-op when not on a terminal. */
export interface TransferProgress {
  /** Bytes done so far out of `total` (the bar starts at the first call). */
  update(done: number, total: number): void;
  stop(): void;
}

/** Whether progress may be drawn: only on an interactive stderr. */
export function showsProgress(stream: NodeJS.WriteStream = process.stderr): boolean {
  return stream.isTTY === true;
}

/**
 * A bar with bytes, rate and ETA on stderr, for pull and push:
 *   pull counter@1.0.0 ███████░░░ 70% | 44.8 MiB/64.0 MiB | 212.3 MiB/s | ETA 0s
 */
export function transferProgress(
  label: string,
  stream: NodeJS.WriteStream = process.stderr,
): TransferProgress {
  if (!showsProgress(stream)) return { update() {}, stop() {} };
  // cli-progress reads "{...}" in its format as placeholders: a label never has them.
  const shown = visibleText(label).replace(/[{}]/g, "");
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${shown} {bar} {percentage}% | {doneBytes}/{totalBytes} | {rate}/s | ETA {eta_formatted}`,
      barsize: 24,
      hideCursor: true,
      etaBuffer: 50,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let started: number | undefined;
  let first = 0;
  const payload = (done: number, total: number) => {
    const seconds = (Date.now() - (started ?? Date.now())) / 1000;
    const rate = seconds > 0 ? (done - first) / seconds : 0;
    return {
      doneBytes: formatBytes(done),
      totalBytes: formatBytes(total),
      rate: formatBytes(Math.round(rate)),
    };
  };
  return {
    update(done, total) {
      if (started === undefined) {
        started = Date.now();
        first = done;
        bar.start(total, done, payload(done, total));
        return;
      }
      bar.update(done, payload(done, total));
    },
    stop() {
      if (started !== undefined) bar.stop();
    },
  };
}

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** A spinner with the elapsed time on stderr; returns the function that clears it. */
export function spinner(label: string, stream: NodeJS.WriteStream = process.stderr): () => void {
  if (!showsProgress(stream)) return () => {};
  const shown = visibleText(label);
  const started = Date.now();
  let frame = 0;
  const draw = () => {
    const elapsed = ((Date.now() - started) / 1000).toFixed(1);
    stream.write(`\r\x1b[K${FRAMES[frame++ % FRAMES.length]} ${shown} ${elapsed}s`);
  };
  draw();
  const timer = setInterval(draw, 80);
  return () => {
    clearInterval(timer);
    stream.write("\r\x1b[K");
  };
}
