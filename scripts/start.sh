#!/usr/bin/env bash
# `npm start` (the README's first command): the server on this machine with
# the embedded store in ./data and the bundled examples, Node.js and Go
# plugins both built. Before the server, what its builds need and the
# machine lacks is installed (Debian: bubblewrap for the build sandbox, Go
# and gcc for Go plugins and the example Go runtime, Debian's grpc-go
# sources for that runtime); without root or password-less sudo, one line
# says what to install and the server starts anyway: it serves what is
# stored, and builds once the sandbox is there, without a restart.
# ATOMIX_PLUGINS_NO_INSTALL=1 skips the install step.
# Unless told otherwise (--signing-key), it signs what it builds with
# <data>/signing.key, made on the first start; <data>/signing.pub is the
# key runtimes trust (`pull --trust-key data/signing.pub`).
# Arguments go to `serve`: npm start -- --listen 0.0.0.0:5679
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/require-node.sh
source scripts/require-node.sh
require_node "npm start"
# shellcheck source=scripts/debian-packages.sh
source scripts/debian-packages.sh

if [ -z "${ATOMIX_PLUGINS_NO_INSTALL:-}" ]; then
  install_debian_packages "npm start" optional \
    bubblewrap golang-go gcc libc6-dev \
    golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev ||
    echo "npm start: the install failed; the server starts without it (builds are refused until the sandbox works)" >&2
fi

npm run build --silent

data="./data"
signing=""
previous=""
for arg in "$@"; do
  case "$previous" in
    --data) data="$arg" ;;
    --signing-key) signing="$arg" ;;
  esac
  case "$arg" in
    --data=*) data="${arg#--data=}" ;;
    --signing-key=*) signing="${arg#--signing-key=}" ;;
  esac
  previous="$arg"
done
args=("$@")
if [ -z "$signing" ]; then
  if [ ! -e "$data/signing.key" ]; then
    mkdir -p "$data"
    node dist/src/cli/main.js keygen -o "$data/signing" >/dev/null
    echo "npm start: made the signing key $data/signing.key; runtimes trust $data/signing.pub (pull --trust-key $data/signing.pub)"
  fi
  args+=(--signing-key "$data/signing.key")
fi
exec node --max-semi-space-size=4 dist/src/cli/main.js serve "${args[@]}"
