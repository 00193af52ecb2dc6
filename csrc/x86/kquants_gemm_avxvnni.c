/* x86/kquants_gemm_avxvnni.c — x86/kquants_gemm_avx2.c built for CPUs with AVX-VNNI:
 * the integer sums use vpdpbusd instead of vpmaddubsw. Same results bit for
 * bit (integer sums are exact); only faster. */
#define PYRT_KQ_VNNI 1
#include "kquants_gemm_avx2.c"
