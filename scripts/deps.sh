#!/usr/bin/env bash
# The one list of system packages loraplex needs (Debian 12). Installs the missing ones; a no-op otherwise.
# `scripts/deps.sh --build-only` (or LORAPLEX_DEPS=build in the environment, which `make build` passes on)
# installs what building needs and leaves out what only the tests and the fuzzers run (the Dockerfile's
# builder stage: `LORAPLEX_DEPS=build make build`).
set -euo pipefail
build_only=0
if [ "${1:-}" = "--build-only" ] || [ "${LORAPLEX_DEPS:-}" = "build" ]; then build_only=1; fi
PKGS=(
  build-essential cmake ninja-build pkg-config
  libfmt-dev nlohmann-json3-dev libboost1.81-dev libpcre2-dev libutf8proc-dev libcli11-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)
TEST_PKGS=(
  clang libclang-rt-14-dev  # make fuzz (libFuzzer)
  chromium  # headless, for the dashboard's browser test (tests/e2e/dashboard.mjs)
  haproxy   # the load balancer of scripts/cluster.sh (make cluster, tests/e2e/cluster.mjs)
  lld       # a faster linker for the three test trees (used when present)
)
[ "$build_only" = 1 ] || PKGS+=("${TEST_PKGS[@]}")
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the reference implementations in the tests; any install that provides the commands
# will do (a machine may have them from outside Debian, where Debian's npm package would conflict).
if [ "$build_only" = 0 ]; then
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
