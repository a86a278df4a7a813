#!/usr/bin/env bash
# Vendor Swagger UI into api/assets/swagger-ui/ from the npm package swagger-ui-dist, so /docs
# works offline and under `script-src 'self'` (no CDN, no inline script).
#
#   scripts/vendor-swagger-ui.sh [VERSION]    # default: api/assets/swagger-ui/VERSION
#
# Copies only what the page loads plus the licence files; index.html and init.js are ours and are
# left alone. swagger-ui-bundle.js.LICENSE.txt holds the notices of the libraries bundled into
# swagger-ui-bundle.js (the bundle's first line points to it), so it ships with the bundle.
# Source maps are left out (3 MB); the CSS's sourceMappingURL only matters with devtools open.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dest="$GENQ_ROOT/api/assets/swagger-ui"
version="${1:-$(cat "$dest/VERSION" 2>/dev/null || echo 5.35.0)}"
files=(
    swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png LICENSE
)

command -v npm >/dev/null || { warn "npm not found: install Node.js first"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say "fetching swagger-ui-dist@$version from npm"
# `npm pack` only downloads the tarball; nothing is installed and no install scripts run.
tarball="$(cd "$tmp" && npm pack --silent "swagger-ui-dist@$version" | tail -1)"
tar -xzf "$tmp/$tarball" -C "$tmp"
got="$(node -p 'require(process.argv[1]).version' "$tmp/package/package.json")"
[ "$got" = "$version" ] || { warn "asked for $version, npm gave $got"; exit 1; }

mkdir -p "$dest"
for f in "${files[@]}"; do install -m 0644 "$tmp/package/$f" "$dest/$f"; done
# NOTICE is in 5.x today; take it while it is there, drop a stale copy if it goes.
if [ -f "$tmp/package/NOTICE" ]; then
    install -m 0644 "$tmp/package/NOTICE" "$dest/NOTICE"
else
    rm -f "$dest/NOTICE"
fi
printf '%s\n' "$version" >"$dest/VERSION"

say "swagger-ui $version in ${dest#"$GENQ_ROOT"/} ($(du -sh "$dest" | cut -f1))"
