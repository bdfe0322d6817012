#!/usr/bin/env bash
# What the browser tests (tools/notifyctl/tests/browser.rs) need: Debian's chromium (no browser
# download: playwright-core drives this one), node and npm, and e2e/browser's two npm packages
# at the versions its package-lock.json pins. Installs what is missing when run as root;
# otherwise says the one command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "browser-deps: installing ${missing[*]} (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "browser-deps: missing ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi
# npm ci again only when the lock file changed since the last install.
stamp=e2e/browser/node_modules/.lock-installed
if ! cmp -s e2e/browser/package-lock.json "$stamp" 2>/dev/null; then
    (cd e2e/browser && npm ci --no-audit --no-fund --loglevel=error)
    cp e2e/browser/package-lock.json "$stamp"
fi
