#!/usr/bin/env bash
# The test command (README): installs what is missing (scripts/bootstrap.sh), configures build/
# with warnings as errors, builds everything, and runs every test ctest knows: unit tests, fuzz
# corpus replays and the integration suite against the real daemon. Exits non-zero when anything
# fails. Extra arguments go to ctest, e.g. `scripts/test.sh -L unit` or `-R integration.http`.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=${DLOTEL_BUILD_DIR:-build}

scripts/bootstrap.sh
cmake -S . -B "$build" -DDLOTEL_WERROR=ON
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure "$@"
