import { abandonable } from "atomix-plugins-core/errors/plugin-error";

/** What a registry answered for one package name, as the cache keeps it. */
export interface CachedAnswer<T> {
  /** The answer: a package's versions, a "no such package", or a refusal to answer again. */
  readonly value: T;
  /** Validators for the next, conditional, request. */
  readonly etag?: string | undefined;
  readonly lastModified?: string | undefined;
  /** About how many bytes of memory `value` holds. */
  readonly bytes: number;
}

interface Entry<T> {
  answer: CachedAnswer<T>;
  checkedAt: number;
}

export interface PackumentCacheOptions<T> {
  /** How long an answer is used without asking the registry again. */
  readonly ttlMs: number;
  readonly maxEntries: number;
  readonly maxBytes: number;
  /**
   * Asks the registry. `previous` is the answer held, whose validators the
   * request should send; the loader returns it (`"unchanged"`) on a 304.
   * What it throws is not kept: the next lookup asks again.
   */
  readonly load: (
    name: string,
    previous: CachedAnswer<T> | undefined,
  ) => Promise<CachedAnswer<T> | "unchanged">;
  /** Failures after which the answer held is used for another interval (the registry is down, not changed). */
  readonly keepOnFailure?: (error: unknown) => boolean;
  readonly now?: () => number;
}

/**
 * Registry answers by package name: each name is asked at most once per
 * `ttlMs` however many builds want it (concurrent lookups share one
 * request), then revalidated with a conditional request. Bounded in entries
 * and bytes, least recently used out first. A caller that goes away stops
 * waiting; the request goes on for the others, within the loader's own
 * time limit.
 */
export function createPackumentCache<T>(options: PackumentCacheOptions<T>) {
  const now = options.now ?? Date.now;
  /** Insertion order is use order: a hit moves its entry to the end. */
  const entries = new Map<string, Entry<T>>();
  const flights = new Map<string, Promise<CachedAnswer<T>>>();
  let bytes = 0;

  function remove(name: string): void {
    const entry = entries.get(name);
    if (!entry) return;
    entries.delete(name);
    bytes -= entry.answer.bytes;
  }

  function keep(name: string, answer: CachedAnswer<T>): void {
    remove(name);
    if (answer.bytes > options.maxBytes) return;
    entries.set(name, { answer, checkedAt: now() });
    bytes += answer.bytes;
    for (const oldest of entries.keys()) {
      if (entries.size <= options.maxEntries && bytes <= options.maxBytes) break;
      remove(oldest);
    }
  }

  async function refresh(name: string): Promise<CachedAnswer<T>> {
    const previous = entries.get(name)?.answer;
    let loaded: CachedAnswer<T> | "unchanged";
    try {
      loaded = await options.load(name, previous);
    } catch (error) {
      // A registry that is down does not take back what it said (a published version never changes):
      // the last answer serves another interval.
      if (previous && options.keepOnFailure?.(error)) loaded = "unchanged";
      else throw error;
    }
    const answer = loaded === "unchanged" && previous ? previous : loaded;
    if (answer === "unchanged")
      throw new Error(`the registry answered 304 for ${name}, which was not asked conditionally`);
    keep(name, answer);
    return answer;
  }

  return {
    async get(name: string, signal?: AbortSignal): Promise<T> {
      const entry = entries.get(name);
      if (entry && now() - entry.checkedAt < options.ttlMs) {
        entries.delete(name);
        entries.set(name, entry);
        return entry.answer.value;
      }
      let flight = flights.get(name);
      if (!flight) {
        flight = refresh(name).finally(() => flights.delete(name));
        flights.set(name, flight);
        // Callers that went away leave the failure to nobody: not an unhandled rejection.
        flight.catch(() => {});
      }
      return (await abandonable(flight, signal, `stopped waiting for the npm registry's answer for ${name}`))
        .value;
    },
    /** Entries and bytes held, for tests and metrics. */
    size(): { entries: number; bytes: number } {
      return { entries: entries.size, bytes };
    },
  };
}

export type PackumentCache<T> = ReturnType<typeof createPackumentCache<T>>;
