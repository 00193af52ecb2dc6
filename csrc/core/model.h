/* model.h — the model and context structs, shared by the core files only
 * (model.c binds weights, context.c owns the KV cache and scratch, forward.c
 * runs the decoder, state.c saves the cache, backend.c routes to CUDA). */
#ifndef PYRT_CORE_MODEL_H
#define PYRT_CORE_MODEL_H

#include <stdatomic.h>
#include <stddef.h>

#include "arch.h"
#include "kernels.h"
#include "matmul.h"
#include "threadpool.h"
#include "cuda/pyrt_cuda.h"

typedef struct {
    const float *attn_norm;      /* [n_embd]  */
    pyrt_weight wq;              /* [n_embd] -> [n_head*head_dim]    */
    pyrt_weight wk;              /* [n_embd] -> [n_head_kv*head_dim] */
    pyrt_weight wv;              /* [n_embd] -> [n_head_kv*head_dim] */
    pyrt_weight wo;              /* [n_head*head_dim] -> [n_embd]    */
    const float *ffn_norm;       /* [n_embd]  */
    pyrt_weight w_gate, w_up;    /* [n_embd] -> [n_ff] */
    pyrt_weight w_down;          /* [n_ff] -> [n_embd] */
    const float *q_norm, *k_norm;                 /* [head_dim] (arch->qk_norm)    */
    const float *post_attn_norm, *post_ffn_norm;  /* [n_embd]   (arch->post_norms) */
    const float *bq, *bk, *bv;   /* optional biases [n_head*head_dim], [n_head_kv*head_dim] x2 */
    pyrt_weight wqkv;            /* optional fused [wq; wk; wv]: wq/wk/wv are row views of it */
    /* mixture of experts (hp.n_expert > 0) instead of w_gate/w_up/w_down */
    pyrt_weight gate_inp;        /* F32 router [n_embd] -> [n_expert]                        */
    pyrt_weight gate_exps, up_exps;  /* n_expert blocks of n_ff_exp rows of n_embd           */
    pyrt_weight down_exps;       /* n_expert blocks of n_embd rows of n_ff_exp               */
} layer_weights;

struct pyrt_model {
    pyrt_hparams hp;
    const pyrt_arch *arch;       /* traits of hp.arch */
    pyrt_weight tok_embd;        /* rows n_vocab of n_embd */
    const float *out_norm;       /* [n_embd] */
    pyrt_weight output;          /* rows n_vocab of n_embd (tied: = tok_embd) */
    int has_output;
    const float *output_b;       /* optional [n_vocab] (output.bias)           */
    const float *rope_freqs;     /* optional [n_rot/2] (rope_freqs.weight)     */
    const float *rope_long;      /* optional [n_rot/2] phi3 LongRoPE factors   */
    const float *rope_short;     /*   (rope_factors_long/short.weight)          */
    layer_weights *layers;       /* [n_layer] */
    int finalized;
    pyrt_cuda_model *cuda;       /* device copy of the weights (pyrt_model_offload) */
    int32_t cuda_device;
};

/* One sequence's part of a forward job (pyrt_decode_batch; pyrt_decode runs
 * one part per chunk): tokens [t0, t0+n_tok) of the batch at positions
 * pos0.., logits rows [o0, o0+n_out) for its tokens out_first.. */
typedef struct {
    int32_t seq, pos0, n_tok, n_shape, t0, out_first, n_out, o0;
} fwd_part;

/* Rows [r0, r0+n) of a job's activations that one matmul call covers, in the
 * numerics n_shape (mm_group); consecutive single-token parts share a run. */
typedef struct {
    int32_t r0, n, n_shape;
} fwd_run;

struct pyrt_ctx {
    const pyrt_model *m;
    int32_t n_ctx, n_batch;      /* n_ctx: positions per sequence */
    int32_t n_seq;
    int32_t *n_past;             /* [n_seq]: valid positions [0, n_past[s]) of sequence s */
    int64_t kv_dim;
    pyrt_pool *pool;
    /* KV cache [n_layer][n_seq][n_ctx] rows of kv_dim values, each in its
     * type: F16 (default), Q8_0 or Q4_0 (head_dim % 32 == 0), so a row is
     * k_row_bytes / v_row_bytes and one head's part of it k_head_bytes /
     * v_head_bytes. Any quantized type makes attention take
     * attn_head_fa (llama.cpp's flash-attention arithmetic). */
    uint8_t *kc, *vc;
    int32_t type_k, type_v;      /* PYRT_TYPE_F16, _Q8_0, _Q4_0 */
    int64_t k_row_bytes, v_row_bytes, k_head_bytes, v_head_bytes;
    /* llama.cpp rotates around a quantized cache (its default; forward.c):
     * q and k by a Walsh-Hadamard matrix of size rot_k when K is quantized,
     * v and the attention output by one of size rot_v when V is; 0: none */
    int32_t rot_k, rot_v;
    /* activations, [n_batch][width] */
    float *x, *xn, *q, *k, *v, *att, *tmp, *g, *u;
    float *moe_w;                /* MoE: [n_batch][n_expert] router probs, then top-k weights */
    int32_t *moe_id;             /* MoE: [n_batch][n_expert_used] chosen experts, best first */
    float *moe_x, *moe_out;      /* MoE: [n_batch][n_embd] gathered rows; [n_batch][k][n_embd] */
    void *qbuf[2];               /* quantized activations, 2 act types */
    int32_t attn_tok;            /* tokens per attention group (kernels.h)     */
    float *scores;               /* [n_threads][n_q][n_ctx + 32], n_q = attn_tok * gqa */
    pyrt_fp16 *probs16;          /* [n_threads][n_ctx + 32]   */
    pyrt_fp16 *q16;              /* [n_threads][head_dim]     */
    float *attn_acc;             /* [n_threads][attn_acc_floats()] */
    _Atomic int abort_req;
    int stop_now;
    int32_t backend;             /* PYRT_BACKEND_*                              */
    pyrt_cuda_ctx *cuda;         /* CUDA: KV cache + scratch on the device      */
    int32_t n_shape;             /* 0, or the batch size whose arithmetic to use */
    /* current job (forward.c): its parts, their tokens, matmul runs over
     * the tokens and over the output rows, and each output row's token */
    const int32_t *tokens;
    int32_t n_tok, n_out, out_kind;
    float *out;
    fwd_part *parts;             /* [n_seq] */
    fwd_run *runs, *out_runs;    /* [n_seq] each */
    int32_t n_parts, n_runs, n_out_runs;
    int32_t *tok_part;           /* [n_batch]: the part of each token */
    int32_t *out_tok;            /* [n_batch]: the token of each output row */
};

/* context.c: per-thread attention scratch (kernels.h: pyrt_attn_args.scores
 * and .acc), in floats */
size_t ctx_attn_scores_floats(const pyrt_ctx *c);
size_t ctx_attn_acc_floats(const pyrt_ctx *c);

/* context.c: allocate c->n_past and the job bookkeeping for n_seq sequences
 * (needs c->n_batch); 0 when out of memory */
int ctx_alloc_seqs(pyrt_ctx *c, int32_t n_seq);

/* context.c: bytes of n values of a KV cache type (n a multiple of its block) */
int64_t ctx_kv_bytes(int32_t type, int64_t n);

/* backend.c: a context whose KV cache and scratch live on a CUDA device */
int ctx_create_cuda(const pyrt_model *m, int32_t n_ctx, int32_t n_batch, int32_t device, pyrt_ctx **out);

#endif
