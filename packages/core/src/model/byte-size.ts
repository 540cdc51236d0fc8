/**
 * A size as a person writes it: bytes (`65536`) or a whole number of
 * binary units (`64KiB`, `8 MiB`, `1GiB`, `2TiB`). Undefined for anything
 * else, so that the caller names the option in its message.
 */
export function parseByteSize(text: string): number | undefined {
  const match = /^\s*(\d{1,16})\s*(B|KiB|MiB|GiB|TiB)?\s*$/.exec(text);
  if (!match) return undefined;
  const value = Number(match[1]) * (UNITS[match[2] ?? "B"] ?? 1);
  return Number.isSafeInteger(value) ? value : undefined;
}

const UNITS: Record<string, number> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
};

/** How a size option's error says what it takes. */
export const BYTE_SIZE_EXAMPLE = "such as 65536 or 64KiB";
