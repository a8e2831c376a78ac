#!/usr/bin/env bash
# Install the dashboard's chart library from the npm registry and vendor it into static/ (idempotent).
set -euo pipefail
cd "$(dirname "$0")/../slime_rl/dashboard"
vendor=static/vendor
if [[ -f "${vendor}/uPlot.iife.min.js" && -f "${vendor}/uPlot.min.css" ]]; then exit 0; fi
npm install --no-audit --no-fund --loglevel=error >/dev/null
mkdir -p "${vendor}"
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css "${vendor}/"
echo "dashboard: vendored uPlot into ${vendor}"
