/**
 * Whether process `pid` still runs (EPERM: it does, as another user).
 * Files a process names after itself (spool files, partial fills) are
 * removed by others only once it is gone: replicas may share a folder.
 */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
