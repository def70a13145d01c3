#!/usr/bin/env bash
# Install what the dashboard's browser test drives: Debian's Chromium (apt, as root, like the bubblewrap
# target) and playwright-core (the Node automation library from package.json, which never downloads a
# browser of its own; the test points it at /usr/bin/chromium). Part of `make deps`; tests never call it.
# Idempotent and quiet when everything is already there. Exit status 0 means both are usable.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "need Chromium for the dashboard's browser test: sudo apt-get install chromium fonts-dejavu-core" >&2
        exit 1
    fi
    echo "install_browser: installing chromium (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends chromium fonts-dejavu-core \
        || { apt-get update -q && apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends chromium fonts-dejavu-core; }
fi

if [ ! -f node_modules/playwright-core/package.json ]; then
    command -v npm >/dev/null 2>&1 || { echo "install_browser: npm is missing" >&2; exit 1; }
    npm install --no-audit --no-fund --loglevel=error
fi

chromium --version >/dev/null
node -e "require('playwright-core')" >/dev/null
