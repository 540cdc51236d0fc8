#!/usr/bin/env bash
# Regenerates internal/runtimev1 (the Go messages and client of
# atomix.runtime.v1) and internal/adminv1 (those of the project's admin API,
# whose GetProvenance the client calls to check signatures) from the
# project's protos with Debian's protoc, protoc-gen-go and protoc-gen-go-grpc:
#   apt-get install protobuf-compiler protoc-gen-go protoc-gen-go-grpc
# The output is committed, so building the package needs none of them;
# test/generated-code.test.ts regenerates it into a temporary directory (the
# first argument; this directory by default) and fails when it differs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
proto="$here/../../proto"
module=github.com/atomix/atomix-plugins/clients/go
runtime_file=atomix/runtime/v1/plugin.proto
admin_file=atomix/plugins/admin/v1/admin.proto
# Both files in one run, each mapped to its package, so that admin's imports
# of atomix.runtime.v1 messages resolve to internal/runtimev1.
maps="M$runtime_file=$module/internal/runtimev1,M$admin_file=$module/internal/adminv1"
protoc -I "$proto" \
  --go_out="$out" --go_opt=module="$module" --go_opt="$maps" \
  --go-grpc_out="$out" --go-grpc_opt=module="$module" --go-grpc_opt="$maps" \
  "$runtime_file" "$admin_file"
