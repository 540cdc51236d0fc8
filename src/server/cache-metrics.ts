import { Counter, Gauge, type Registry } from "prom-client";
import type { ContentCacheCounters } from "../store/content-cache.js";
import type { ReplicaStore } from "../store/replica-store.js";

/** A monotonic count the cache keeps itself, read at each scrape. */
function countOf(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

function gaugeOf(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/**
 * What a replica's content cache and key lookups did, at /metrics: how
 * often the registry was asked (fetches, bytes, lookups) against how often
 * the replica answered from its own disk and memory.
 */
export function registerCacheMetrics(registry: Registry, store: ReplicaStore): void {
  const counters: ContentCacheCounters = store.cache.counters;
  const counts: [string, string, () => number][] = [
    ["cache_hits_total", "Blobs opened from the replica's content cache", () => counters.hits],
    [
      "cache_misses_total",
      "Blobs opened while not held: each started or joined a fill",
      () => counters.misses,
    ],
    [
      "cache_fill_joins_total",
      "Opens that joined a fill in progress and read while it landed",
      () => counters.fillJoins,
    ],
    [
      "cache_upstream_fetches_total",
      "Blob fetches from upstream, one per fill",
      () => counters.upstreamFetches,
    ],
    [
      "cache_upstream_resumes_total",
      "Ranged reads that resumed a fill after upstream failed",
      () => counters.upstreamResumes,
    ],
    ["cache_upstream_bytes_total", "Blob bytes fetched from upstream", () => counters.upstreamBytes],
    [
      "cache_fill_failures_total",
      "Fills that failed: their pulls were told, nothing was kept",
      () => counters.fillFailures,
    ],
    ["cache_evictions_total", "Blobs evicted, least recently used first", () => counters.evictions],
    ["cache_evicted_bytes_total", "Bytes of evicted blobs", () => counters.evictedBytes],
    [
      "key_lookups_fresh_total",
      "Key lookups answered within --resolve-ttl without asking upstream",
      () => store.lookups.fresh,
    ],
    [
      "key_lookups_upstream_total",
      "Key lookups that asked upstream (concurrent ones share one)",
      () => store.lookups.upstream,
    ],
    [
      "key_lookups_last_known_good_total",
      "Key lookups answered as last seen while upstream was unreachable",
      () => store.lookups.lastKnownGood,
    ],
  ];
  for (const [name, help, read] of counts) countOf(registry, `atomix_plugins_${name}`, help, read);
  gaugeOf(
    registry,
    "atomix_plugins_cache_bytes",
    "Bytes the content cache holds, fills counted at full size",
    () => store.cache.state.bytes,
  );
  gaugeOf(
    registry,
    "atomix_plugins_cache_blobs",
    "Whole blobs the content cache holds",
    () => store.cache.state.blobs,
  );
  gaugeOf(
    registry,
    "atomix_plugins_cache_fills",
    "Blobs being fetched from upstream now",
    () => store.cache.state.fills,
  );
  gaugeOf(
    registry,
    "atomix_plugins_cache_fill_waiters",
    "Pull reads waiting for bytes of a fill now",
    () => store.cache.state.waiters,
  );
  gaugeOf(
    registry,
    "atomix_plugins_store_degraded",
    "1 while upstream is unreachable and held keys are served as last seen",
    () => (store.degraded ? 1 : 0),
  );
}

/** Whether `store` is a replica's store with a content cache. */
export function isReplicaStore(store: object): store is ReplicaStore {
  return "cache" in store && "lookups" in store;
}
