#!/usr/bin/env bash
# The test tiers. `npm test` runs the fast one (units, the stores, one
# server in process or a few processes: about a minute); `npm run
# test:all` adds the integration, hostile and stress files (real
# toolchains, registries, proxies, browsers, thousands of calls), which is
# what CI runs. A file is fast unless it is listed below.
set -euo pipefail
cd "$(dirname "$0")/.."

slow=(
  # integration: real toolchains, registries, tiers of servers, a browser
  go-runtime go-client go-toolchain go-symbol-type compiler-node compiler-e2e client-load-e2e runtime-releases prewarm
  build-records provenance tiers oci-replicas oci-replica-rollout oci-content-cache oci-transient oci-auth
  independent-server client-parity client-proxy client-package web-catalog cli-commands cli-mistakes cli-progress push-integrity
  # hostile: what strangers' sources, registries and callers try
  hostile-sources hostile-npm-registry build-containment build-fairness disk-budget source-stamp
  runtime-rm-race tier-hostile-upstream relative-paths
  # stress and scale: thousands of calls, keys, cancelled streams
  index-scale pull-streams-grpc-go pull-streams-grpcio server-connections client-sustained-load
)

tier="${1:-fast}"
files=()
for file in dist/test/*.test.js; do
  name="$(basename "$file" .test.js)"
  listed=0
  for s in "${slow[@]}"; do [ "$s" = "$name" ] && listed=1; done
  if [ "$tier" = all ] || { [ "$tier" = fast ] && [ "$listed" = 0 ]; } || { [ "$tier" = slow ] && [ "$listed" = 1 ]; }; then
    files+=("$file")
  fi
done
# A test file gets 15 minutes, and its process ends once its tests are done.
exec node --test --test-concurrency=2 --test-timeout=900000 --test-force-exit "${files[@]}"
