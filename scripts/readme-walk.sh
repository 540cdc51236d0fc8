#!/usr/bin/env bash
# Walks the README as a newcomer does, in a fresh clone of this checkout:
# checks that its second command is `bash .ci/run` (which runs this walk),
# runs its first command (`npm ci && npm start`, the server in the
# background), waits until the server serves, then runs every shell block
# marked `<!-- walk -->` in the README, in order, line by line, in a clean
# HOME, exactly as typed (`npx atomix-plugins`, `go build`, `./...`). A line whose
# comment names a gRPC code (`# FAILED_PRECONDITION: ...`) must fail with
# that code; every other line must succeed. Then the clone must hold nothing
# git does not know of or ignore, and build and lint must still pass.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

git clone -q "$repo" "$work/clone"
cd "$work/clone"
export HOME="$work/home"
mkdir -p "$HOME"

first="$(grep -m1 -E '^npm ci && npm start' README.md | sed 's/[[:space:]]*#.*$//')"
[ -n "$first" ] || { echo "readme-walk: the README does not start with npm ci && npm start"; exit 1; }
# The second command is .ci/run, which runs this walk: it is checked, not run.
second="$(grep -m1 -A1 -E '^npm ci && npm start' README.md | tail -n 1 | sed 's/[[:space:]]*#.*$//')"
[ "$second" = "bash .ci/run" ] || {
  echo "readme-walk: the README's second command is \"$second\", not bash .ci/run (what CI runs)"
  exit 1
}
echo "readme-walk: $first"
# Its own process group, so that the server npm starts goes with it.
setsid bash -c "$first" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
  grep -q '"msg":"serving"' "$work/server.log" 2>/dev/null && break
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/server.log"; echo "readme-walk: the server stopped"; exit 1; fi
  sleep 1
done
grep -q '"msg":"serving"' "$work/server.log" || { cat "$work/server.log"; echo "readme-walk: no server"; exit 1; }

# The blocks marked for the walk, one line each, blocks separated by a blank line.
awk '/^<!-- walk -->$/ { marked = 1; next }
     marked && /^```sh$/ { inside = 1; next }
     inside && /^```$/ { inside = 0; marked = 0; print ""; next }
     inside { print }
     !inside && !/^[[:space:]]*$/ { marked = 0 }' README.md >"$work/walk.sh"
[ -s "$work/walk.sh" ] || { echo "readme-walk: no block is marked <!-- walk -->"; exit 1; }

# The lines run as typed: no function or alias stands in for a command.
# The Go build cache the tests filled, when there is one (.ci/run), spares
# the example Go runtime's cold build; it changes no output.
if [ -n "${ATOMIX_PLUGINS_TEST_GO_CACHE:-}" ]; then export GOCACHE="$ATOMIX_PLUGINS_TEST_GO_CACHE"; fi
failures=0
# One shell for the whole walk (a variable set on one line is there on the
# next), each line's output and status taken on its own.
while IFS= read -r line <&3; do
  [ -z "$line" ] && continue
  case "$line" in \#*) continue ;; esac
  expected="$(sed -nE 's/.*#[[:space:]]*([A-Z][A-Z_]+[A-Z])(:.*)?$/\1/p' <<<"$line")"
  echo "readme-walk \$ $line"
  set +eu
  eval "$line" >"$work/line.out" 2>&1 </dev/null
  status=$?
  set -eu
  sed 's/^/    /' "$work/line.out"
  if [ -n "$expected" ]; then
    if [ "$status" -eq 0 ] || ! grep -q "$expected" "$work/line.out"; then
      echo "readme-walk: expected $expected (exit $status)"
      failures=$((failures + 1))
    fi
  elif [ "$status" -ne 0 ]; then
    echo "readme-walk: failed with exit $status"
    failures=$((failures + 1))
  fi
done 3<"$work/walk.sh"

kill -- "-$server"; wait "$server" 2>/dev/null || true; server=""
untracked="$(git status --porcelain)"
if [ -n "$untracked" ]; then
  echo "readme-walk: the walk left files git does not know of:"; echo "$untracked"; failures=$((failures + 1))
fi
npm run build --silent && npm run lint --silent || failures=$((failures + 1))
if [ "$failures" -gt 0 ]; then echo "readme-walk: $failures failures"; exit 1; fi
echo "readme-walk: the README walk passed"
