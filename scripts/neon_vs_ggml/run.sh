#!/usr/bin/env bash
# Reference check, run by hand (not CI: it downloads and cross-builds llama.cpp's ggml): pyrt's
# NEON ops against ggml built for baseline AArch64 from the llama-cpp-python 0.3.36 sdist (the
# version of the x86 references), both run under qemu-aarch64, bit for bit (check.c says what).
#   bash scripts/neon_vs_ggml/run.sh [WORKDIR]     # default /tmp/neon_vs_ggml; ~6 min on 2 cores
# Needs Debian's gcc/g++-aarch64-linux-gnu and qemu-user (.ci/jobs/neon.sh installs the C ones).
set -euo pipefail
cd "$(dirname "$0")/../.."
W="${1:-/tmp/neon_vs_ggml}"
VERSION=0.3.36
mkdir -p "$W"
command -v aarch64-linux-gnu-g++ >/dev/null || apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null
cat >"$W/aarch64.cmake" <<'EOT'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
EOT
if [ ! -d "$W/llama_cpp_python-$VERSION" ]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$W"
  tar xzf "$W/llama_cpp_python-$VERSION.tar.gz" -C "$W"
fi
G="$W/llama_cpp_python-$VERSION/vendor/llama.cpp/ggml"
touch "$G/ggml.pc.in"      # the sdist leaves it out; ggml's CMakeLists configures it
cmake -S "$G" -B "$W/ggml" -DCMAKE_TOOLCHAIN_FILE="$W/aarch64.cmake" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_LLAMAFILE=ON -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF >"$W/ggml.log" 2>&1
cmake --build "$W/ggml" -j"$(nproc)" >>"$W/ggml.log" 2>&1
cmake -S . -B "$W/pyrt" -DCMAKE_TOOLCHAIN_FILE="$W/aarch64.cmake" -DCMAKE_BUILD_TYPE=Release >"$W/pyrt.log" 2>&1
cmake --build "$W/pyrt" -j"$(nproc)" >>"$W/pyrt.log" 2>&1
# shellcheck disable=SC2046
aarch64-linux-gnu-g++ -O2 -x c scripts/neon_vs_ggml/check.c -x none -I"$G/include" -Icsrc -DPYRT_HAVE_NEON_KERNELS=1 \
  $(find "$W/pyrt/CMakeFiles/pyrt.dir" -name '*.o' | sort) \
  "$W/ggml/src/libggml.a" "$W/ggml/src/libggml-cpu.a" "$W/ggml/src/libggml-base.a" \
  -static -lm -lpthread -o "$W/check"
qemu-aarch64 -cpu cortex-a57 "$W/check"
