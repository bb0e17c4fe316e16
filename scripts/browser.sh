#!/usr/bin/env bash
# The headless browser the browser tests drive (playwright-core, no browser download of
# its own: the registries reachable here are npm and Debian's, so Debian's chromium it is).
#
#   scripts/browser.sh install   installs chromium with apt when missing (root or sudo -n)
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
  local path started sudo=()
  if path="$(find_chromium)"; then
    log "chromium: $path"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "chromium is missing and this is not root: apt-get install chromium"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "chromium is missing and there is no apt-get here"
  started=$SECONDS
  log "chromium not found: apt-get update && apt-get install chromium (a few minutes on a fresh machine)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  # Fonts come along as dependencies; without recommends the install stays lean.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
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
