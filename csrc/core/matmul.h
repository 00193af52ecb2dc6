/* matmul.h — y = W·x drivers: quantize the activations once per call (to the
 * weight type's activation type), then split weight rows over threads. */
#ifndef PYRT_MATMUL_H
#define PYRT_MATMUL_H

#include <stdint.h>
#include "kernels.h"
#include "threadpool.h"

typedef struct {
    const void *data;
    int32_t type;
    int64_t cols;       /* ne[0]: row length (input features) */
    int64_t rows;       /* ne[1]: output features             */
    int64_t row_bytes;
} pyrt_weight;

/* One weight of a fused group: y[t*ldy + r] = dot(W row r, x row t). */
typedef struct {
    const pyrt_weight *w;
    float *y;
    int64_t ldy;
} mm_task;

/* Bytes needed per activation row of `cols` elements for any weight type
 * (upper bound used to size scratch). */
int64_t mm_act_bytes_bound(int64_t cols);

/* SPMD: called by all nth threads of a pool job. Tasks must share cols.
 * n_shape: compute in the arithmetic llama.cpp uses for a batch of
 * max(n_shape, n_tok) tokens whose last n_tok tokens these are (0: n_tok;
 * < 0: each token as a one-token GEMV, the arithmetic of llama.cpp's MoE
 * expert matmuls).
 * qbuf: two scratch buffers of n_tok * mm_act_bytes_bound(cols) bytes.
 * Ends with a barrier so y is complete on return. */
void mm_group(const pyrt_kernels *k, pyrt_pool *pool, int ith, int nth,
              const float *x, int64_t ldx, int64_t n_tok, int64_t n_shape,
              const mm_task *tasks, int n_tasks, void *qbuf[2]);

#endif
