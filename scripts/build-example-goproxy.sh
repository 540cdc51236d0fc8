#!/usr/bin/env bash
# Rebuilds examples/goproxy, a Go module proxy in the GOPROXY=file:// layout
# (<module>/@v/list, <version>.info, .mod, .zip), from the module sources in
# examples/go-modules/<module>/<version>/. The zips get fixed times and sorted
# entries, so a rerun over unchanged sources changes no byte (and no go.sum).
set -euo pipefail
examples="$(cd "$(dirname "$0")/../examples" && pwd)"
src="$examples/go-modules"
out="$examples/goproxy"
rm -rf "$out"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for dir in $(cd "$src" && find . -name go.mod -printf '%h\n' | sed 's|^\./||' | sort); do
  version="$(basename "$dir")"
  module="$(dirname "$dir")"
  at="$out/$module/@v"
  mkdir -p "$at"
  cp "$src/$dir/go.mod" "$at/$version.mod"
  printf '{"Version":"%s","Time":"2026-01-01T00:00:00Z"}\n' "$version" >"$at/$version.info"
  echo "$version" >>"$at/list"
  rm -rf "${work:?}"/*
  mkdir -p "$work/$module@$version"
  cp -R "$src/$dir/." "$work/$module@$version/"
  find "$work" -exec touch -h -d 2026-01-01T00:00:00Z {} +
  (cd "$work" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | TZ=UTC zip -X -q -@ "$at/$version.zip")
done
