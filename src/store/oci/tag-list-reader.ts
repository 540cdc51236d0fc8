import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/** Longer than any tag the distribution spec allows (128 characters). */
const MAX_STRING = 1024;

/**
 * Reads a tag list response (`{"name": "...", "tags": ["a", "b", ...]}`) as
 * its bytes arrive and hands each tag to `onTag`, so that a registry that
 * answers every tag at once (CNCF Distribution 2.8 ignores `n` and `last` on
 * tag lists) costs the bytes in flight, not the whole list in memory.
 */
export async function readTagList(
  body: ReadableStream<Uint8Array> | null,
  onTag: (tag: string) => void,
  where: string,
): Promise<void> {
  if (!body) return;
  const decoder = new TextDecoder();
  let inString = false;
  let escaped = false;
  let text = "";
  let lastString = "";
  let key = "";
  let depth = 0;
  let tagsDepth = -1;
  const fail = (why: string) => new PluginError(Code.Unavailable, `${where} sent a tag list that ${why}`);
  const consume = (chunk: string) => {
    for (const c of chunk) {
      if (inString) {
        if (escaped) {
          escaped = false;
          text += c;
        } else if (c === "\\") escaped = true;
        else if (c === '"') {
          inString = false;
          if (tagsDepth === depth) onTag(text);
          lastString = text;
        } else {
          text += c;
          if (text.length > MAX_STRING) throw fail(`holds a string longer than ${MAX_STRING} characters`);
        }
        continue;
      }
      if (c === '"') {
        inString = true;
        text = "";
      } else if (c === ":") key = lastString;
      else if (c === "{" || c === "[") {
        depth += 1;
        if (c === "[" && depth === 2 && key === "tags") tagsDepth = depth;
      } else if (c === "}" || c === "]") {
        if (depth === tagsDepth) tagsDepth = -1;
        depth -= 1;
      }
    }
  };
  const reader = body.getReader();
  try {
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
      consume(decoder.decode(next.value, { stream: true }));
    }
    consume(decoder.decode());
  } finally {
    await reader.cancel().catch(() => {});
  }
  if (depth !== 0 || inString) throw fail("ended early");
}
