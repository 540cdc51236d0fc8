# Sourced by .ci/run and scripts/start.sh: stops with one line unless this
# Node.js is one package.json's engines accept (^20.17.0 || >=22.9.0).
require_node() {
  local who="$1" found
  found="$(node -p 'process.versions.node' 2>/dev/null || echo none)"
  if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit((a === 20 && b >= 17) || (a === 22 && b >= 9) || a > 22 ? 0 : 1)' 2>/dev/null; then
    echo "$who: Node.js 20.17 or later (or 22.9 or later) is needed, with npm; found $found" >&2
    exit 1
  fi
}
