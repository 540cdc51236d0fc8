# Installs Debian packages that are missing, for .ci/run (the tests) and
# scripts/start.sh (`npm start`, the main job). Sourced, not run:
#   install_debian_packages <who> <required|optional> <package>...
# Prints one line naming what it installs and why it is needed. As root it
# runs apt-get; otherwise through sudo when sudo needs no password. When it
# cannot (no apt-get, no root, no password-less sudo) it prints the command
# to run and returns 1 (required: the caller stops) or 0 (optional: the
# caller goes on without them).

missing_debian_packages() {
  local p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || printf '%s\n' "$p"
  done
}

install_debian_packages() {
  local who="$1" need="$2"
  shift 2
  local missing=()
  if ! command -v dpkg >/dev/null; then
    echo "$who: not a Debian system (no dpkg): install the equivalents of $* yourself" >&2
    [ "$need" = optional ]
    return
  fi
  mapfile -t missing < <(missing_debian_packages "$@")
  [ "${#missing[@]}" -eq 0 ] && return 0
  local as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      as_root=(sudo DEBIAN_FRONTEND=noninteractive)
    else
      echo "$who: ${missing[*]} missing; install them as root: sudo apt-get install -y ${missing[*]}" >&2
      [ "$need" = optional ]
      return
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "$who: installing ${missing[*]} (apt-get)"
  "${as_root[@]}" apt-get update -qq || return 1
  # Package scripts would start system daemons (tinyproxy on 8888, nginx on
  # 80), which without an init system, or with the port taken, fail the
  # install; what needs them starts its own, on ports of its own. A
  # policy-rc.d that forbids starting services (exit 101) is in place for
  # this install, unless the machine has its own.
  local policy=/usr/sbin/policy-rc.d added_policy="" installed=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
    added_policy=1
  fi
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" || installed=$?
  if [ -n "$added_policy" ]; then "${as_root[@]}" rm -f "$policy"; fi
  return "$installed"
}
