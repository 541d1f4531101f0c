#!/usr/bin/env bash
# Installs the npm packages the tests compare against (pinned in tests/fixtures/npm/package.json).
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures/npm"
if [ ! -f node_modules/.installed-stamp ] || [ package.json -nt node_modules/.installed-stamp ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
  touch node_modules/.installed-stamp
fi
