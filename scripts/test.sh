#!/usr/bin/env bash
# Runs every test tier that CI runs: one build, the unit tests (swift test), the
# format check, then the integration tests (pytest, as root, in network namespaces the
# tests create and delete). See Tests/README.md.
#   scripts/test.sh            all tiers
#   scripts/test.sh unit       build + unit tests + format check only
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

tier=${1:-all}

# One build for every tier: release (what users run: the integration tests measure the
# optimised relay, e.g. that it allocates nothing per event) with -enable-testing so the
# unit tests can use @testable imports. Its own scratch path keeps .build/ for bench.sh.
build=(-c release -Xswiftc -enable-testing --scratch-path .build-test)
echo "== build (release with testing, once)"
swift build "${build[@]}" --build-tests

echo "== format check (swift format lint --strict)"
swift format lint --strict --recursive Package.swift Sources Tests

echo "== unit tests"
swift test "${build[@]}" --skip-build

if [[ $tier == unit ]]; then exit 0; fi

if [[ $EUID -ne 0 ]]; then
    echo "integration tests need root (network namespaces, nf_tables); run: sudo scripts/test.sh" >&2
    exit 1
fi
echo "== integration tests"
export LOOMD="$PWD/.build-test/release/loomd"
python3 -m pytest -q -p no:cacheprovider Tests/Integration
