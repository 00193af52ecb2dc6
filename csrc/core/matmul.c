/* core/matmul.c — gemv/gemm drivers over the kernel table (see matmul.h). */
#include "matmul.h"

#include <stdlib.h>
#include <string.h>

/* Rows per tile: a tile of weight rows stays in L1/L2 while every token of
 * the batch is multiplied against it. */
#define MM_ROW_TILE 16
/* gemm blocking: up to 128 rows x 64 tokens per tiled-kernel call; the
 * kernels block further inside (the AVX2 32-block tiles unpack a row panel
 * once per call and prepare each token's blocks once per call, so fewer,
 * larger calls amortize that: +4 % on Q5_0/Q8_0 over 32-row calls) */
#define MM_GEMM_ROWS 128
#define MM_GEMM_TOKS 64
/* Q4_K/Q5_K/Q6_K GEMMs unpack each row panel once per call (x86's
 * kquants_gemm_lanes.inc, whose token panels are as large): 128 tokens a
 * call halve that work against 64 (pp256 of a Q4_K_M model +5 %) */
#define MM_GEMM_TOKS_K 128
/* Up to this many tokens a tiled kernel gets a chunk's whole row range in
 * one call, as a single token does: the x86 kernels then run their GEMV tiles
 * (rows far apart, GEMV_STREAMS in kernels.h) with up to 4 tokens per pass,
 * each weight block unpacked once for all of them (Q4_1/Q5_1 with 5+ tokens:
 * a pass of 4 and one of the rest), or (Q4_0/Q5_0/Q8_0 with 5+ tokens)
 * their panel tiles, which prefetch the next panel. Either way the
 * weights stream from memory once for the batch (PYRT_NUMERICS_PER_TOKEN
 * verification, several sequences' decode tokens), each token in the
 * arithmetic its shape asks for. */
#define MM_FEW_TOK 8
/* A matmul group is cut into at most MM_CHUNKS chunks per thread, claimed
 * dynamically, each of at least MM_CHUNK_MIN bytes of weights (shorter row
 * streams slowed the GEMV tiles: SmolLM2-135M's 0.4 MB groups in 8 chunks,
 * Zen 3) and never fewer than one per thread */
#ifndef MM_CHUNKS
#define MM_CHUNKS 4
#endif
#define MM_CHUNK_MIN ((int64_t)1 << 20)

int64_t mm_act_bytes_bound(int64_t cols) { return cols * (int64_t)sizeof(float); }

static int64_t act_row_bytes(int32_t act_type, int64_t cols) {
    const pyrt_type_traits *t = &pyrt_type_traits_table[act_type];
    return cols / t->block_size * t->block_bytes;
}

/* the first row of a task whose share starts at byte off of the task (row
 * bytes rb, rows n): ceil(off / rb) rounded up to a multiple of 8, in [0, n];
 * neighbouring threads get the same value for their common boundary */
static int64_t mm_split_row(int64_t off, int64_t rb, int64_t n) {
    if (off <= 0) return 0;
    const int64_t r = ((off + rb - 1) / rb + 7) / 8 * 8;
    return r < n ? r : n;
}

/* rows [r0, r1) of one task, every token: the tiled kernel where one exists
 * for the type and shape (same arithmetic as the row dots), else the row dots */
static void mm_rows(const pyrt_kernels *k, const mm_task *tk, int64_t r0, int64_t r1, int64_t cols,
                    int64_t n_tok, int64_t shape, const int32_t act[2], void *qbuf[2]) {
    const pyrt_weight *w = tk->w;
    const int32_t a = pyrt_type_traits_table[w->type].act_type;
    const void *q = qbuf[a == act[0] ? 0 : 1];
    const int64_t rb = act_row_bytes(a, cols);
    const int32_t ty = w->type;
    const char *wd = (const char *)w->data;
    /* a tiled kernel exists for this type and shape? (same arithmetic) */
    const int r8 = k->type[ty].vec_dot_r8 && w->rows % 8 == 0;
    pyrt_gemm_fn g = r8 ? (k->type[ty].vec_dot_r8x4 ? NULL : k->type[ty].gemm_r8)
                              : (k->type[ty].vec_dot_tiled && shape >= pyrt_tiled_min_tok(k, ty) ? NULL : k->type[ty].gemm);
    /* the 32-block tiles cache per-block scales for rows of at most
     * PYRT_GEMM_MAX_COLS; wider rows take the row dots (same arithmetic) */
    if (cols > PYRT_GEMM_MAX_COLS) g = NULL;
    /* tokens [0, n_g) go through a tiled kernel, the rest through the row dots */
    int64_t n_g = g ? n_tok : 0;
    if (!g && r8 && k->type[ty].gemm_r8x4 && k->type[ty].vec_dot_r8x4 && shape > 3) {
        /* batch positions below shape - shape % 4 take the repacked GEMM's order */
        g = k->type[ty].gemm_r8x4;
        n_g = shape - shape % 4 - (shape - n_tok);
        n_g = n_g < 0 ? 0 : n_g > n_tok ? n_tok : n_g;
    } else if (!g && !r8 && k->type[ty].gemm_tiled && k->type[ty].vec_dot_tiled &&
               shape >= pyrt_tiled_min_tok(k, ty)) {
        g = k->type[ty].gemm_tiled;
        n_g = n_tok;
    }
    if (g && n_g > 0) {
        /* few tokens: the chunk's whole row range in one call, so the
         * kernels' row streams are long (GEMV_STREAMS in kernels.h) */
        const int64_t step = n_g <= MM_FEW_TOK ? r1 - r0 : MM_GEMM_ROWS;
        for (int64_t rt = r0; rt < r1; rt += step) {
            const int64_t nr = rt + step < r1 ? step : r1 - rt;
            const int64_t gt = ty == PYRT_TYPE_Q4_K || ty == PYRT_TYPE_Q5_K || ty == PYRT_TYPE_Q6_K
                                   ? MM_GEMM_TOKS_K : MM_GEMM_TOKS;
            for (int64_t t0 = 0; t0 < n_g; t0 += gt) {
                const int64_t nt = t0 + gt < n_g ? gt : n_g - t0;
                g(cols, wd + rt * w->row_bytes, w->row_bytes, nr, (const char *)q + t0 * rb, rb, nt,
                  tk->y + t0 * tk->ldy + rt, tk->ldy);
            }
        }
    }
    if (g && n_g == n_tok) return;
    int64_t t_end = n_tok;   /* tokens [g ? n_g : 0, t_end) go through the row dots */
    if (r8 && k->type[ty].vec_dot_r8x4 && k->type[ty].gemm_r8 && cols <= PYRT_GEMM_MAX_COLS) {
        /* the batch positions past the last group of 4 (all of a batch of
         * < 4: token generation) take vec_dot_r8, here in its GEMV kernel
         * over the chunk's whole row range (GEMV_STREAMS in kernels.h) */
        while (t_end > (g ? n_g : 0) &&
               pyrt_pick_vec_dot(k, ty, w->rows, shape, shape - n_tok + t_end - 1) == k->type[ty].vec_dot_r8)
            t_end--;
        if (t_end < n_tok)
            k->type[ty].gemm_r8(cols, wd + r0 * w->row_bytes, w->row_bytes, r1 - r0, (const char *)q + t_end * rb,
                                rb, n_tok - t_end, tk->y + t_end * tk->ldy + r0, tk->ldy);
    }
    for (int64_t rt = r0; rt < r1; rt += MM_ROW_TILE) {
        const int64_t re = rt + MM_ROW_TILE < r1 ? rt + MM_ROW_TILE : r1;
        for (int64_t t = g ? n_g : 0; t < t_end; t++) {
            /* the tokens of this call are the last of a batch of `shape` */
            const pyrt_vec_dot_fn dot = pyrt_pick_vec_dot(k, ty, w->rows, shape, shape - n_tok + t);
            const void *qa = (const char *)q + t * rb;
            float *yt = tk->y + t * tk->ldy;
            for (int64_t r = rt; r < re; r++)
                dot(cols, &yt[r], wd + r * w->row_bytes, qa);
        }
    }
}

void mm_group(const pyrt_kernels *k, pyrt_pool *pool, int ith, int nth,
              const float *x, int64_t ldx, int64_t n_tok, int64_t n_shape,
              const mm_task *tasks, int n_tasks, void *qbuf[2]) {
    /* n_shape < 0: every token in single-token (GEMV) arithmetic (a batch of
     * sequences, per-token numerics, most of llama.cpp's mul_mat_id) */
    const int64_t shape = n_shape < 0 ? 1 : n_shape > n_tok ? n_shape : n_tok;
    const int64_t cols = tasks[0].w->cols;

    /* 1. quantize activations, once per distinct activation type (<= 2) */
    int32_t act[2] = { -1, -1 };
    int n_act = 0;
    for (int i = 0; i < n_tasks; i++) {
        int32_t a = pyrt_type_traits_table[tasks[i].w->type].act_type;
        if (a != act[0] && a != act[1] && n_act < 2) act[n_act++] = a;
    }
    for (int j = 0; j < n_act; j++) {
        const int64_t rb = act_row_bytes(act[j], cols);
        int64_t lo, hi;
        pool_split(n_tok, ith, nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++)
            k->type[act[j]].quantize_act(x + t * ldx, (char *)qbuf[j] + t * rb, cols);
    }
    if (ith == 0) pool_claim_reset(pool);   /* the last claims ended at the previous call's barrier */
    pool_barrier(pool);

    /* 2. rows of all tasks, concatenated, in chunks of about equal bytes
     * that the threads claim in turn until none is left: a thread that a
     * neighbour on the host slows down takes fewer (the static split left
     * the other waiting at the barrier), and a group can mix types (Q4_K_M's
     * attn_q/k in Q4_K next to attn_v in Q6_K, 1.46x the bytes a row). A
     * chunk starts at the row whose first byte falls in its byte range,
     * rounded up to a multiple of 8 rows within the task (the GEMV tiles take
     * rows in groups of 8); each chunk goes to the kernels in one piece, so
     * their row streams stay long (GEMV_STREAMS in kernels.h; MM_CHUNK_MIN). */
    int64_t total = 0;
    for (int i = 0; i < n_tasks; i++) total += tasks[i].w->rows * tasks[i].w->row_bytes;
    int64_t n_chunks = total / MM_CHUNK_MIN;
    n_chunks = n_chunks < nth ? nth : n_chunks > (int64_t)nth * MM_CHUNKS ? (int64_t)nth * MM_CHUNKS : n_chunks;
    for (int64_t c = pool_claim(pool); c < n_chunks; c = pool_claim(pool)) {
        const int64_t lo = total * c / n_chunks, hi = total * (c + 1) / n_chunks;
        int64_t base = 0;
        for (int i = 0; i < n_tasks; i++) {
            const int64_t rb_w = tasks[i].w->row_bytes, b0 = base;
            base += tasks[i].w->rows * rb_w;
            const int64_t r0 = mm_split_row(lo - b0, rb_w, tasks[i].w->rows);
            const int64_t r1 = mm_split_row(hi - b0, rb_w, tasks[i].w->rows);
            if (r0 < r1) mm_rows(k, &tasks[i], r0, r1, cols, n_tok, shape, act, qbuf);
        }
    }
    pool_barrier(pool);
}

/* ---- test entry point ----------------------------------------------------- */

typedef struct {
    const pyrt_kernels *k;
    pyrt_pool *pool;
    const float *x;
    int64_t n_tok, n_shape;
    mm_task task;
    void *qbuf[2];
} mm_job;

static void mm_job_fn(void *arg, int ith, int nth) {
    mm_job *j = arg;
    mm_group(j->k, j->pool, ith, nth, j->x, j->task.w->cols, j->n_tok, j->n_shape, &j->task, 1, j->qbuf);
}

int pyrt_matmul(int32_t variant, int32_t wtype, const void *w, int64_t rows, int64_t cols,
                const float *x, int64_t n_tok, float *y, int32_t n_threads) {
    return pyrt_matmul_shape(variant, wtype, w, rows, cols, x, n_tok, 0, y, n_threads);
}

int pyrt_matmul_shape(int32_t variant, int32_t wtype, const void *w, int64_t rows, int64_t cols,
                      const float *x, int64_t n_tok, int32_t n_shape, float *y, int32_t n_threads) {
    if (!w || !x || !y || rows <= 0 || cols <= 0 || n_tok <= 0)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "pyrt_matmul: bad pointer or size");
    if (n_shape < PYRT_NUMERICS_PER_TOKEN)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "pyrt_matmul: n_shape %d (0, -1 or a batch size)", (int)n_shape);
    if (wtype < 0 || wtype >= PYRT_TYPE_COUNT || pyrt_type_block_size(wtype) == 0)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt_matmul: unknown type %d", (int)wtype);
    const pyrt_kernels *k = variant == PYRT_KERNELS_AUTO ? pyrt_kernels_current() : pyrt_kernels_get(variant);
    if (!k) return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt_matmul: kernel variant %d unavailable", (int)variant);
    const int32_t at = pyrt_type_act_type(wtype);
    if (!k->type[wtype].vec_dot || at < 0 || !k->type[at].quantize_act)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt_matmul: no kernel for type %d", (int)wtype);
    if (cols % pyrt_type_block_size(wtype) || cols % pyrt_type_block_size(at))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "pyrt_matmul: cols %lld not a multiple of the block size", (long long)cols);
    if (n_threads <= 0) n_threads = pool_default_threads();

    pyrt_weight wt = { w, wtype, cols, rows, cols / pyrt_type_block_size(wtype) * pyrt_type_block_bytes(wtype) };
    mm_job j = { k, NULL, x, n_tok, n_shape, { &wt, y, rows }, { NULL, NULL } };
    const size_t qb = (size_t)(n_tok * mm_act_bytes_bound(cols));
    j.qbuf[0] = malloc(qb);
    j.qbuf[1] = malloc(qb);
    j.pool = pool_create(n_threads);
    int st = PYRT_OK;
    if (!j.qbuf[0] || !j.qbuf[1] || !j.pool) st = pyrt_set_error(PYRT_ERR_OOM, "pyrt_matmul: allocation failed");
    else pool_run(j.pool, mm_job_fn, &j);
    pool_free(j.pool);
    free(j.qbuf[0]);
    free(j.qbuf[1]);
    return st;
}
