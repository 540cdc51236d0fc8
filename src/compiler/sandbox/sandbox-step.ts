/**
 * What one build step may use up. Memory and processes are enforced by a
 * cgroup (all memory: heap, buffers, tmpfs pages, every child); the rest by
 * rlimits on every process of the step and by the size of its scratch tmpfs.
 */
export interface StepLimits {
  /** All memory of the step's processes together, /tmp's tmpfs included. */
  readonly memoryBytes: number;
  /** Processes and threads the step may have at once. */
  readonly processes: number;
  /** CPU seconds each process may use. */
  readonly cpuSeconds: number;
  /** Largest file any process of the step may write. */
  readonly fileBytes: number;
  /** Size of the step's private /tmp (a tmpfs, counted in memoryBytes too). */
  readonly tmpBytes: number;
  /** Open files per process. */
  readonly openFiles: number;
}

/** One program run of a build: tsc, esbuild, the verification load, go, the unpacker. */
export interface SandboxStep {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd: string;
  /** The step's whole environment: nothing of the server's is passed on. */
  readonly env?: Readonly<Record<string, string>>;
  /** Paths the step may read, visible at the same path; everything else of the host is absent. */
  readonly readable?: readonly string[];
  /** Paths the step may write (and read), visible at the same path. */
  readonly writable?: readonly string[];
  /**
   * Only for a step that downloads through a network proxy the operator
   * configured (`go mod download`); every other step has no network at all.
   */
  readonly network?: boolean;
  readonly limits?: Partial<StepLimits>;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
  readonly maxOutputBytes?: number;
}
