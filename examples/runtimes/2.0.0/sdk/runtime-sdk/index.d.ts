/** The SDK release the runtime loaded: plugins see the runtime's copy, never their own. */
export declare const SDK_VERSION: string;

/** One operation the runtime hands to a driver (was `Request` in runtime 1). */
export interface Operation {
  readonly kind: "get" | "put";
  readonly key: string;
  readonly value?: string;
}

/** What the runtime lends a driver for one operation. */
export interface Context {
  readonly runtimeVersion: string;
  log(message: string): void;
}

/** What every plugin exports as `driver`: runtime 2 only loads apiVersion 2 drivers. */
export interface Driver {
  readonly name: string;
  readonly apiVersion: 2;
  handle(operation: Operation, context: Context): Promise<string>;
}

/** Checks a driver's shape at compile time and freezes it. */
export declare function defineDriver<D extends Driver>(driver: D): D;

/** Builds the context the runtime passes to handle(). */
export declare function createContext(runtimeVersion: string): Context;
