import { AsyncLocalStorage } from "node:async_hooks";
import { basename } from "node:path";
import { MAX_RECORDED_OUTPUT, tailOf } from "atomix-plugins-core/model/build-record";
import { redactOutsidePaths } from "./redact-outside-paths.js";

/**
 * What one build's steps printed, kept for its build record: every step
 * the sandbox runs while a build's toolchain works is appended, with a line
 * naming it. Only the tail is kept, about twice the recorded size at most.
 */
export class BuildOutputLog {
  #text = "";
  #dropped = false;

  append(line: string): void {
    this.#text += line.endsWith("\n") ? line : `${line}\n`;
    if (this.#text.length > 2 * MAX_RECORDED_OUTPUT) {
      this.#text = this.#text.slice(-MAX_RECORDED_OUTPUT);
      this.#dropped = true;
    }
  }

  /**
   * The last 64 KiB as a caller may read it: the build's own directory
   * shown as `.`, and lines naming any other host path (outside /usr) left
   * out, as in the toolchains' messages.
   */
  recorded(workDir: string | undefined): { text: string; truncated: boolean } {
    let text = workDir ? this.#text.replaceAll(workDir, ".") : this.#text;
    text = redactOutsidePaths(text, ["/usr"]);
    const tail = tailOf(text);
    return { text: tail.text, truncated: tail.truncated || this.#dropped };
  }
}

/**
 * The log of the build whose steps run in the current async context. A
 * context, not shared state: each build's toolchain run gets its own, so
 * the sandbox can hand a step's output to it without every toolchain
 * passing a log through each of its steps.
 */
const currentBuild = new AsyncLocalStorage<BuildOutputLog>();

export function withBuildOutput<T>(log: BuildOutputLog, run: () => Promise<T>): Promise<T> {
  return currentBuild.run(log, run);
}

/** Called by the sandbox after each step: appends its output to the running build's log, if any. */
export function recordStepOutput(
  step: { file: string; args: readonly string[] },
  result: { exitCode: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string },
): void {
  const log = currentBuild.getStore();
  if (!log) return;
  // A step's JSON request names the host's folders: the line would be hidden whole (redactOutsidePaths).
  const program = [
    basename(step.file),
    ...step.args
      .slice(0, 2)
      .filter((arg) => !arg.startsWith("{"))
      .map((arg) => (arg.startsWith("/") ? basename(arg) : arg)),
  ];
  const ended = result.signal ? `killed by ${result.signal}` : `exit ${result.exitCode}`;
  log.append(`$ ${program.join(" ").slice(0, 200)} (${ended})`);
  if (result.stdout.trim()) log.append(readableReports(result.stdout));
  if (result.stderr.trim()) log.append(result.stderr);
}

/**
 * Step programs report as one JSON line (step-report.ts): for a person
 * reading the build's output it becomes `report: ok=true files=4 ...`.
 * Other lines stay as they were.
 */
function readableReports(stdout: string): string {
  return stdout
    .split("\n")
    .map((line) => {
      if (!line.startsWith("{")) return line;
      try {
        const report: unknown = JSON.parse(line);
        if (!report || typeof report !== "object" || Array.isArray(report)) return line;
        const fields = Object.entries(report).map(
          ([name, value]) => `${name}=${typeof value === "string" ? value : JSON.stringify(value)}`,
        );
        return `report: ${fields.join(" ")}`;
      } catch {
        return line;
      }
    })
    .join("\n");
}
