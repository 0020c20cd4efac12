#!/usr/bin/env bash
# Installs everything dlotel's build and tests need on a fresh Debian 12 machine (as root),
# and fetches DuckDB from npm as DESIGN.md section 2 says. Safe to run again: each step
# checks first and does nothing when its work is already done.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
deps="$here/.deps"

packages=(
    build-essential cmake pkg-config git ca-certificates curl
    clang libclang-rt-14-dev llvm clang-format
    libuv1-dev libnghttp2-dev libwslay-dev libcurl4-openssl-dev
    libjansson-dev libyaml-dev zlib1g-dev libzstd-dev libjwt-dev libssl-dev
    libprotobuf-c-dev protobuf-c-compiler libcmocka-dev
    python3 python3-pytest python3-grpcio python3-requests python3-websockets python3-jwt python3-cryptography python3-setuptools
    python3-venv python3-pip openssl util-linux procps
    valgrind zstd
)

# Node.js runs the OpenTelemetry JS SDK in the tests. A machine that already has a node (for
# example from NodeSource, which bundles npm and conflicts with Debian's npm) keeps it.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    # dpkg-query prints "install ok installed" only for a package that is fully there.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# llhttp: Debian's node-llhttp ships the C sources and header, which CMake compiles into the
# build. Installing the package would drag in Debian's nodejs (which conflicts with a NodeSource
# node), so when it is not installed we unpack the same .deb into .deps instead.
if [ ! -f /usr/share/llhttp/llhttp.c ] && [ ! -f "$deps/llhttp/usr/share/llhttp/llhttp.c" ]; then
    echo "bootstrap: unpacking node-llhttp's C sources"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -q node-llhttp >/dev/null)
    mkdir -p "$deps/llhttp"
    dpkg-deb -x "$tmp"/node-llhttp_*.deb "$deps/llhttp"
    rm -rf "$tmp"
fi

# DuckDB is not in Debian 12. Header from the duckdb npm package, library from the
# node-bindings package of the same release. A system DuckDB found by CMake wins over this.
duck="$deps/duckdb"
if [ ! -f "$duck/include/duckdb.h" ] || [ ! -f "$duck/lib/libduckdb.so" ]; then
    echo "bootstrap: fetching DuckDB 1.4.4 with npm pack"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$duck/include" "$duck/lib"
    (cd "$tmp" && npm pack --silent duckdb@1.4.4 @duckdb/node-bindings-linux-x64@1.4.4-r.4 >/dev/null)
    tar -xzf "$tmp"/duckdb-1.4.4.tgz -C "$tmp" package/src/duckdb/src/include/duckdb.h
    cp "$tmp/package/src/duckdb/src/include/duckdb.h" "$duck/include/duckdb.h"
    rm -rf "$tmp/package"
    tar -xzf "$tmp"/duckdb-node-bindings-linux-x64-1.4.4-r.4.tgz -C "$tmp" package/libduckdb.so
    cp "$tmp/package/libduckdb.so" "$duck/lib/libduckdb.so"
    rm -rf "$tmp"
    trap - EXIT
fi

# The OpenTelemetry JS SDK and its exporters, for the integration tests.
js="$here/tests/integration/js"
if [ -f "$js/package.json" ] && [ ! -d "$js/node_modules/@opentelemetry/sdk-trace" ]; then
    echo "bootstrap: installing the OpenTelemetry JS SDK for the tests"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "bootstrap: ready"
