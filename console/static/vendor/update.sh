#!/usr/bin/env bash
# Re-vendor the console's browser libraries (and the tests' axe-core) from the npm
# registry at the pinned versions below. Development time only: nothing is fetched when
# the package is installed or served. To update, change a version, run this script,
# check the console in a browser (make test runs the browser suite), commit the result.
set -euo pipefail
HTMX=2.0.11
UPLOT=1.6.32
AXE=4.14.1

here="$(cd "$(dirname "$0")" && pwd)"
tests="$here/../../../tests/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "htmx.org@$HTMX" "uplot@$UPLOT" "axe-core@$AXE" >/dev/null
for f in *.tgz; do mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done

cp "htmx.org-$HTMX/package/dist/htmx.min.js" "$here/htmx.min.js"
cp "htmx.org-$HTMX/package/LICENSE" "$here/htmx.LICENSE"
cp "uplot-$UPLOT/package/dist/uPlot.iife.min.js" "$here/uPlot.iife.min.js"
cp "uplot-$UPLOT/package/dist/uPlot.min.css" "$here/uPlot.min.css"
cp "uplot-$UPLOT/package/LICENSE" "$here/uPlot.LICENSE"
mkdir -p "$tests"
cp "axe-core-$AXE/package/axe.min.js" "$tests/axe.min.js"
cp "axe-core-$AXE/package/LICENSE" "$tests/axe-core.LICENSE"

cat > "$here/VERSIONS" <<VERSIONS
# package@version  file  sha256 (written by update.sh)
htmx.org@$HTMX  htmx.min.js  $(sha256sum "$here/htmx.min.js" | cut -d' ' -f1)
uplot@$UPLOT  uPlot.iife.min.js  $(sha256sum "$here/uPlot.iife.min.js" | cut -d' ' -f1)
uplot@$UPLOT  uPlot.min.css  $(sha256sum "$here/uPlot.min.css" | cut -d' ' -f1)
axe-core@$AXE  ../../../tests/vendor/axe.min.js  $(sha256sum "$tests/axe.min.js" | cut -d' ' -f1)
VERSIONS
echo "vendored htmx.org@$HTMX, uplot@$UPLOT, axe-core@$AXE"
