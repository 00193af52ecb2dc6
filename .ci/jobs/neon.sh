#!/usr/bin/env bash
# CI job: the NEON kernels, cross-compiled for aarch64 and run under qemu-user.
#
#  1. Debian's gcc-aarch64-linux-gnu + qemu-user (skipped when already there).
#  2. The library through CMakeLists.txt's aarch64 branch with a cross
#     toolchain (all C sources, arm/quants_neon.c, the dotprod attribute probe).
#  3. tests/c/test_kernels.c linked statically against those objects, run as
#       qemu-aarch64 -cpu max         (reports dotprod: baseline + SDOT tables)
#       qemu-aarch64 -cpu cortex-a57  (no dotprod: baseline table, and proves
#                                      no SDOT instruction is reached there)
#     each table compared with the scalar reference at tests/test_kernels.py's
#     tolerances, plus pyrt_matmul on 2 threads.
#  4. The same test program built natively on x86-64 against the AVX2 (and, where the CPU
#     has it, AVX-512) table.
# Cost on the 2-core build machine: 8-15 s for apt (update + install, cold),
# ~30 s for the two CMake builds, the qemu runs and the native run.
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
command -v cmake >/dev/null || python -m pip install --quiet cmake
echo "neon: toolchain ready after $((SECONDS - t0)) s"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
JOBS="$(nproc 2>/dev/null || echo 2)"

# Build libpyrt with CMake into $WORK/$1 (extra cmake args follow), then link
# tests/c/test_kernels.c against the library's object files into $WORK/$1/test_kernels.
build_test() {
  local name="$1" cc="$2" defs="$3"
  shift 3
  cmake -S . -B "$WORK/$name" -DCMAKE_BUILD_TYPE=Release "$@" >"$WORK/$name.log" 2>&1 ||
    { cat "$WORK/$name.log"; return 1; }
  cmake --build "$WORK/$name" -j"$JOBS" >>"$WORK/$name.log" 2>&1 ||
    { cat "$WORK/$name.log"; return 1; }
  local objs
  objs=$(find "$WORK/$name/CMakeFiles/pyrt.dir" -name '*.o' | sort)
  [ -n "$objs" ] || { echo "neon: no object files under $WORK/$name/CMakeFiles/pyrt.dir" >&2; return 1; }
  # shellcheck disable=SC2086
  "$cc" -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -Icsrc $defs \
    tests/c/test_kernels.c $objs -static -lm -lpthread -o "$WORK/$name/test_kernels"
}

# ---- aarch64 under qemu -------------------------------------------------------
cat >"$WORK/aarch64.cmake" <<'EOF'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
EOF
build_test aarch64 aarch64-linux-gnu-gcc "-DPYRT_HAVE_NEON_KERNELS=1" \
  -DCMAKE_TOOLCHAIN_FILE="$WORK/aarch64.cmake"
grep -q "PYRT_NEON_DOTPROD_ATTRIBUTE:INTERNAL=1" "$WORK/aarch64/CMakeCache.txt" ||
  { echo "neon: the compiler rejected the dotprod target attribute" >&2; exit 1; }

run_qemu() {   # cpu, expected "yes"/"no" for dotprod
  local out
  echo "+ qemu-aarch64 -cpu $1 test_kernels"
  out=$(qemu-aarch64 -cpu "$1" "$WORK/aarch64/test_kernels") || { echo "$out"; exit 1; }
  printf '%s\n' "$out"
  echo "$out" | grep -q "dot-product instructions: $2" ||
    { echo "neon: expected dotprod=$2 on -cpu $1" >&2; exit 1; }
}
run_qemu max yes
run_qemu cortex-a57 no

# ---- x86-64 natively: the AVX2 table through the same program ---------------------
if [ "$(uname -m)" = "x86_64" ]; then
  build_test host cc ""
  echo "+ test_kernels (native x86-64)"
  "$WORK/host/test_kernels"
fi
echo "neon: done in $((SECONDS - t0)) s"
