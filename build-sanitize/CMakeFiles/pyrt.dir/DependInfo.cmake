
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/csrc/dispatch.c" "CMakeFiles/pyrt.dir/csrc/dispatch.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/dispatch.c.o.d"
  "/work/main/csrc/error.c" "CMakeFiles/pyrt.dir/csrc/error.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/error.c.o.d"
  "/work/main/csrc/kernels_avx2.c" "CMakeFiles/pyrt.dir/csrc/kernels_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/kernels_avx2.c.o.d"
  "/work/main/csrc/kernels_ref.c" "CMakeFiles/pyrt.dir/csrc/kernels_ref.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/kernels_ref.c.o.d"
  "/work/main/csrc/kquants_avx2.c" "CMakeFiles/pyrt.dir/csrc/kquants_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/kquants_avx2.c.o.d"
  "/work/main/csrc/kquants_ref.c" "CMakeFiles/pyrt.dir/csrc/kquants_ref.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/kquants_ref.c.o.d"
  "/work/main/csrc/matmul.c" "CMakeFiles/pyrt.dir/csrc/matmul.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/matmul.c.o.d"
  "/work/main/csrc/model.c" "CMakeFiles/pyrt.dir/csrc/model.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/model.c.o.d"
  "/work/main/csrc/ops.c" "CMakeFiles/pyrt.dir/csrc/ops.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/ops.c.o.d"
  "/work/main/csrc/ops_avx2.c" "CMakeFiles/pyrt.dir/csrc/ops_avx2.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/ops_avx2.c.o.d"
  "/work/main/csrc/sampler.c" "CMakeFiles/pyrt.dir/csrc/sampler.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/sampler.c.o.d"
  "/work/main/csrc/threadpool.c" "CMakeFiles/pyrt.dir/csrc/threadpool.c.o" "gcc" "CMakeFiles/pyrt.dir/csrc/threadpool.c.o.d"
  )

# Targets to which this target links which contain Fortran sources.
set(CMAKE_Fortran_TARGET_LINKED_INFO_FILES
  )

# Targets to which this target links which contain Fortran sources.
set(CMAKE_Fortran_TARGET_FORWARD_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
