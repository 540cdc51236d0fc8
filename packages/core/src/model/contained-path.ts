import { resolve, sep } from "node:path";

/**
 * Whether `path` lies strictly below `folder` once both are resolved: the
 * one test every path built from release or source data passes before the
 * server touches a file there.
 */
export function isBelow(folder: string, path: string): boolean {
  const root = resolve(folder);
  const full = resolve(root, path);
  return full.startsWith(root.endsWith(sep) ? root : root + sep);
}
