#!/usr/bin/env bash
# The Debian packages `make up` and `make test` run: nginx (the edge, e2e tests), promtool
# (Prometheus's, for the alert-rule tests), redis-server (fault tests run their own Redis).
# Installs what is missing when run as root; otherwise says the one command to run.
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deps: installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    # policy-rc.d (or no init system) keeps the packages' own services from starting here.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "deps: missing ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
