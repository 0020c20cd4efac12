#!/usr/bin/env bash
# The main command (README): installs what is missing, builds, and runs `dlotel serve` in the
# foreground: the agent on localhost:4317 (OTLP/gRPC) and localhost:4318 (OTLP/HTTP) with its
# embedded sink, which stores everything in DuckDB and Parquet under ~/.local/share/dlotel
# (DATALAYER_OTEL_DATA_DIR to change it). No other service is needed.
# Extra arguments go to `dlotel serve`, e.g. `scripts/run.sh --exporter debug`.
# Ctrl-C (SIGINT) or SIGTERM stops it.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${DLOTEL_BUILD_DIR:-$here/build}

"$here/scripts/bootstrap.sh"
cmake -S "$here" -B "$build"
cmake --build "$build" -j"$(nproc)" --target dlotel_cli dlotel_sink
exec "$build/bin/dlotel" serve "$@"
