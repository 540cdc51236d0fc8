#!/usr/bin/env bash
# Regenerates internal/runtimev1 (the Go messages and client of
# atomix.runtime.v1) from the project's proto with Debian's protoc,
# protoc-gen-go and protoc-gen-go-grpc:
#   apt-get install protobuf-compiler protoc-gen-go protoc-gen-go-grpc
# The output is committed, so building the runtime needs none of them;
# test/generated-code.test.ts regenerates it into a temporary directory (the
# first argument; this directory by default) and fails when it differs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
proto="$here/../../proto"
file=atomix/runtime/v1/plugin.proto
pkg=example.com/atomix/runtime/internal/runtimev1
protoc -I "$proto" \
  --go_out="$out" --go_opt=module=example.com/atomix/runtime --go_opt="M$file=$pkg" \
  --go-grpc_out="$out" --go-grpc_opt=module=example.com/atomix/runtime --go-grpc_opt="M$file=$pkg" \
  "$file"
