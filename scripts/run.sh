#!/usr/bin/env bash
# The main command (README): installs what is missing, builds, and runs the agent in the
# foreground on localhost:4317 (OTLP/gRPC) and localhost:4318 (OTLP/HTTP), printing what it
# receives (debug exporter) and appending it as OTLP/JSON lines to ./dlotel-out.jsonl.
# Extra arguments go to `dlotel agent`, e.g. `scripts/run.sh --debug-verbosity detailed`.
# Ctrl-C (SIGINT) or SIGTERM stops it.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${DLOTEL_BUILD_DIR:-$here/build}

"$here/scripts/bootstrap.sh"
cmake -S "$here" -B "$build"
cmake --build "$build" -j"$(nproc)" --target dlotel_cli
# The output file lands where the user ran the command, not in the repository.
exec "$build/bin/dlotel" agent --exporter debug --exporter file --file-path ./dlotel-out.jsonl "$@"
