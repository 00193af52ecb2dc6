
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/wt-gemv/csrc/core/arch.c" "CMakeFiles/pyrt.dir/csrc/core/arch.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/arch.c.o.d"
  "/work/wt-gemv/csrc/core/backend.c" "CMakeFiles/pyrt.dir/csrc/core/backend.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/backend.c.o.d"
  "/work/wt-gemv/csrc/core/context.c" "CMakeFiles/pyrt.dir/csrc/core/context.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/context.c.o.d"
  "/work/wt-gemv/csrc/core/dispatch.c" "CMakeFiles/pyrt.dir/csrc/core/dispatch.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/dispatch.c.o.d"
  "/work/wt-gemv/csrc/core/error.c" "CMakeFiles/pyrt.dir/csrc/core/error.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/error.c.o.d"
  "/work/wt-gemv/csrc/core/forward.c" "CMakeFiles/pyrt.dir/csrc/core/forward.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/forward.c.o.d"
  "/work/wt-gemv/csrc/core/grammar.c" "CMakeFiles/pyrt.dir/csrc/core/grammar.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/grammar.c.o.d"
  "/work/wt-gemv/csrc/core/matmul.c" "CMakeFiles/pyrt.dir/csrc/core/matmul.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/matmul.c.o.d"
  "/work/wt-gemv/csrc/core/model.c" "CMakeFiles/pyrt.dir/csrc/core/model.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/model.c.o.d"
  "/work/wt-gemv/csrc/core/sampler.c" "CMakeFiles/pyrt.dir/csrc/core/sampler.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/sampler.c.o.d"
  "/work/wt-gemv/csrc/core/state.c" "CMakeFiles/pyrt.dir/csrc/core/state.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/state.c.o.d"
  "/work/wt-gemv/csrc/core/threadpool.c" "CMakeFiles/pyrt.dir/csrc/core/threadpool.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/core/threadpool.c.o.d"
  "/work/wt-gemv/csrc/generic/iquants.c" "CMakeFiles/pyrt.dir/csrc/generic/iquants.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/generic/iquants.c.o.d"
  "/work/wt-gemv/csrc/generic/kquants.c" "CMakeFiles/pyrt.dir/csrc/generic/kquants.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/generic/kquants.c.o.d"
  "/work/wt-gemv/csrc/generic/ops.c" "CMakeFiles/pyrt.dir/csrc/generic/ops.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/generic/ops.c.o.d"
  "/work/wt-gemv/csrc/generic/quants.c" "CMakeFiles/pyrt.dir/csrc/generic/quants.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/generic/quants.c.o.d"
  "/work/wt-gemv/csrc/x86/iquants_avx2.c" "CMakeFiles/pyrt.dir/csrc/x86/iquants_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/iquants_avx2.c.o.d"
  "/work/wt-gemv/csrc/x86/kquants_avx2.c" "CMakeFiles/pyrt.dir/csrc/x86/kquants_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/kquants_avx2.c.o.d"
  "/work/wt-gemv/csrc/x86/kquants_gemm_avx2.c" "CMakeFiles/pyrt.dir/csrc/x86/kquants_gemm_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/kquants_gemm_avx2.c.o.d"
  "/work/wt-gemv/csrc/x86/kquants_gemm_avx512.c" "CMakeFiles/pyrt.dir/csrc/x86/kquants_gemm_avx512.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/kquants_gemm_avx512.c.o.d"
  "/work/wt-gemv/csrc/x86/kquants_gemm_avxvnni.c" "CMakeFiles/pyrt.dir/csrc/x86/kquants_gemm_avxvnni.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/kquants_gemm_avxvnni.c.o.d"
  "/work/wt-gemv/csrc/x86/ops_avx2.c" "CMakeFiles/pyrt.dir/csrc/x86/ops_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/ops_avx2.c.o.d"
  "/work/wt-gemv/csrc/x86/quants_avx2.c" "CMakeFiles/pyrt.dir/csrc/x86/quants_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/quants_avx2.c.o.d"
  "/work/wt-gemv/csrc/x86/quants_gemm_avx2.c" "CMakeFiles/pyrt.dir/csrc/x86/quants_gemm_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/quants_gemm_avx2.c.o.d"
  "/work/wt-gemv/csrc/x86/quants_gemm_avx512.c" "CMakeFiles/pyrt.dir/csrc/x86/quants_gemm_avx512.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/quants_gemm_avx512.c.o.d"
  "/work/wt-gemv/csrc/x86/quants_gemm_avxvnni.c" "CMakeFiles/pyrt.dir/csrc/x86/quants_gemm_avxvnni.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/x86/quants_gemm_avxvnni.c.o.d"
  )

# Targets to which this target links which contain Fortran sources.
set(CMAKE_Fortran_TARGET_LINKED_INFO_FILES
  )

# Targets to which this target links which contain Fortran sources.
set(CMAKE_Fortran_TARGET_FORWARD_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
