file(REMOVE_RECURSE
  "CMakeFiles/pyrt.dir/csrc/dispatch.c.o"
  "CMakeFiles/pyrt.dir/csrc/dispatch.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/error.c.o"
  "CMakeFiles/pyrt.dir/csrc/error.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/kernels_avx2.c.o"
  "CMakeFiles/pyrt.dir/csrc/kernels_avx2.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/kernels_ref.c.o"
  "CMakeFiles/pyrt.dir/csrc/kernels_ref.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/kquants_avx2.c.o"
  "CMakeFiles/pyrt.dir/csrc/kquants_avx2.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/kquants_ref.c.o"
  "CMakeFiles/pyrt.dir/csrc/kquants_ref.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/matmul.c.o"
  "CMakeFiles/pyrt.dir/csrc/matmul.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/model.c.o"
  "CMakeFiles/pyrt.dir/csrc/model.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/ops.c.o"
  "CMakeFiles/pyrt.dir/csrc/ops.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/ops_avx2.c.o"
  "CMakeFiles/pyrt.dir/csrc/ops_avx2.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/sampler.c.o"
  "CMakeFiles/pyrt.dir/csrc/sampler.c.o.d"
  "CMakeFiles/pyrt.dir/csrc/threadpool.c.o"
  "CMakeFiles/pyrt.dir/csrc/threadpool.c.o.d"
  "libpyrt.pdb"
  "libpyrt.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/pyrt.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
