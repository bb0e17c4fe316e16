#!/usr/bin/env bash
# The headless browser the browser tests drive (playwright-core, no browser download of
# its own: the registries reachable here are npm and Debian's, so Debian's chromium it is).
#
#   scripts/browser.sh install   installs chromium with apt when missing (scripts/apt-install.sh)
#   scripts/browser.sh path      prints the executable's path (exit 3 when absent)
#
# CHROMIUM_PATH overrides where the executable is looked for.
set -euo pipefail

log() { printf '[browser] %s\n' "$*" >&2; }
die() {
  printf '[browser] error: %s\n' "$*" >&2
  exit 1
}

find_chromium() {
  local candidate
  for candidate in "${CHROMIUM_PATH:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

cmd_install() {
  local path started
  if path="$(find_chromium)"; then
    log "chromium: $path"
    return 0
  fi
  started=$SECONDS
  log "chromium not found: installing it with apt (a few minutes on a fresh machine)"
  # Fonts come along as dependencies; without recommends the install stays lean.
  bash "$(dirname -- "${BASH_SOURCE[0]}")/apt-install.sh" chromium
  path="$(find_chromium)" || die "chromium still missing after apt-get install"
  log "chromium: $path (installed in $((SECONDS - started)) s)"
}

case "${1:-}" in
  install) cmd_install ;;
  path) find_chromium || exit 3 ;;
  *)
    echo "usage: $0 install|path" >&2
    exit 2
    ;;
esac
