#!/usr/bin/env bash
# CI job: build the C library with -fsanitize=address,undefined (cmake -DPYRT_SANITIZE=ON) into
# its own build directory and run the kernel, loader (malformed files + mutation sweep) and
# generation tests against it, with the ASan runtime preloaded into Python.
# Runs in CI's venv after the main tests, from the repository root. ~2 minutes on 2 cores
# (build 15 s, mutation sweep ~15 s, greedy generation on SmolLM2 ~60 s).
set -euo pipefail
cd "$(dirname "$0")/../.."

# under build/ (git-ignored), beside the main build
BUILD="${PYRT_SANITIZE_BUILD:-build/sanitize}"
cmake -S . -B "$BUILD" -DPYRT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null

CC_BIN="${CC:-cc}"
ASAN_RT="$("$CC_BIN" -print-file-name=libasan.so)"
if [ ! -e "$ASAN_RT" ]; then
  echo "sanitize: cannot find libasan.so via $CC_BIN -print-file-name" >&2
  exit 1
fi

export PYRT_LIB="$PWD/$BUILD/libpyrt.so"
export LD_PRELOAD="$ASAN_RT"
# detect_leaks=0: CPython itself "leaks" at exit; allocator_may_return_null=1: a huge request
# must come back as NULL -> PYRT_ERR_OOM -> MemoryError (tested), not abort the process.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYRT_MUT_HANG_S=10          # sanitized code is ~3x slower; a hang is still a hang
export PYRT_MUT_SCALE=0.5          # half the CI mutation sweep (~2,000 mutants)

# The job must be able to fail: an out-of-bounds read through the C ABI has to be reported.
CANARY_LOG="$(mktemp)"
if python - <<'PY' 2>"$CANARY_LOG"; then
import numpy as np
from pyrt._native import ffi, lib
src = np.zeros(10, np.uint8)                    # one Q8_0 block needs 34 bytes
dst = np.zeros(32, np.float32)
lib.pyrt_dequantize(lib.PYRT_KERNELS_SCALAR, lib.PYRT_TYPE_Q8_0, ffi.cast("void *", src.ctypes.data),
                    ffi.cast("float *", dst.ctypes.data), 32)
PY
  echo "sanitize: the canary overflow was NOT detected; is $PYRT_LIB instrumented?" >&2
  exit 1
fi
if ! grep -q "AddressSanitizer: heap-buffer-overflow" "$CANARY_LOG"; then
  echo "sanitize: the canary died without an ASan report:" >&2
  cat "$CANARY_LOG" >&2
  exit 1
fi
rm -f "$CANARY_LOG"
echo "sanitize: ASan is live ($PYRT_LIB)"

# --capture=sys: pytest captures Python's sys.stdout/stderr only, so a sanitizer report (written to
# fd 2 by the C runtime right before it exits the process) reaches the log instead of dying unseen
# inside pytest's fd capture.
python -m pytest -q --capture=sys -p no:cacheprovider \
  tests/test_kernels.py tests/test_ops.py tests/test_sampler.py \
  tests/test_gguf_malformed.py tests/test_mutation.py tests/test_registry.py
# generation on the real model, every weight type's path (the logit-comparison half of
# test_fidelity.py repeats the same forward passes; ~80 s saved)
python -m pytest -q --capture=sys -p no:cacheprovider tests/test_fidelity.py -k greedy
