import { mkdir } from "node:fs/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { DEFAULT_MAX_SOURCE_BYTES, DEFAULT_MAX_SOURCE_FILES } from "../build-defaults.js";
import { nodeProgram } from "../sandbox/node-program.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import { stepReports } from "../sandbox/step-report.js";

const UNPACK_TIMEOUT_MS = 60_000;

export interface SourceLimits {
  /** Bytes a source may unpack to (--max-source-size). */
  readonly maxBytes: number;
  /** Files and folders a source may hold (--max-source-files). */
  readonly maxFiles: number;
}

export interface UnpackedSource {
  /** `sha512-...` of the tarball as fetched, or of the folder's files. */
  readonly integrity: string;
  readonly files: number;
  readonly bytes: number;
}

/**
 * Turns a plugin source as it arrived (a tarball file, a catalog folder)
 * into the build's own copy, in the sandbox, within the source limits.
 * Everything the build reads afterwards is that copy: regular files and
 * folders only, no link out of the package.
 */
export interface SourceUnpacker {
  readonly limits: SourceLimits;
  unpack(input: {
    kind: "tarball" | "folder";
    /** The tarball file or the folder: mounted read-only into the step. */
    from: string;
    /** Created empty; the only place the step may write. */
    to: string;
    /** How the source is named in messages (`counter@1.0.0`), never by a server path. */
    what: string;
    signal?: AbortSignal;
  }): Promise<UnpackedSource>;
}

export function createSourceUnpacker(options: {
  sandbox: Sandbox;
  limits?: Partial<SourceLimits>;
}): SourceUnpacker {
  const limits: SourceLimits = {
    maxBytes: options.limits?.maxBytes ?? DEFAULT_MAX_SOURCE_BYTES,
    maxFiles: options.limits?.maxFiles ?? DEFAULT_MAX_SOURCE_FILES,
  };
  return {
    limits,
    async unpack(input) {
      await mkdir(input.to, { recursive: true });
      const request = { kind: input.kind, from: input.from, to: input.to, ...limits };
      const program = nodeProgram(
        new URL("./unpack-step.js", import.meta.url),
        [JSON.stringify(request)],
        "tar",
      );
      const result = await options.sandbox.run({
        ...program,
        cwd: input.to,
        readable: [...program.readable, input.from],
        writable: [input.to],
        limits: { fileBytes: limits.maxBytes, memoryBytes: 512 * 1024 * 1024 },
        timeoutMs: UNPACK_TIMEOUT_MS,
        maxOutputBytes: 64 * 1024,
        ...(input.signal ? { signal: input.signal } : {}),
      });
      if (result.timedOut) {
        throw new PluginError(
          Code.DeadlineExceeded,
          `the source of ${input.what} took longer than ${UNPACK_TIMEOUT_MS} ms to unpack and was stopped`,
        );
      }
      const report = stepReports(result.stdout).at(-1) as
        | { ok?: boolean; problem?: string; integrity?: string; files?: number; bytes?: number }
        | undefined;
      if (report?.ok && report.integrity) {
        return { integrity: report.integrity, files: report.files ?? 0, bytes: report.bytes ?? 0 };
      }
      const problem =
        report?.problem ??
        (result.outOfMemory
          ? "unpacking it ran out of memory"
          : `the unpacker stopped (exit ${result.exitCode ?? result.signal}) without a report`);
      throw new PluginError(Code.FailedPrecondition, `the source of ${input.what} is refused: ${problem}`);
    },
  };
}
