#!/usr/bin/env bash
# Re-fetches the third-party browser files the bff serves (bff/assets/vendor/) from the npm
# registry at pinned versions, checking each package's published integrity. They are committed:
# neither the build nor CI runs this; run it to update one (change its version and integrity).
set -euo pipefail
cd "$(dirname "$0")/../bff/assets/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name version integrity file-in-package target
fetch() {
    local name=$1 version=$2 integrity=$3 file=$4 target=$5
    (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null)
    local tgz="$tmp/$name-$version.tgz"
    local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    [ "$got" = "$integrity" ] || { echo "$name@$version: integrity $got, expected $integrity" >&2; exit 1; }
    tar -xzf "$tgz" -C "$tmp" "package/$file"
    cp "$tmp/package/$file" "$target"
    echo "$target ← $name@$version"
}

fetch redoc 2.5.4 \
    'sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==' \
    bundles/redoc.standalone.js redoc-2.5.4.standalone.js
