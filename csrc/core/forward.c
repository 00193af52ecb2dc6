/* forward.c — the decoder forward pass, one pyrt_decode() call per batch of
 * tokens, run SPMD on the thread pool: every thread calls forward_job and
 * works on its share of each step; pool_barrier separates steps whose inputs
 * other threads wrote. It reads top to bottom like the model's math:
 *
 *   x = embed(tokens)
 *   for each layer: attention(x); feed_forward(x)
 *   out = output(rmsnorm(x))
 *
 * What an architecture changes is read from its traits (core/arch.h), never
 * from its name; docs/ARCHITECTURE.md, 'Forward pass', has the whole block. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "model.h"
#include "ops.h"

/* What one thread carries through a forward job. */
typedef struct {
    pyrt_ctx *c;
    const pyrt_model *m;
    const pyrt_hparams *hp;
    const pyrt_arch *arch;
    const pyrt_kernels *K;
    pyrt_pool *P;
    int ith, nth;
    int64_t E, HD, KVD, QD, FF;     /* widths: embedding, head, kv row, q row, FFN */
    int32_t B, gqa;                 /* tokens in this batch; query heads per kv head */
    float attn_scale;
    pyrt_attn_args attn;            /* this thread's attention scratch and constants */
} fwd;

/* tasks over all rows of the job (or, for the logits, all output rows): one
 * mm_group call per run of rows that share numerics. A job of one part is
 * one run; in a batch of sequences, the single-token parts (decoding) share
 * one run, and each longer part (a prompt chunk) has its own, computed in
 * the shape it would have alone (model.h: fwd_run). */
static void mm_runs(fwd *f, const fwd_run *runs, int n_runs, const float *x, int64_t ldx,
                    const mm_task *tasks, int n_tasks) {
    for (int r = 0; r < n_runs; r++) {
        mm_task t[3];
        for (int i = 0; i < n_tasks; i++) {
            t[i] = tasks[i];
            t[i].y += (int64_t)runs[r].r0 * t[i].ldy;
        }
        mm_group(f->K, f->P, f->ith, f->nth, x + (int64_t)runs[r].r0 * ldx, ldx, runs[r].n, runs[r].n_shape,
                 t, n_tasks, f->c->qbuf);
    }
}

/* attention takes its batched order when the part's shape has several tokens */
static int part_batched(const fwd_part *p) {
    return p->n_shape < 0 ? 0 : (p->n_shape > 0 ? p->n_shape : p->n_tok) > 1;
}

/* a part whose tokens each attend alone (decoding, per-token numerics) */
static int part_single(const fwd_part *p) {
    return !part_batched(p) && (p->n_shape < 0 || p->n_tok == 1);
}

/* x[t] = token_embd[tokens[t]] (* embd_scale where the model has one) */
static void embed_tokens(fwd *f) {
    const pyrt_ctx *c = f->c;
    const pyrt_weight *te = &f->m->tok_embd;
    int64_t lo, hi;
    pool_split(f->B, f->ith, f->nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        f->K->type[te->type].dequantize((const char *)te->data + (int64_t)c->tokens[t] * te->row_bytes,
                                        c->x + t * f->E, f->E);
        if (f->hp->embd_scale > 0) op_scale(c->x + t * f->E, f->hp->embd_scale, f->E);
    }
    pool_barrier(f->P);
}

/* xn[t] = rmsnorm(x[t]) * w, then a barrier: the matmul after it reads every row */
static void norm_rows(fwd *f, const float *w) {
    pyrt_ctx *c = f->c;
    int64_t lo, hi;
    pool_split(f->B, f->ith, f->nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) op_rmsnorm(c->xn + t * f->E, c->x + t * f->E, w, f->E, f->hp->norm_eps);
    pool_barrier(f->P);
}

/* x[t] += [post_norm](tmp[t]); each thread its own rows, no barrier: the next
 * step (norm_rows, or the layer's closing barrier) splits rows the same way */
static void residual(fwd *f, const float *post_norm) {
    pyrt_ctx *c = f->c;
    int64_t lo, hi;
    pool_split(f->B, f->ith, f->nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        float *tt = c->tmp + t * f->E;
        if (post_norm) op_rmsnorm(tt, tt, post_norm, f->E, f->hp->norm_eps);
        op_add(c->x + t * f->E, tt, f->E);
    }
}

/* Rope frequency factors (theta_i / f_i), or NULL: Llama 3's rope_freqs, else
 * phi3's LongRoPE pair, picked once per context as llama.cpp does: the long
 * factors when the context size, rounded up to a multiple of 256 as llama.cpp
 * rounds it, exceeds the original training context. */
static const float *rope_factors(const pyrt_model *m, const pyrt_ctx *c) {
    if (m->rope_freqs) return m->rope_freqs;
    const int64_t n_ctx_orig = m->hp.n_ctx_orig > 0 ? m->hp.n_ctx_orig : m->hp.n_ctx_train;
    const int64_t n_ctx_pad = ((int64_t)c->n_ctx + 255) / 256 * 256;
    return n_ctx_pad > n_ctx_orig ? m->rope_long : m->rope_short;
}

/* Visible positions from which one decoding token's attention is split
 * between the threads by positions (attn_heads_split) rather than by heads */
#define ATTN_SPLIT_MIN 512

/* Whether this step is one token in single-token numerics over at least
 * ATTN_SPLIT_MIN visible F16 cache positions (within f->attn's window),
 * within attn_heads_split's limits and the scratch: the scores of every
 * query in the threads' score buffers taken as one, the shared value slots
 * in their acc buffers taken as one (context.c sizes each thread's for
 * attn_tok * gqa queries), 32 parts at most. */
static int split_token(const fwd *f) {
    const pyrt_ctx *c = f->c;
    const pyrt_hparams *hp = f->hp;
    if (f->nth < 2 || f->nth > 32 || !f->K->attn_heads_split || c->n_parts != 1 || !part_single(&c->parts[0]) ||
        c->parts[0].n_tok != 1 || f->HD % 32 != 0 || hp->n_head > 64 ||
        hp->n_head > (int64_t)f->nth * c->attn_tok * f->gqa)
        return 0;
    pyrt_attn_args o = f->attn;
    o.last = c->parts[0].pos0;
    o = pyrt_attn_query(&o, 0, 0);     /* the window's first position */
    return o.last - o.first + 1 >= ATTN_SPLIT_MIN;
}

/* tokens per attention group of a part with several tokens: a part in
 * single-token numerics computes each token alone anyway, so one token a
 * group lets the threads share a few-token batch */
static inline int64_t part_group_tok(const pyrt_ctx *c, const fwd_part *part) {
    return part->n_shape < 0 ? 1 : c->attn_tok;
}
/* the part's attention groups per kv head */
static inline int64_t part_groups(const pyrt_ctx *c, const fwd_part *part) {
    return (part->n_tok + part_group_tok(c, part) - 1) / part_group_tok(c, part);
}
/* the part's groups per kv head that the threads claim: none for a part in
 * single-token numerics where attn_heads takes it (heads) */
static inline int64_t part_claimed_groups(const pyrt_ctx *c, const fwd_part *part, int heads) {
    return heads && part_single(part) ? 0 : part_groups(c, part);
}

/* x += [post_norm] Wo . attention(q, k, v) over the causal (sliding) window */
static void attention(fwd *f, int il) {
    pyrt_ctx *c = f->c;
    const pyrt_hparams *hp = f->hp;
    const pyrt_arch *A = f->arch;
    const pyrt_kernels *K = f->K;
    const layer_weights *L = &f->m->layers[il];
    const int64_t HD = f->HD, KVD = f->KVD, QD = f->QD;
    const int swa = hp->sliding_window > 0 && hp->swa_period > 0 && ((il + 1) % hp->swa_period) != 0;
    const float base = swa ? hp->rope_freq_base_swa : hp->rope_freq_base;
    const float fscale = swa ? 1.0f : hp->rope_freq_scale;   /* llama.cpp: no scaling on SWA layers */
    const float *ff = rope_factors(f->m, c);
    const float mscale = hp->rope_attn_factor > 0 ? hp->rope_attn_factor : 1.0f;
    /* this layer's cache: n_seq sequences of n_ctx rows (model.h: kc, vc) */
    const int64_t kseq = (int64_t)c->n_ctx * c->k_row_bytes, vseq = (int64_t)c->n_ctx * c->v_row_bytes;
    uint8_t *kc = c->kc + (size_t)il * c->n_seq * kseq;
    uint8_t *vc = c->vc + (size_t)il * c->n_seq * vseq;
    const int quant_kv = c->type_k != PYRT_TYPE_F16 || c->type_v != PYRT_TYPE_F16;
    int64_t lo, hi;

    /* ---- norm, q/k/v projections (one matmul group: the input is quantized once) ---- */
    norm_rows(f, L->attn_norm);
    mm_task qkv[3] = { { &L->wq, c->q, QD }, { &L->wk, c->k, KVD }, { &L->wv, c->v, KVD } };
    mm_runs(f, c->runs, c->n_runs, c->xn, f->E, qkv, 3);

    /* ---- per head: (bias), (q/k norm), rope, (q scale); k and v into the cache,
     * rounded to its types as llama.cpp stores them (F16; Q8_0: its activation
     * quantizer; Q4_0: its reference rounding) ---- */
    const int64_t n_items = (int64_t)f->B * (hp->n_head + hp->n_head_kv);
    float cs[PYRT_ROPE_CS_MAX];                /* the rope table of token cs_t (ops.h) */
    int64_t cs_t = -1;
    pool_split(n_items, f->ith, f->nth, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        const int64_t t = it / (hp->n_head + hp->n_head_kv);
        const int64_t h = it % (hp->n_head + hp->n_head_kv);
        const fwd_part *part = &c->parts[c->tok_part[t]];
        const int64_t ipos = part->pos0 + (t - part->t0);
        if (t != cs_t) {                       /* a token's items are consecutive */
            K->rope_cache(cs, hp->n_rot, (float)ipos, base, fscale, ff, mscale);
            cs_t = t;
        }
        if (h < hp->n_head) {
            float *qh = c->q + t * QD + h * HD;
            if (L->bq) op_add(qh, L->bq + h * HD, HD);
            if (A->qk_norm) op_rmsnorm(qh, qh, L->q_norm, HD, hp->norm_eps);
            K->rope_cs(qh, hp->n_rot, hp->rope_type, cs);
            if (A->q_prescale) op_scale(qh, f->attn_scale, HD);   /* in f32, before the f16 rounding of q */
            if (c->rot_k) op_fwht(qh, HD, c->rot_k);
        } else {
            const int64_t hk = h - hp->n_head;
            float *kh = c->k + t * KVD + hk * HD;
            float *vh = c->v + t * KVD + hk * HD;
            if (L->bk) op_add(kh, L->bk + hk * HD, HD);
            if (L->bv) op_add(vh, L->bv + hk * HD, HD);
            if (A->qk_norm) op_rmsnorm(kh, kh, L->k_norm, HD, hp->norm_eps);
            K->rope_cs(kh, hp->n_rot, hp->rope_type, cs);
            if (c->rot_k) op_fwht(kh, HD, c->rot_k);     /* llama.cpp's rotation around a */
            if (c->rot_v) op_fwht(vh, HD, c->rot_v);     /* quantized cache (model.h)     */
            uint8_t *kd = kc + part->seq * kseq + ipos * c->k_row_bytes + hk * c->k_head_bytes;
            uint8_t *vd = vc + part->seq * vseq + ipos * c->v_row_bytes + hk * c->v_head_bytes;
            if (c->type_k == PYRT_TYPE_F16) K->fp32_to_fp16(kh, (pyrt_fp16 *)kd, HD);
            else pyrt_kv_quantizer(K, c->type_k)(kh, kd, HD);
            if (c->type_v == PYRT_TYPE_F16) K->fp32_to_fp16(vh, (pyrt_fp16 *)vd, HD);
            else pyrt_kv_quantizer(K, c->type_v)(vh, vd, HD);
        }
    }
    if (f->ith == 0) pool_claim_reset(f->P);   /* for the attention groups below (the qkv claims ended at their barrier) */
    pool_barrier(f->P);

    /* ---- causal attention over the cache, per group: the gqa query heads
     * of one kv head for attn_tok consecutive tokens of a part, within that
     * part's sequence. Groups go round-robin over all parts, so that early
     * (short) and late (long) ones spread over the threads. */
    pyrt_attn_args *a = &f->attn;
    const int64_t n_kv = hp->n_head_kv;
    if (quant_kv) {
        a->type_k = c->type_k;
        a->type_v = c->type_v;
        a->k_bytes = c->k_row_bytes;
        a->v_bytes = c->v_row_bytes;
        a->q_to_dot = K->type[pyrt_type_traits_table[c->type_k].act_type].quantize_act;
        a->k_dot = K->type[c->type_k].vec_dot;
        a->v_to_f32 = K->type[c->type_v].dequantize;
    }
    a->first = 0;
    a->window = swa ? hp->sliding_window : 0;
    /* Single-token parts (decoding, per-token numerics) over an F16 cache,
     * where the table has attn_heads: each thread takes a contiguous run of
     * their (part, token, query head) items, so that the threads share a
     * token's queries evenly even when its kv heads are few (Gemma-3 270m: one);
     * a run's whole kv heads of one token go in one call (at most attn_tok of
     * them, what the scratch holds), reading each cache row's segment of those
     * heads as one run, and a kv head split between threads is a group call
     * over its share of the queries. */
    const int heads = !quant_kv && K->attn_heads;
    if (heads && split_token(f)) {
        /* one decoding token over a long context: the threads share its
         * positions, then its queries, then its dims or value slots
         * (attn_heads_split), so that each streams whole cache rows (split by
         * kv heads, each thread read a piece of every row, and its core's
         * prefetchers fetched the rest too); the scores are one buffer for
         * all, and so are the slots */
        const fwd_part *part = &c->parts[0];
        float *own = a->scores;
        a->scores = c->scores;
        a->slots = c->attn_acc;
        a->batched = 0;
        a->n_tok = 1;
        a->n_head = (int32_t)f->gqa;
        a->n_kv = (int32_t)n_kv;
        a->out = c->att + part->t0 * QD;
        a->q = c->q + part->t0 * QD;
        a->k = (const pyrt_fp16 *)(kc + part->seq * kseq);
        a->v = (const pyrt_fp16 *)(vc + part->seq * vseq);
        a->last = part->pos0;
        for (int phase = 0; phase < PYRT_ATTN_SPLIT_PHASES; phase++) {
            K->attn_heads_split(a, phase, f->ith, f->nth);
            if (phase < PYRT_ATTN_SPLIT_PHASES - 1) pool_barrier(f->P);
        }
        a->scores = own;
        a->n_kv = 1;
    } else if (heads) {
        const int64_t NQ = (int64_t)hp->n_head, G = f->gqa;
        int64_t n_single = 0;
        for (int32_t ip = 0; ip < c->n_parts; ip++)
            if (part_single(&c->parts[ip])) n_single += c->parts[ip].n_tok * NQ;
        pool_split(n_single, f->ith, f->nth, &lo, &hi);
        a->batched = 0;
        a->n_tok = 1;
        int64_t base = 0;                      /* items of the parts before this one */
        for (int32_t ip = 0; ip < c->n_parts && base < hi; ip++) {
            const fwd_part *part = &c->parts[ip];
            if (!part_single(part)) continue;
            const int64_t n_items = part->n_tok * NQ;
            int64_t it = lo > base ? lo - base : 0;
            const int64_t end = hi - base < n_items ? hi - base : n_items;
            while (it < end) {
                const int64_t t = it / NQ, qi = it % NQ, hk = qi / G, g = qi % G;
                const int64_t row_end = (t + 1) * NQ < end ? (t + 1) * NQ : end;   /* this token's items */
                int64_t nq;
                if (g != 0 || row_end - it < G) {   /* part of one kv head's queries */
                    nq = G - g < row_end - it ? G - g : row_end - it;
                    a->n_head = (int32_t)nq;
                    a->n_kv = 1;
                } else {                             /* whole kv heads */
                    int64_t nk = (row_end - it) / G;
                    if (nk > c->attn_tok) nk = c->attn_tok;
                    nq = nk * G;
                    a->n_head = (int32_t)G;
                    a->n_kv = (int32_t)nk;
                }
                const int64_t off = (part->t0 + t) * QD + qi * HD;
                a->out = c->att + off;
                a->q = c->q + off;
                a->k = (const pyrt_fp16 *)(kc + part->seq * kseq + hk * c->k_head_bytes);
                a->v = (const pyrt_fp16 *)(vc + part->seq * vseq + hk * c->v_head_bytes);
                a->last = part->pos0 + (int32_t)t;
                K->attn_heads(a);
                it += nq;
            }
            base += n_items;
        }
        a->n_kv = 1;
        a->n_head = f->gqa;
    }
    /* The groups of the other parts (several tokens each), claimed one at a
     * time, the last (the longest: causal) first: a thread that a neighbour
     * on the host or a slower core holds back takes fewer, instead of its
     * fixed share keeping the others at the barrier. Which thread computes a
     * group does not change its arithmetic. */
    int64_t n_groups = 0;
    for (int32_t ip = 0; ip < c->n_parts; ip++) n_groups += part_claimed_groups(c, &c->parts[ip], heads) * n_kv;
    for (int64_t cl = pool_claim(f->P); cl < n_groups; cl = pool_claim(f->P)) {
        int64_t it = n_groups - 1 - cl;        /* the last group first; below, its index in its part */
        const fwd_part *part = c->parts;
        for (int32_t ip = 0; ip < c->n_parts; ip++) {
            part = &c->parts[ip];
            const int64_t n_part = part_claimed_groups(c, part, heads) * n_kv;
            if (it < n_part) break;
            it -= n_part;
        }
        a->batched = part_batched(part);
        /* a kv head's groups one after another, so that its cache rows stay in
         * the caches between them (a 1.7B model's 32 kv heads at depth 4096 hold
         * 32 MiB of K and V per layer: taken head by head for each token group, every
         * group read its rows from memory) */
        const int64_t g_tok = part_group_tok(c, part), n_tg = part_groups(c, part);
        const int64_t t0 = it % n_tg * g_tok, hk = it / n_tg;
        const int64_t off = (part->t0 + t0) * QD + hk * f->gqa * HD;
        a->out = c->att + off;
        a->q = c->q + off;
        const uint8_t *kh = kc + part->seq * kseq + hk * c->k_head_bytes;
        const uint8_t *vh = vc + part->seq * vseq + hk * c->v_head_bytes;
        a->last = part->pos0 + (int32_t)t0;
        a->n_tok = (int32_t)(part->n_tok - t0 < g_tok ? part->n_tok - t0 : g_tok);
        if (quant_kv) {
            a->kq = kh;
            a->vq = vh;
            K->attn_head_fa(a);
            if (c->rot_v)                   /* rotate the outputs back (llama.cpp's order) */
                for (int32_t t = 0; t < a->n_tok; t++)
                    op_fwht(a->out + (int64_t)t * QD, (int64_t)f->gqa * HD, c->rot_v);
        } else {
            a->k = (const pyrt_fp16 *)kh;
            a->v = (const pyrt_fp16 *)vh;
            K->attn_head(a);
        }
    }
    pool_barrier(f->P);

    /* ---- output projection, residual ---- */
    mm_task o[1] = { { &L->wo, c->tmp, f->E } };
    mm_runs(f, c->runs, c->n_runs, c->att, QD, o, 1);
    residual(f, A->post_norms ? L->post_attn_norm : NULL);
}

/* x += [post_norm] Wdown . (act(Wgate . n(x)) * Wup . n(x)) */
static void feed_forward(fwd *f, int il) {
    pyrt_ctx *c = f->c;
    const layer_weights *L = &f->m->layers[il];
    const int64_t FF = f->FF;
    int64_t lo, hi;

    norm_rows(f, L->ffn_norm);
    mm_task gu[2] = { { &L->w_gate, c->g, FF }, { &L->w_up, c->u, FF } };
    mm_runs(f, c->runs, c->n_runs, c->xn, f->E, gu, 2);
    pool_split((int64_t)f->B * FF, f->ith, f->nth, &lo, &hi);   /* element-wise: split flat */
    if (f->arch->ffn_act == PYRT_ACT_GELU) f->K->geglu(c->g + lo, c->u + lo, hi - lo);
    else                                   f->K->swiglu(c->g + lo, c->u + lo, hi - lo);
    pool_barrier(f->P);
    mm_task d[1] = { { &L->w_down, c->tmp, f->E } };
    mm_runs(f, c->runs, c->n_runs, c->g, FF, d, 1);
    residual(f, f->arch->post_norms ? L->post_ffn_norm : NULL);
}

/* The numerics of one expert's matmul over the n rows routed to it (an
 * mm_group n_shape), as llama.cpp's mul_mat_id on x86 picks them: weights it
 * keeps in their file layout and has a tiled GEMM for (the K-quants but
 * Q4_K, IQ4_XS: pyrt's vec_dot_tiled with the default threshold) take that
 * tiled order when at least 8 rows reach the expert (n as the shape); the
 * others (repacked Q4_K/Q4_0: vec_dot_r8; Q8_0 and the rest) one vec_dot
 * per row. Only for a job that is one batch in its natural shape: in a
 * batch of sequences or in per-token numerics every expert row keeps the
 * single-token order, so a row never depends on how many others reached its
 * expert. */
static int64_t expert_shape(const fwd *f, const pyrt_weight *w, int64_t n) {
    const pyrt_type_kernels *tk = &f->K->type[w->type];
    const pyrt_ctx *c = f->c;
    const int natural = c->n_runs == 1 && c->runs[0].n_shape == f->B;
    const int repacked = tk->vec_dot_r8 && w->rows % 8 == 0;
    return natural && !repacked && tk->vec_dot_tiled && tk->tiled_min_tok == 0 ? n : -1;
}

/* expert e's matrix of a 3-D expert tensor: `rows` rows from row e * rows */
static pyrt_weight expert_matrix(pyrt_weight w, int64_t rows, int64_t e) {
    w.rows = rows;
    w.data = (const char *)w.data + e * rows * w.row_bytes;
    return w;
}

/* most experts per token that feed_forward_moe's single-token path takes in one group */
#define MOE_FUSED_K 16

/* x += sum over the top-k experts e of w_e * Wdown_e . (silu(Wgate_e . n(x)) * Wup_e . n(x)),
 * w = the router's softmax probabilities of the chosen experts, renormalized to sum 1
 * (llama.cpp's build_moe_ffn with norm_w, as Mixtral and Qwen3-MoE use). Each expert's
 * matmuls run only over the tokens routed to it, in the arithmetic llama.cpp's
 * mul_mat_id gives them (expert_shape). */
static void feed_forward_moe(fwd *f, int il) {
    pyrt_ctx *c = f->c;
    const pyrt_hparams *hp = f->hp;
    const layer_weights *L = &f->m->layers[il];
    const int64_t E = f->E, NE = hp->n_expert, K = hp->n_expert_used, FE = hp->n_ff_exp;
    int64_t lo, hi;

    norm_rows(f, L->ffn_norm);
    /* ---- routing: logits (llama.cpp's F32 tinyBLAS dot; every (token, expert)
     * pair split over the threads), probabilities, top-k (descending, as ggml's
     * argsort), weights ---- */
    pool_split(f->B * NE, f->ith, f->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        c->moe_w[r] = f->K->dot_f32_8((const float *)L->gate_inp.data + (r % NE) * E, c->xn + (r / NE) * E, E);
    pool_barrier(f->P);
    pool_split(f->B, f->ith, f->nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        float *p = c->moe_w + t * NE;
        f->K->softmax(p, NE);
        int32_t *id = c->moe_id + t * K;
        for (int64_t j = 0; j < K; j++) {          /* selection: best first, ties to the lower id */
            int32_t best = -1;
            for (int32_t e = 0; e < NE; e++) {
                int taken = 0;
                for (int64_t q = 0; q < j; q++) taken |= id[q] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            id[j] = best;
        }
        double sum = 0.0;                          /* ggml_sum_rows: a double sum */
        for (int64_t j = 0; j < K; j++) sum += (double)p[id[j]];
        float fs = (float)sum;
        if (fs < 6.103515625e-5f) fs = 6.103515625e-5f;   /* llama.cpp's clamp */
        float w[64];
        for (int64_t j = 0; j < K && j < 64; j++) w[j] = p[id[j]] / fs;
        for (int64_t j = 0; j < K && j < 64; j++) p[j] = w[j];   /* p[0..K): the weights */
    }
    pool_barrier(f->P);

    /* ---- one token (decoding): every chosen expert's gate and up in one matmul
     * group over the same input (one quantization, one pass of both threads over
     * all of their rows instead of a group per expert), then SwiGLU and each down
     * projection; the same dot products as the loop below (one vec_dot per row) ---- */
    if (f->B == 1 && K <= MOE_FUSED_K && K <= c->n_batch) {
        const int32_t *id = c->moe_id;
        pyrt_weight wg[MOE_FUSED_K], wu[MOE_FUSED_K];
        mm_task gu[2 * MOE_FUSED_K];
        int n_gu = 0;
        for (int64_t j = 0; j < K; j++) {
            wg[j] = expert_matrix(L->gate_exps, FE, id[j]);
            wu[j] = expert_matrix(L->up_exps, FE, id[j]);
            gu[n_gu++] = (mm_task){ &wg[j], c->g + j * FE, FE };
            gu[n_gu++] = (mm_task){ &wu[j], c->u + j * FE, FE };
        }
        mm_group(f->K, f->P, f->ith, f->nth, c->xn, E, 1, -1, gu, n_gu, c->qbuf);
        pool_split(K, f->ith, f->nth, &lo, &hi);
        for (int64_t j = lo; j < hi; j++) f->K->swiglu(c->g + j * FE, c->u + j * FE, FE);
        pool_barrier(f->P);
        for (int64_t j = 0; j < K; j++) {
            const pyrt_weight wd = expert_matrix(L->down_exps, E, id[j]);
            mm_task d[1] = { { &wd, c->moe_out + j * E, E } };
            mm_group(f->K, f->P, f->ith, f->nth, c->g + j * FE, FE, 1, -1, d, 1, c->qbuf);
        }
        pool_split(K, f->ith, f->nth, &lo, &hi);   /* weighted, as the loop below */
        for (int64_t j = lo; j < hi; j++) op_scale(c->moe_out + j * E, c->moe_w[j], E);
        pool_barrier(f->P);
    } else
    /* ---- each expert over the tokens routed to it ---- */
    for (int32_t e = 0; e < NE; e++) {
        int64_t n = 0;                             /* rows (t, slot) routed to e, in token order */
        for (int64_t r = 0; r < f->B * K; r++) n += c->moe_id[r] == e;
        if (n == 0) continue;
        pool_split(n, f->ith, f->nth, &lo, &hi);
        for (int64_t r = 0, i = 0; r < f->B * K && i < hi; r++) {
            if (c->moe_id[r] != e) continue;
            if (i >= lo) memcpy(c->moe_x + i * E, c->xn + (r / K) * E, sizeof(float) * (size_t)E);
            i++;
        }
        pool_barrier(f->P);
        const pyrt_weight wg = expert_matrix(L->gate_exps, FE, e), wu = expert_matrix(L->up_exps, FE, e),
                          wd = expert_matrix(L->down_exps, E, e);
        mm_task gu[2] = { { &wg, c->g, FE }, { &wu, c->u, FE } };
        const int64_t sg = expert_shape(f, &wg, n), su = expert_shape(f, &wu, n);
        if (sg == su) {
            mm_group(f->K, f->P, f->ith, f->nth, c->moe_x, E, n, sg, gu, 2, c->qbuf);
        } else {
            mm_group(f->K, f->P, f->ith, f->nth, c->moe_x, E, n, sg, gu, 1, c->qbuf);
            mm_group(f->K, f->P, f->ith, f->nth, c->moe_x, E, n, su, gu + 1, 1, c->qbuf);
        }
        pool_split(n, f->ith, f->nth, &lo, &hi);   /* per row, as ggml's swiglu */
        for (int64_t i = lo; i < hi; i++) f->K->swiglu(c->g + i * FE, c->u + i * FE, FE);
        pool_barrier(f->P);
        mm_task d[1] = { { &wd, c->tmp, E } };
        mm_group(f->K, f->P, f->ith, f->nth, c->g, FE, n, expert_shape(f, &wd, n), d, 1, c->qbuf);
        pool_split(n, f->ith, f->nth, &lo, &hi);   /* weighted, into the (token, slot) row */
        for (int64_t r = 0, i = 0; r < f->B * K && i < hi; r++) {
            if (c->moe_id[r] != e) continue;
            if (i >= lo) {
                const float w = c->moe_w[(r / K) * NE + r % K];
                float *o = c->moe_out + r * E;
                const float *y = c->tmp + i * E;
                for (int64_t j = 0; j < E; j++) o[j] = y[j] * w;
            }
            i++;
        }
        pool_barrier(f->P);
    }
    /* ---- sum the slots in order (llama.cpp's chain of adds), residual ---- */
    pool_split(f->B, f->ith, f->nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        float *y = c->tmp + t * E;
        memcpy(y, c->moe_out + t * K * E, sizeof(float) * (size_t)E);
        for (int64_t j = 1; j < K; j++) op_add(y, c->moe_out + (t * K + j) * E, E);
    }
    residual(f, f->arch->post_norms ? L->post_ffn_norm : NULL);
}

/* The rows the caller asked for: final norm, then logits (or the normed
 * hidden states themselves for embeddings). */
static void output(fwd *f) {
    pyrt_ctx *c = f->c;
    const pyrt_model *m = f->m;
    int64_t lo, hi;
    if (c->n_out == 0) return;
    pool_split(c->n_out, f->ith, f->nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const int64_t src = c->out_tok[t];
        float *dst = c->out_kind == PYRT_OUT_EMBD_ALL ? c->out + t * f->E : c->xn + t * f->E;
        op_rmsnorm(dst, c->x + src * f->E, m->out_norm, f->E, f->hp->norm_eps);
    }
    pool_barrier(f->P);
    if (c->out_kind == PYRT_OUT_EMBD_ALL) return;
    mm_task lg[1] = { { &m->output, c->out, f->hp->n_vocab } };
    mm_runs(f, c->out_runs, c->n_out_runs, c->xn, f->E, lg, 1);
    if (m->output_b || f->hp->final_softcap != 0.0f) {
        /* logits += output.bias (qwen2, phi3 files may have one); gemma2's final soft-capping */
        const int64_t V = f->hp->n_vocab;
        pool_split(c->n_out, f->ith, f->nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++) {
            float *row = c->out + t * V;
            if (m->output_b) op_add(row, m->output_b, V);
            if (f->hp->final_softcap != 0.0f)
                for (int64_t i = 0; i < V; i++) row[i] = pyrt_softcap(row[i], f->hp->final_softcap);
        }
        pool_barrier(f->P);
    }
}

static void forward_job(void *arg, int ith, int nth) {
    pyrt_ctx *c = arg;
    const pyrt_model *m = c->m;
    const pyrt_hparams *hp = &m->hp;
    fwd f = {
        .c = c, .m = m, .hp = hp, .arch = m->arch, .K = pyrt_kernels_current(), .P = c->pool,
        .ith = ith, .nth = nth,
        .E = hp->n_embd, .HD = hp->head_dim, .KVD = c->kv_dim,
        .QD = (int64_t)hp->n_head * hp->head_dim, .FF = hp->n_ff,
        .B = c->n_tok, .gqa = hp->n_head / hp->n_head_kv,
        .attn_scale = hp->attn_scale > 0 ? hp->attn_scale : 1.0f / sqrtf((float)hp->head_dim),
    };
    f.attn = (pyrt_attn_args){
        .stride = f.KVD, .head_dim = (int32_t)f.HD,
        .scale = m->arch->q_prescale ? 1.0f : f.attn_scale,   /* else q was scaled in attention() */
        .scores = c->scores + (size_t)ith * ctx_attn_scores_floats(c),
        .probs16 = c->probs16 + (size_t)ith * (c->n_ctx + 32),
        .q16 = c->q16 + (size_t)ith * f.HD,
        .acc = c->attn_acc + (size_t)ith * ctx_attn_acc_floats(c),
        .n_head = f.gqa, .q_stride = f.QD,
        .softcap = hp->attn_softcap,
    };

    embed_tokens(&f);
    for (int il = 0; il < hp->n_layer; il++) {
        attention(&f, il);
        if (hp->n_expert > 0) feed_forward_moe(&f, il);
        else                  feed_forward(&f, il);
        /* one consistent abort decision for all threads: written before the
         * barrier by thread 0, read after it by everyone */
        if (ith == 0) c->stop_now = atomic_load(&c->abort_req);
        pool_barrier(f.P);
        if (c->stop_now) return;
    }
    output(&f);
}

/* A run of rows [r0, r0+n) in numerics `shape` (a part's n_shape, or its
 * size): single-token shapes join the run before when it is one too. */
static void add_run(fwd_run *runs, int32_t *n_runs, int32_t r0, int32_t n, int32_t shape) {
    if (n <= 0) return;
    if (shape == 1 || shape < 0) {
        shape = PYRT_NUMERICS_PER_TOKEN;
        fwd_run *last = *n_runs > 0 ? &runs[*n_runs - 1] : NULL;
        if (last && last->n_shape == shape && last->r0 + last->n == r0) {
            last->n += n;
            return;
        }
    }
    runs[(*n_runs)++] = (fwd_run){ r0, n, shape };
}

/* Lay out the job of c->parts[0..n_parts) (seq, pos0, n_tok, n_shape,
 * out_first, n_out set): token and output offsets, each token's part, each
 * output row's token, and the matmul runs. */
static void plan_job(pyrt_ctx *c) {
    int32_t t = 0, o = 0;
    c->n_runs = c->n_out_runs = 0;
    for (int32_t ip = 0; ip < c->n_parts; ip++) {
        fwd_part *p = &c->parts[ip];
        p->t0 = t;
        p->o0 = o;
        for (int32_t j = 0; j < p->n_tok; j++) c->tok_part[t + j] = ip;
        for (int32_t j = 0; j < p->n_out; j++) c->out_tok[o + j] = t + p->out_first + j;
        add_run(c->runs, &c->n_runs, t, p->n_tok, p->n_shape != 0 ? p->n_shape : p->n_tok);
        add_run(c->out_runs, &c->n_out_runs, o, p->n_out,
                p->n_shape != 0 && p->n_out == p->n_tok ? p->n_shape : p->n_out);
        t += p->n_tok;
        o += p->n_out;
    }
    c->n_tok = t;
    c->n_out = o;
}

/* Run the planned job; on abort every part's sequence keeps only the
 * positions before its part (n_past was set to pos0 before the call). */
static int run_job(pyrt_ctx *c) {
    plan_job(c);
    c->stop_now = 0;
    pool_run(c->pool, forward_job, c);
    if (c->stop_now) return pyrt_set_error(PYRT_ERR_ABORTED, "decode: aborted");
    for (int32_t ip = 0; ip < c->n_parts; ip++) c->n_past[c->parts[ip].seq] = c->parts[ip].pos0 + c->parts[ip].n_tok;
    return PYRT_OK;
}

static int check_tokens(const pyrt_hparams *hp, const int32_t *tokens, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: token id %d at index %lld outside [0, %d)",
                                  tokens[i], (long long)i, hp->n_vocab);
    return PYRT_OK;
}

int pyrt_decode_batch(pyrt_ctx *c, const int32_t *tokens, const pyrt_batch_seq *segs, int32_t n_segs,
                      float *out, int64_t out_len) {
    if (!c || !tokens || !segs) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: NULL argument");
    if (c->cuda) return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "decode_batch: needs the CPU backend");
    if (n_segs < 1 || n_segs > c->n_seq)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: %d parts, need [1, %d]", n_segs, c->n_seq);
    const pyrt_hparams *hp = &c->m->hp;
    int64_t total = 0, rows = 0;
    for (int32_t i = 0; i < n_segs; i++) {
        const pyrt_batch_seq *b = &segs[i];
        if (b->seq < 0 || b->seq >= c->n_seq)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: part %d: sequence %d not in [0, %d)", i, b->seq, c->n_seq);
        for (int32_t j = 0; j < i; j++)
            if (segs[j].seq == b->seq)
                return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: sequence %d appears twice", b->seq);
        if (b->n_tokens < 1) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: part %d: n_tokens %d must be >= 1", i, b->n_tokens);
        if (b->pos0 < 0 || b->pos0 > c->n_past[b->seq])
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: part %d: pos0 %d must be in [0, n_past=%d]",
                                  i, b->pos0, c->n_past[b->seq]);
        if ((int64_t)b->pos0 + b->n_tokens > c->n_ctx)
            return pyrt_set_error(PYRT_ERR_CONTEXT_FULL, "decode_batch: part %d: %d tokens at position %d exceed n_ctx %d",
                                  i, b->n_tokens, b->pos0, c->n_ctx);
        if (b->out_kind != PYRT_OUT_NONE && b->out_kind != PYRT_OUT_LOGITS_LAST && b->out_kind != PYRT_OUT_LOGITS_ALL)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: part %d: out_kind %d (NONE, LOGITS_LAST or LOGITS_ALL)", i, b->out_kind);
        if (b->n_shape < PYRT_NUMERICS_PER_TOKEN)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: part %d: n_shape %d < -1", i, b->n_shape);
        total += b->n_tokens;
        rows += b->out_kind == PYRT_OUT_LOGITS_ALL ? b->n_tokens : b->out_kind == PYRT_OUT_LOGITS_LAST;
    }
    if (total > c->n_batch)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: %lld tokens exceed n_batch %d", (long long)total, c->n_batch);
    const int st = check_tokens(hp, tokens, total);
    if (st) return st;
    if (rows > 0 && (!out || out_len < rows * hp->n_vocab))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode_batch: output buffer holds %lld floats, need %lld",
                              (long long)out_len, (long long)(rows * hp->n_vocab));

    atomic_store(&c->abort_req, 0);
    c->tokens = tokens;
    c->out_kind = PYRT_OUT_LOGITS_ALL;          /* logits rows, however many each part has */
    c->out = rows > 0 ? out : NULL;
    c->n_parts = n_segs;
    for (int32_t i = 0; i < n_segs; i++) {
        const pyrt_batch_seq *b = &segs[i];
        const int32_t n_out = b->out_kind == PYRT_OUT_LOGITS_ALL ? b->n_tokens : b->out_kind == PYRT_OUT_LOGITS_LAST;
        c->parts[i] = (fwd_part){ .seq = b->seq, .pos0 = b->pos0, .n_tok = b->n_tokens, .n_shape = b->n_shape,
                                  .out_first = b->n_tokens - n_out, .n_out = n_out };
        c->n_past[b->seq] = b->pos0;
    }
    return run_job(c);
}

int pyrt_decode(pyrt_ctx *c, const int32_t *tokens, int32_t n_tokens, int32_t pos0,
                int32_t out_kind, float *out, int64_t out_len) {
    if (!c || !tokens) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: NULL argument");
    const pyrt_hparams *hp = &c->m->hp;
    if (n_tokens <= 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: n_tokens %d must be >= 1", n_tokens);
    if (pos0 < 0 || pos0 > c->n_past[0])
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: pos0 %d must be in [0, n_past=%d]", pos0, c->n_past[0]);
    if ((int64_t)pos0 + n_tokens > c->n_ctx)
        return pyrt_set_error(PYRT_ERR_CONTEXT_FULL, "decode: %d tokens at position %d exceed n_ctx %d",
                              n_tokens, pos0, c->n_ctx);
    const int tst = check_tokens(hp, tokens, n_tokens);
    if (tst) return tst;
    int64_t need = 0;
    switch (out_kind) {
    case PYRT_OUT_NONE: break;
    case PYRT_OUT_LOGITS_LAST: need = hp->n_vocab; break;
    case PYRT_OUT_LOGITS_ALL: need = (int64_t)n_tokens * hp->n_vocab; break;
    case PYRT_OUT_EMBD_ALL: need = (int64_t)n_tokens * hp->n_embd; break;
    default: return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: unknown out_kind %d", out_kind);
    }
    if (need > 0 && (!out || out_len < need))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: output buffer holds %lld floats, need %lld", (long long)out_len, (long long)need);

    atomic_store(&c->abort_req, 0);
    c->n_past[0] = pos0;
    if (c->cuda) {
        const int st = pyrt_cuda_decode(c->cuda, tokens, n_tokens, pos0, out_kind, out, out_len,
                                        (const volatile int *)&c->abort_req);
        if (st == PYRT_OK) c->n_past[0] = pos0 + n_tokens;
        return st;
    }
    /* one part per chunk of n_batch tokens, each in its own shape */
    c->out_kind = out_kind;
    c->n_parts = 1;
    for (int32_t done = 0; done < n_tokens; ) {
        const int32_t n = n_tokens - done < c->n_batch ? n_tokens - done : c->n_batch;
        const int last_chunk = done + n == n_tokens;
        int32_t n_out = 0;
        c->tokens = tokens + done;
        c->out = NULL;
        switch (out_kind) {
        case PYRT_OUT_LOGITS_LAST:
            n_out = last_chunk; c->out = out; break;
        case PYRT_OUT_LOGITS_ALL:
            n_out = n; c->out = out + (int64_t)done * hp->n_vocab; break;
        case PYRT_OUT_EMBD_ALL:
            n_out = n; c->out = out + (int64_t)done * hp->n_embd; break;
        default: break;
        }
        c->parts[0] = (fwd_part){ .seq = 0, .pos0 = pos0 + done, .n_tok = n, .n_shape = c->n_shape,
                                  .out_first = n - n_out, .n_out = n_out };
        const int st = run_job(c);
        if (st) {
            c->n_past[0] = pos0;
            return st;
        }
        done += n;
    }
    return PYRT_OK;
}
