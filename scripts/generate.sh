#!/usr/bin/env bash
# Generates src/gen/ from proto/ with protoc and ts-proto. Pass an output
# directory to generate elsewhere (the staleness test does).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/src/gen}
mkdir -p "$out"
protoc \
  --plugin="$root/node_modules/.bin/protoc-gen-ts_proto" \
  --ts_proto_out="$out" \
  --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true,importSuffix=.js,forceLong=number,oneof=unions-value,useOptionals=none \
  -I "$root/proto" \
  $(cd "$root/proto" && find . -name '*.proto' | sort | sed 's|^\./||')
