#!/usr/bin/env bash
# Refresh the vendored front-end assets (KaTeX, iframe-worker) from npm. Run by hand when
# upgrading; the site itself never fetches anything from another host.
set -euo pipefail
KATEX_VERSION=${KATEX_VERSION:-0.19.1}
IFRAME_WORKER_VERSION=${IFRAME_WORKER_VERSION:-1.0.4}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm install --silent "katex@$KATEX_VERSION" "iframe-worker@$IFRAME_WORKER_VERSION")
dist="$tmp/node_modules/katex/dist"
dest="$root/docs/assets/katex"
rm -rf "$dest" && mkdir -p "$dest/contrib" "$dest/fonts"
cp "$dist/katex.min.js" "$dest/"
cp "$dist/contrib/auto-render.min.js" "$dest/contrib/"
cp "$dist"/fonts/*.woff2 "$dest/fonts/"
cp "$tmp/node_modules/katex/LICENSE" "$dest/LICENSE"
# Keep only the woff2 sources: every browser that runs the site reads woff2, and the .woff/.ttf
# fallbacks are not shipped.
sed -E 's/,url\(fonts\/[^)]*\.woff\) format\("woff"\)//g; s/,url\(fonts\/[^)]*\.ttf\) format\("truetype"\)//g' \
  "$dist/katex.min.css" > "$dest/katex.min.css"
mkdir -p "$root/docs/assets/iframe-worker"
cp "$tmp/node_modules/iframe-worker/shim/index.js" "$root/docs/assets/iframe-worker/shim.js"
cp "$tmp/node_modules/iframe-worker/LICENSE" "$root/docs/assets/iframe-worker/LICENSE"
echo "vendored katex $KATEX_VERSION and iframe-worker $IFRAME_WORKER_VERSION into docs/assets/"
