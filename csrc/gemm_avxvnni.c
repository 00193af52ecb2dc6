/* gemm_avxvnni.c — gemm_avx2.c built for CPUs with AVX-VNNI: the integer
 * block dot uses vpdpbusd instead of vpmaddubsw + vpmaddwd. Same results
 * bit for bit (integer sums are exact); only faster. */
#define PYRT_GEMM_VNNI 1
#include "gemm_avx2.c"
