#!/usr/bin/env bash
# Fuzzes the tunnel header codec (Sources/LoomMesh/TunnelHeader.swift) with libFuzzer and
# AddressSanitizer, the codec compiled alone with Tests/Fuzz/TunnelHeaderFuzz.swift.
# New inputs go into Tests/Fuzz/corpus/tunnel-header; at the end the corpus is merged
# down to the inputs that add coverage. A crash leaves crash-* in .build-fuzz/tunnel-header/
# and exits non-zero. See Tests/Fuzz/README.md.
#   scripts/fuzz-tunnel-header.sh [SECONDS]     (default 300; NICE=10)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

SECONDS_TO_RUN=${1:-300}
CORPUS=Tests/Fuzz/corpus/tunnel-header
OUT=.build-fuzz/tunnel-header
BIN=$OUT/fuzz-tunnel-header

shopt -s nullglob
runtime=("$(dirname "$(command -v swiftc)")"/../lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a)
shopt -u nullglob
if ((${#runtime[@]} == 0)); then
    echo "this toolchain has no libFuzzer runtime (lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a)" >&2
    exit 2
fi

mkdir -p "$OUT" "$CORPUS"
swiftc -sanitize=fuzzer,address -parse-as-library -O -use-ld=lld -module-name TunnelHeaderFuzz \
    Sources/LoomMesh/TunnelHeader.swift Tests/Fuzz/TunnelHeaderFuzz.swift -o "$BIN"

# Crash and leak artifacts go to $OUT; the log keeps libFuzzer's final statistics.
set +e
nice -n "${NICE:-10}" "$BIN" -max_total_time="$SECONDS_TO_RUN" -max_len=600 -print_final_stats=1 \
    -artifact_prefix="$OUT/" "$CORPUS" 2>&1 | tee "$OUT/fuzz.log" \
    | grep -E "^#[0-9]+[[:space:]]+(INITED|pulse|DONE)|^stat::|ERROR|==[0-9]+==|Fatal|SUMMARY"
status=${PIPESTATUS[0]}
set -e

# Keep only the inputs that add coverage.
rm -rf "$OUT/merged"
mkdir "$OUT/merged"
"$BIN" -merge=1 -max_len=600 "$OUT/merged" "$CORPUS" >"$OUT/merge.log" 2>&1
find "$CORPUS" -type f -delete
cp "$OUT/merged"/* "$CORPUS"/
echo "corpus: $(find "$CORPUS" -type f | wc -l) files, $(cat "$CORPUS"/* | wc -c) bytes"
exit "$status"
