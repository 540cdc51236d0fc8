import assert from "node:assert/strict";
import { PluginError } from "atomix-plugins-core/errors/plugin-error";

/** The PluginError `promise` rejects with; fails the test if it settles otherwise. */
export async function failure(promise: Promise<unknown>): Promise<PluginError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PluginError, `expected a PluginError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected a failure, but it succeeded");
}
