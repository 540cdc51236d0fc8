/**
 * The JSON lines a step printed, each an object, in order. Step programs
 * (the unpacker, the bundler, the verification checker) report as one JSON
 * line; plugin code may print anything around it, so callers pick theirs:
 * the last one, or the one carrying their nonce.
 */
export function stepReports(stdout: string): Record<string, unknown>[] {
  const reports: Record<string, unknown>[] = [];
  for (const line of stdout.split("\n")) {
    try {
      const value: unknown = JSON.parse(line);
      if (value && typeof value === "object" && !Array.isArray(value)) {
        reports.push(value as Record<string, unknown>);
      }
    } catch {
      // Not a report.
    }
  }
  return reports;
}
