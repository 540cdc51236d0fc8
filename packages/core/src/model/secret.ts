import { inspect } from "node:util";

const HIDDEN = "[secret]";

/**
 * A credential (the admin token, a registry password) held so that it cannot
 * reach a log line, an error message or a dump by accident: it prints,
 * serializes and inspects as `[secret]`. Only `reveal()` gives the value,
 * and only the code that sends it somewhere calls it.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return HIDDEN;
  }

  toJSON(): string {
    return HIDDEN;
  }

  [inspect.custom](): string {
    return HIDDEN;
  }
}
