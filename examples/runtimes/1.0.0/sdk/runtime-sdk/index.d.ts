/** The SDK release the runtime loaded: plugins see the runtime's copy, never their own. */
export declare const SDK_VERSION: string;

/** One request the runtime hands to a driver. */
export interface Request {
  readonly key: string;
  readonly value?: string;
}

/** What every plugin exports as `driver`. */
export interface Driver {
  readonly name: string;
  handle(request: Request): string | Promise<string>;
}

/** Checks a driver's shape at compile time and freezes it. */
export declare function defineDriver<D extends Driver>(driver: D): D;

/** Formats a key the way runtime 1 logs it (removed in runtime 2). */
export declare function formatKey(key: string): string;
