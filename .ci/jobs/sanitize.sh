#!/usr/bin/env bash
# CI job: build the C library with -fsanitize=address,undefined (cmake -DPYRT_SANITIZE=ON) into
# its own build directory and run the kernel, loader (malformed files + mutation sweep) and
# generation tests against it (scalar, 32-element, K-quant and IQ4 kernels; SmolLM2 and the
# K-quant Gemma model), with the ASan runtime preloaded into Python. Canaries first prove that
# ASan and UBSan both report. Runs in CI's venv after the main tests, from the repository root.
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

# The job must be able to fail: an out-of-bounds read through the C ABI has to be reported by
# ASan, and a misaligned float store by UBSan (each canary must kill its process with the report).
canary() {  # canary NAME EXPECTED-REPORT PYTHON-CODE
  local log
  log="$(mktemp)"
  if python -c "$3" 2>"$log"; then
    echo "sanitize: the $1 canary was NOT detected; is $PYRT_LIB instrumented?" >&2
    exit 1
  fi
  if ! grep -q "$2" "$log"; then
    echo "sanitize: the $1 canary died without the expected report ($2):" >&2
    cat "$log" >&2
    exit 1
  fi
  rm -f "$log"
  echo "sanitize: $1 is live ($2)"
}
canary ASan "AddressSanitizer: heap-buffer-overflow" '
import numpy as np
from pyrt._native import ffi, lib
src = np.zeros(10, np.uint8)                    # one Q8_0 block needs 34 bytes
dst = np.zeros(32, np.float32)
lib.pyrt_dequantize(lib.PYRT_KERNELS_SCALAR, lib.PYRT_TYPE_Q8_0, ffi.cast("void *", src.ctypes.data),
                    ffi.cast("float *", dst.ctypes.data), 32)
'
canary UBSan "runtime error: store to misaligned address" '
import numpy as np
from pyrt._native import ffi, lib
src = np.zeros(64, np.uint8)                    # in bounds: only the alignment is wrong
dst = np.zeros(40, np.float32)
lib.pyrt_dequantize(lib.PYRT_KERNELS_SCALAR, lib.PYRT_TYPE_Q8_0, ffi.cast("void *", src.ctypes.data),
                    ffi.cast("float *", ffi.cast("char *", dst.ctypes.data) + 1), 32)
'
echo "sanitize: testing $PYRT_LIB"

# --capture=sys: pytest captures Python's sys.stdout/stderr only, so a sanitizer report (written to
# fd 2 by the C runtime right before it exits the process) reaches the log instead of dying unseen
# inside pytest's fd capture.
python -m pytest -q --capture=sys -p no:cacheprovider \
  tests/test_kernels.py tests/test_kquants.py tests/test_iquants.py tests/test_ops.py tests/test_sampler.py \
  tests/test_gguf_malformed.py tests/test_mutation.py tests/test_registry.py
# generation on the real models, every weight type's path: SmolLM2 Q4_1/Q8_0/Q4_0 greedy (the
# logit-comparison half of test_fidelity.py repeats the same forward passes; ~80 s saved), and
# the K-quant model, Gemma-3 Q4_K_M (Q4_K, Q6_K, Q5_0, Q8_0): its 512-token batch and its first two greedy runs (128 single-token steps), bit-identical to llama.cpp, on
# the AVX2 table (the worker process inherits the sanitized library and runtime through PYRT_LIB
# and LD_PRELOAD; all nine runs would cost ~5 min here)
python -m pytest -q --capture=sys -p no:cacheprovider tests/test_fidelity.py -k greedy
PYRT_IDENTITY_PROMPTS=2 python -m pytest -q --capture=sys -p no:cacheprovider tests/test_fidelity_identity.py \
  -k "gemma and avx2 and not novnni"
