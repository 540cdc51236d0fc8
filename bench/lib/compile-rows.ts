import type { Row } from "./table.js";

/**
 * Cold compile figures: the example Node.js plugin, the example Go driver,
 * and 100 identical cold compiles at once. They need the toolchains; until
 * this tree has them the rows say so instead of showing a number.
 */
export async function compileRows(_options: {
  root: string;
  work: string;
  log: (message: string) => void;
}): Promise<Row[]> {
  const reason = "not available: this tree has no toolchains yet (the server compiles nothing, only stores)";
  return [
    { figure: "cold compile, example Node.js plugin", ours: reason, unit: "s", target: { oursAtMost: 1.5 } },
    { figure: "cold compile, example Go driver (warm Go build cache)", ours: reason, unit: "s" },
    { figure: "100 identical cold compiles at once", ours: reason, unit: "s" },
  ];
}
