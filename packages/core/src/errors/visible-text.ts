/**
 * Characters a terminal may act on instead of showing: C0 controls (ESC
 * starts the sequences that clear a screen, move the cursor, set the
 * clipboard with OSC 52; CR and BS overwrite what was printed), DEL, C1
 * controls (U+009B is CSI on terminals that honour 8-bit controls), and the
 * bidirectional overrides and isolates that reorder what a person reads
 * ("Trojan Source", CVE-2021-42574). Tab and newline are kept apart: text
 * with lines may keep them.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is matched
const ACTING = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is matched
const ACTING_OR_LAYOUT = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
/** What JSON.stringify leaves raw inside a string: it escapes C0 controls itself. */
const ACTING_IN_JSON = /[\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function shown(char: string): string {
  const named = NAMED[char];
  if (named) return named;
  const code = char.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`;
}

/**
 * `text` as a terminal may print it: every character above shown as an
 * escape (`\x1b`, `\r`, `\x9b`, `\u202e`), so that a person sees something
 * was there and the terminal does nothing with it. With `lines`, newline
 * and tab stay (build output, a multi-line message); without, they are
 * escaped too, so that a value cannot begin a line of its own (a forged
 * field) or break a table's columns. A backslash is not escaped: the text
 * stays as readable as it was, at the price of `\x1b` written literally
 * looking like an escaped one.
 */
export function visibleText(text: string, options: { lines?: boolean } = {}): string {
  return text.replace(options.lines ? ACTING : ACTING_OR_LAYOUT, shown);
}

/**
 * `JSON.stringify(value, null, indent)` with the characters it leaves raw
 * (DEL, C1, bidirectional controls) written as `\u` escapes: the same data
 * for every JSON reader, and nothing for a terminal that shows the JSON to
 * act on. Those characters only ever occur inside strings, where `\u`
 * escapes are valid.
 */
export function visibleJson(value: unknown, indent?: number): string {
  return inertJson(JSON.stringify(value, null, indent));
}

/** JSON text as visibleJson writes it: what JSON.stringify (or pino) wrote, with the same escapes. */
export function inertJson(json: string): string {
  return json.replace(ACTING_IN_JSON, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
