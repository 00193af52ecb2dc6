/* x86/quants_gemm_avxvnni.c — x86/quants_gemm_avx2.c built for CPUs with AVX-VNNI: the integer
 * block dot uses vpdpbusd instead of vpmaddubsw + vpmaddwd. Same results
 * bit for bit (integer sums are exact); only faster. */
#define PYRT_GEMM_VNNI 1
#include "quants_gemm_avx2.c"
