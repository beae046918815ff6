#!/usr/bin/env bash
# Runs every test tier that CI runs: one debug build, the unit tests (swift test), the
# format check, then the integration tests (pytest, as root, in network namespaces the
# tests create and delete). See Tests/README.md.
#   scripts/test.sh            all tiers
#   scripts/test.sh unit       build + unit tests + format check only
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

tier=${1:-all}

echo "== build (debug, once)"
swift build --build-tests

echo "== format check (swift format lint --strict)"
swift format lint --strict --recursive Package.swift Sources Tests

echo "== unit tests"
swift test --skip-build

if [[ $tier == unit ]]; then exit 0; fi

if [[ $EUID -ne 0 ]]; then
    echo "integration tests need root (network namespaces, nf_tables); run: sudo scripts/test.sh" >&2
    exit 1
fi
echo "== integration tests"
export LOOMD="$PWD/.build/debug/loomd"
python3 -m pytest -q -p no:cacheprovider Tests/Integration
