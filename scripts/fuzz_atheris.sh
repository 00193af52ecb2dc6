#!/usr/bin/env bash
# The one-off coverage-guided fuzz runs (tests/fuzz/README.md), scripted so anyone can rerun them:
#   bash scripts/fuzz_atheris.sh [SECONDS_PER_TARGET]      # default 600
# Needs `pip install atheris` (CPython 3.8-3.12, x86-64 Linux) and a build in build/.
# Fuzzes a scratch copy of the committed corpus (kept small); findings land in $OUT/*-crash-*.
# Set SANITIZE=1 to run against the ASan+UBSan build (as .ci/jobs/sanitize.sh makes it).
# The mutation sweep at scale is the other one-off run: python scripts/mutate_100k.py (100,000
# mutants, ~2 h on 2 cores; --master N picks the mutant set, --replay SEED:I rebuilds one).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-600}"
OUT="${OUT:-$(mktemp -d /tmp/pyrt-fuzz.XXXX)}"
python -c "import atheris" 2>/dev/null || { echo "fuzz: pip install atheris first" >&2; exit 1; }
if [ "${SANITIZE:-0}" = 1 ]; then
  cmake -S . -B build/sanitize -DPYRT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/sanitize -j"$(nproc)" >/dev/null
  export PYRT_LIB="$PWD/build/sanitize/libpyrt.so" LD_PRELOAD="$(cc -print-file-name=libasan.so)"
  export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1"
fi
cp -r tests/fuzz/corpus/loader tests/fuzz/corpus/tokenizer "$OUT/"
for target in loader tokenizer; do
  echo "fuzz: $target for $SECS s (corpus copy $OUT/$target)"
  PYTHONPATH=. python "tests/fuzz/fuzz_$target.py" "$OUT/$target" -max_total_time="$SECS" -timeout=2 \
    -rss_limit_mb=4096 -artifact_prefix="$OUT/$target-"
done
echo "fuzz: done; findings (if any): $(ls "$OUT"/*-crash-* "$OUT"/*-timeout-* "$OUT"/*-oom-* 2>/dev/null | wc -l) in $OUT"
