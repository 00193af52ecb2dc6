/* kernels.h — kernel signatures and the dispatch table.
 *
 * Every variant (scalar reference, AVX2, NEON) fills the same table; a NULL
 * entry means "not implemented in this variant" and dispatch falls back to the
 * scalar entry. Sizes: n counts weights/elements and is a multiple of the
 * type's block size. */
#ifndef PYRT_KERNELS_H
#define PYRT_KERNELS_H

#include <stdint.h>
#include "pyrt.h"
#include "quant.h"

typedef void  (*pyrt_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void  (*pyrt_quant_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(w[0..n), a[0..n)), w in the weight type, a in its activation type */
typedef void  (*pyrt_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);

typedef struct {
    const char     *name;
    pyrt_dequant_fn dequantize[PYRT_TYPE_COUNT];    /* weight type -> f32        */
    pyrt_quant_fn   quantize_act[PYRT_TYPE_COUNT];  /* f32 -> act type (Q8_0, Q8_1, Q8_K, F16, F32) */
    pyrt_vec_dot_fn vec_dot[PYRT_TYPE_COUNT];       /* indexed by weight type    */

    /* F16 helpers for the KV cache and attention */
    void  (*fp32_to_fp16)(const float *x, pyrt_fp16 *y, int64_t n);
    void  (*fp16_to_fp32)(const pyrt_fp16 *x, float *y, int64_t n);
    float (*dot_f16)(int64_t n, const pyrt_fp16 *x, const pyrt_fp16 *y);  /* f32 accumulate */
    void  (*mad_f16)(int64_t n, float *y, const pyrt_fp16 *x, float v);  /* y += x*v      */
} pyrt_kernels;

typedef struct {
    const char *name;
    int32_t block_size;    /* elements per block */
    int64_t block_bytes;
    int32_t act_type;      /* activation type for vec_dot */
} pyrt_type_traits;

extern const pyrt_type_traits pyrt_type_traits_table[PYRT_TYPE_COUNT];

/* Filled by each kernel file. */
void pyrt_kernels_fill_scalar(pyrt_kernels *k);
void pyrt_kernels_fill_avx2(pyrt_kernels *k);     /* defined only on x86-64 */
void pyrt_kernels_fill_neon(pyrt_kernels *k);     /* defined only on aarch64 */

/* dispatch.c: table for a variant (NULL if unavailable), and the active one. */
const pyrt_kernels *pyrt_kernels_get(int32_t variant);
const pyrt_kernels *pyrt_kernels_current(void);

/* error.c: set the thread-local message and return status */
int pyrt_set_error(int status, const char *fmt, ...);

#endif
