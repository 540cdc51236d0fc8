/** Bundled into the plugin: local modules are inlined, the runtime's are not. */
export class Counts {
  readonly #byKey = new Map<string, number>();

  increment(key: string): number {
    const next = (this.#byKey.get(key) ?? 0) + 1;
    this.#byKey.set(key, next);
    return next;
  }
}
