/** One line of the results: our figure, the peer's from the same rounds, and the target it is held to. */
export interface Row {
  figure: string;
  /** A number, or why there is none ("not available: ..."). */
  ours: number | string;
  peer?: number;
  /** Median over rounds of ours / peer, each pair measured in the same round. */
  ratio?: number;
  unit: string;
  target?: { ratioAtLeast?: number; ratioAtMost?: number; oursAtMost?: number };
  note?: string;
}

function format(value: number | undefined): string {
  if (value === undefined || Number.isNaN(value)) return "";
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

function targetText(row: Row): string {
  const parts: string[] = [];
  if (row.target?.ratioAtLeast !== undefined) parts.push(`ratio ≥ ${row.target.ratioAtLeast}`);
  if (row.target?.ratioAtMost !== undefined) parts.push(`ratio ≤ ${row.target.ratioAtMost}`);
  if (row.target?.oursAtMost !== undefined) parts.push(`≤ ${row.target.oursAtMost} ${row.unit}`);
  return parts.join(", ");
}

/** Whether the row meets its target; undefined without a target or a figure. */
export function meets(row: Row): boolean | undefined {
  if (!row.target || typeof row.ours !== "number") return undefined;
  let ok = true;
  if (row.target.ratioAtLeast !== undefined) ok &&= (row.ratio ?? Number.NaN) >= row.target.ratioAtLeast;
  if (row.target.ratioAtMost !== undefined) ok &&= (row.ratio ?? Number.NaN) <= row.target.ratioAtMost;
  if (row.target.oursAtMost !== undefined) ok &&= row.ours <= row.target.oursAtMost;
  return ok;
}

/** A Markdown table, readable in a terminal and pasteable into the README. */
export function formatTable(rows: Row[]): string {
  const lines = [
    "| figure | unit | ours | peer | ours / peer | target | met |",
    "| --- | --- | ---: | ---: | ---: | --- | :---: |",
  ];
  for (const row of rows) {
    const met = meets(row);
    const ours = typeof row.ours === "number" ? format(row.ours) : row.ours;
    const figure = row.figure.replace(/^ {2}/, "↳ ") + (row.note ? ` (${row.note})` : "");
    lines.push(
      `| ${figure} | ${row.unit} | ${ours} | ${format(row.peer)} | ${format(row.ratio)} | ${targetText(row)} | ${met === undefined ? "" : met ? "yes" : "**no**"} |`,
    );
  }
  return lines.join("\n");
}
