#!/usr/bin/env bash
# Install what the dashboard's browser tests drive: Debian's Chromium and playwright-core (the Node
# automation library, which never downloads a browser of its own; the tests point it at /usr/bin/chromium).
# Idempotent and quiet when everything is already there. Exit status 0 means both are usable.
set -euo pipefail
cd "$(dirname "$0")/.."

# parallel test workers may call this at once: one installs, the others wait and then find it done
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/depu-install-browser.lock"
    flock -w 900 9
fi

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" != "0" ]; then
        echo "install_browser: chromium is missing and installing it needs root" >&2
        exit 2
    fi
    echo "install_browser: installing chromium (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if [ ! -f node_modules/playwright-core/package.json ]; then
    command -v npm >/dev/null 2>&1 || { echo "install_browser: npm is missing" >&2; exit 2; }
    echo "install_browser: installing playwright-core" >&2
    npm install --no-audit --no-fund --loglevel=error >/dev/null
fi

chromium --version >/dev/null
node -e "require('playwright-core')" >/dev/null
