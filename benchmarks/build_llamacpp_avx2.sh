#!/usr/bin/env bash
# Build llama.cpp's AVX2 reference (llama-cpp-python 0.3.36 from its sdist, AVX2+FMA+F16C, no
# AVX-512, no VNNI) into its own venv: the build whose arithmetic pyrt reproduces bit for bit,
# used by benchmarks/compare_llamacpp.py --llama-python, scripts/llamacpp_reference.py and
# scripts/arch_reference.py. Never a pyrt dependency.
#   bash benchmarks/build_llamacpp_avx2.sh [VENV]        # default ~/.cache/pyrt/avx2-venv
# Then: PYRT_KERNELS=avx2 python benchmarks/compare_llamacpp.py ... --llama-python VENV/bin/python
# Takes ~5 minutes on 2 cores (a C++ build of llama.cpp).
set -euo pipefail
VENV="${1:-$HOME/.cache/pyrt/avx2-venv}"
VERSION=0.3.36
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip numpy
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_BMI2=OFF" \
  "$VENV/bin/python" -m pip install --no-binary llama-cpp-python --no-cache-dir "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama.cpp AVX2 build:', llama_cpp.__version__, llama_cpp.llama_print_system_info().decode())"
