const NOT_SHOWN = "(a line naming a file of the build host: not shown)";

/**
 * Tool output as a caller may see it: gcc's quoted source lines are dropped
 * (they may quote any file an `#include` reached), and a line naming an
 * absolute path outside `allowed` is replaced, so no message shows a file
 * of the build host or its contents.
 */
export function redactOutsidePaths(text: string, allowed: readonly string[]): string {
  const lines: string[] = [];
  for (const line of text.split("\n")) {
    if (/^\s*\d*\s*\|/.test(line)) continue;
    const paths = [...line.matchAll(/(?:^|[\s"'(=:])(\/[^\s"'():,]+)/g)].map((match) => match[1] ?? "");
    const outside = paths.some((path) => !allowed.some((dir) => path === dir || path.startsWith(`${dir}/`)));
    const shown = outside ? NOT_SHOWN : line;
    if (shown === NOT_SHOWN && lines[lines.length - 1] === NOT_SHOWN) continue;
    lines.push(shown);
  }
  return lines.join("\n");
}
