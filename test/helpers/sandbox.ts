import { createSandbox, type Sandbox } from "../../src/compiler/sandbox/sandbox.js";

let shared: Promise<Sandbox> | undefined;

/** The build sandbox as `serve` starts it (bubblewrap), probed once per test file. */
export function testSandbox(): Promise<Sandbox> {
  shared ??= createSandbox({ mode: "bwrap" });
  return shared;
}
