import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { quoted } from "atomix-plugins-core/errors/plugin-error";
import { inertJson, visibleJson, visibleText } from "atomix-plugins-core/errors/visible-text";

describe("text shown on a terminal", () => {
  it("shows every control a terminal acts on as an escape, and leaves other text as it is", () => {
    assert.equal(
      visibleText("a\x1b[2Jb\x07c\bd\re\x7ff\u009bg\u0085h\u202ei\u2066j\u2069k"),
      "a\\x1b[2Jb\\x07c\\x08d\\re\\x7ff\\x9bg\\x85h\\u202ei\\u2066j\\u2069k",
    );
    const plain = "naïve 日本語 🚀 \\x1b \u200d back\\slash";
    assert.equal(visibleText(plain), plain);
  });

  it("keeps newlines and tabs in text with lines, and escapes them in a one-line value", () => {
    assert.equal(visibleText("one\n\ttwo\r\n", { lines: true }), "one\n\ttwo\\r\n");
    assert.equal(visibleText("one\n\ttwo"), "one\\n\\ttwo");
  });

  it("writes JSON whose strings are exact for a reader and hold nothing a terminal acts on", () => {
    const value = { message: "x\x1b]52;c;ZXZpbA==\x07\u009b31m\u202e\u2028\x7f", n: 1 };
    const json = visibleJson(value, 2);
    assert.deepEqual(JSON.parse(json), value);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is looked for
    assert.doesNotMatch(json, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
    assert.equal(inertJson('{"a":"\u009b"}'), '{"a":"\\u009b"}');
    assert.equal(quoted("a\u202eb"), '"a\\u202eb"');
  });
});
