import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { PullPluginResponse } from "../src/gen/atomix/runtime/v1/plugin.js";
import { decodePullPluginResponse, encodePullPluginResponse } from "../src/protocol/pull-codec.js";

describe("hand-written PullPluginResponse codec", () => {
  for (const size of [0, 1, 127, 128, 16_383, 16_384, 65_536, 262_144, 1_048_576, 2_097_153]) {
    it(`encodes ${size} bytes exactly as the generated codec does`, () => {
      const data = randomBytes(size);
      const generated = Buffer.from(PullPluginResponse.encode({ data }).finish());
      assert.deepEqual(encodePullPluginResponse({ data }), generated);
      assert.deepEqual(decodePullPluginResponse(generated).data, data);
    });
  }

  it("skips unknown fields when decoding", () => {
    const data = randomBytes(10);
    const known = Buffer.from(PullPluginResponse.encode({ data }).finish());
    // field 2 varint 150, field 3 fixed64, then field 1
    const withUnknown = Buffer.concat([Buffer.from([0x10, 0x96, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0]), known]);
    assert.deepEqual(decodePullPluginResponse(withUnknown).data, data);
  });
});
