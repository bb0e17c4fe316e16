#!/usr/bin/env bash
# Installs Debian packages with apt when they are missing: the one way this project installs
# system packages (PostgreSQL and Redis for scripts/local-services.mjs, chromium for
# scripts/browser.sh, shellcheck for CI's lint).
#
#   scripts/apt-install.sh PACKAGE...
#
# Packages already installed are skipped; for the others `apt-get update` runs once, then
# `apt-get install --no-install-recommends`. As root directly, else through `sudo -n`.
# Progress goes to stderr; exit 1 when something could not be installed.
set -euo pipefail

log() { printf '[apt-install] %s\n' "$*" >&2; }
die() {
  printf '[apt-install] error: %s\n' "$*" >&2
  exit 1
}

(($# > 0)) || die "usage: $0 PACKAGE..."

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
for package in "$@"; do
  installed "$package" || missing+=("$package")
done
((${#missing[@]} > 0)) || exit 0

sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    die "missing packages (${missing[*]}) and not root: install them with apt-get install ${missing[*]}"
  fi
fi
command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get here"

started=$SECONDS
log "apt-get update"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
log "apt-get install -y ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
log "installed ${missing[*]} in $((SECONDS - started)) s"
