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

# Where serve keeps its data and which key it signs with, read as serve
# reads them (flags over the environment), so that the key made or used
# here is the one serve is given.
data="${ATOMIX_PLUGINS_DATA:-./data}"
signing="${ATOMIX_PLUGINS_SIGNING_KEY:-}"
previous=""
for arg in "$@"; do
  case "$previous" in
    --data | -d) data="$arg" ;;
    --signing-key) signing="$arg" ;;
  esac
  case "$arg" in
    --data=*) data="${arg#--data=}" ;;
    -d?*) data="${arg#-d}" ;;
    --signing-key=*) signing="${arg#--signing-key=}" ;;
  esac
  previous="$arg"
done
if [ -z "$data" ]; then
  echo "npm start: --data names no folder" >&2
  exit 2
fi
# A key this script picks for itself must be one only this user could have
# put there: another user's file, a link, or a key others can read (or a
# folder others can write, where the key can be swapped) would sign
# provenance with a key someone else holds.
key="$data/signing.key"
if [ -z "$signing" ]; then
  if [ -L "$key" ] || { [ -e "$key" ] && { [ ! -f "$key" ] || [ ! -O "$key" ] || [ -n "$(find "$key" -maxdepth 0 -perm /077)" ]; }; }; then
    echo "npm start: $key is not a private key file of this user's (a regular file, owned by $(id -un), mode 600): remove it, or name a key with --signing-key FILE" >&2
    exit 2
  fi
  if [ -d "$data" ] && [ -n "$(find "$data" -maxdepth 0 -perm /002)" ]; then
    echo "npm start: other users can write to $data, where the signing key is kept: chmod go-w $data, or choose another folder with --data DIR" >&2
    exit 2
  fi
fi

npm run build --silent

args=("$@")
if [ -z "$signing" ]; then
  if [ ! -e "$key" ]; then
    mkdir -p -m 700 "$data"
    node dist/src/cli/main.js keygen -o "$data/signing" >/dev/null
    echo "npm start: made the signing key $key; runtimes trust $data/signing.pub (pull --trust-key $data/signing.pub)"
  fi
  args+=(--signing-key "$key")
fi
exec node --max-semi-space-size=4 dist/src/cli/main.js serve "${args[@]}"
