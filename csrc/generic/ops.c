/* generic/ops.c — see ops.h. */
#include "ops.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

void op_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    if (w) for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
    else   for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale;
}

void op_add(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void op_scale(float *x, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

/* pair i of x rotated by (c, s), each product rounded (the scalar reference) */
static void rotate_plain(float *x, int32_t half, int32_t i, int32_t mode, float c, float s) {
    float *a, *b;
    if (mode == PYRT_ROPE_NEOX) { a = &x[i]; b = &x[i + half]; }
    else                        { a = &x[2 * i]; b = &x[2 * i + 1]; }
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
}

void op_rope(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale,
             const float *ff, float mscale) {
    /* theta_i = pos * base^(-2i/n_rot), built by repeated multiplication in
     * float like ggml so the rounding matches. */
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta = pos;
    const int32_t half = n_rot / 2;
    for (int32_t i = 0; i < half; i++) {
        float c, s;
        op_rope_angle(theta, i, freq_scale, ff, mscale, &c, &s);
        rotate_plain(x, half, i, mode, c, s);
        theta *= theta_scale;
    }
}

void op_rope_cache(float *cs, int32_t n_rot, float pos, float freq_base, float freq_scale, const float *ff,
                   float mscale) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta = pos;
    const int32_t half = n_rot / 2;
    for (int32_t i = 0; i < half; i++) {
        op_rope_angle(theta, i, freq_scale, ff, mscale, &cs[i], &cs[half + i]);
        theta *= theta_scale;
    }
}

void op_rope_cs(float *x, int32_t n_rot, int32_t mode, const float *cs) {
    const int32_t half = n_rot / 2;
    for (int32_t i = 0; i < half; i++) rotate_plain(x, half, i, mode, cs[i], cs[half + i]);
}

void op_swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

/* GELU (tanh form) as llama.cpp's CPU backend computes it: from a table over
 * all fp16 inputs, x rounded to fp16 and the result stored as fp16 (its
 * GGML_GELU_FP16 path), identity above 10 and zero below -10. Each entry is
 * 0.5x(1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))) with 1 + 0.044715 x^2 as one
 * FMA, which is how its table initializer compiles on x86 (checked against
 * all 65536 entries of llama.cpp's table). */
/* one spare entry: vector kernels fetch 4 bytes per 2-byte entry */
static uint16_t g_gelu_f16[(1 << 16) + 2];
static pthread_once_t g_gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void) {
    const float a = 0.044715f, s = 0.79788456080286535587989211986876f;
    for (uint32_t i = 0; i < (1u << 16); i++) {
        const float x = pyrt_fp16_to_fp32((pyrt_fp16)i);
        const float inner = fmaf(a * x, x, 1.0f);
        g_gelu_f16[i] = pyrt_fp32_to_fp16(0.5f * x * (1.0f + tanhf(s * x * inner)));
    }
}

const uint16_t *pyrt_gelu_table(void) {
    pthread_once(&g_gelu_once, gelu_table_init);
    return g_gelu_f16;
}

void op_geglu(float *g, const float *u, int64_t n) {
    const uint16_t *tab = pyrt_gelu_table();
    for (int64_t i = 0; i < n; i++) {
        const float v = g[i];
        if (v <= -10.0f)     g[i] = 0.0f;
        else if (v >= 10.0f) g[i] = v * u[i];
        else                 g[i] = pyrt_fp16_to_fp32(tab[pyrt_fp32_to_fp16(v)]) * u[i];
    }
}

float op_dot_f32_8(const float *w, const float *x, int64_t n) {
    float l[8] = { 0 };
    for (int64_t i = 0; i < n; i += 8)
        for (int j = 0; j < 8; j++) l[j] = fmaf(w[i + j], x[i + j], l[j]);
    const float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    return (a0 + a2) + (a1 + a3);
}

void op_softmax(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) { const float e = expf(x[i] - mx); x[i] = e; sum += e; }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static void attention_one(const pyrt_attn_args *a) {
    const int32_t hd = a->head_dim, n = a->last - a->first + 1;
    const pyrt_fp16 *k = a->k + (int64_t)a->first * a->stride;
    const pyrt_fp16 *v = a->v + (int64_t)a->first * a->stride;
    for (int32_t d = 0; d < hd; d++) a->q16[d] = pyrt_fp32_to_fp16(a->q[d]);
    for (int32_t j = 0; j < n; j++) {
        float s = 0.0f;
        for (int32_t d = 0; d < hd; d++)
            s += pyrt_fp16_to_fp32(k[(int64_t)j * a->stride + d]) * pyrt_fp16_to_fp32(a->q16[d]);
        a->scores[j] = pyrt_softcap(s * a->scale, a->softcap);
    }
    op_softmax(a->scores, n);
    for (int32_t d = 0; d < hd; d++) a->out[d] = 0.0f;
    for (int32_t j = 0; j < n; j++) {
        const float p = pyrt_fp16_to_fp32(pyrt_fp32_to_fp16(a->scores[j]));
        const pyrt_fp16 *vj = v + (int64_t)j * a->stride;
        for (int32_t d = 0; d < hd; d++) a->out[d] += p * pyrt_fp16_to_fp32(vj[d]);
    }
}

void op_attention_head(const pyrt_attn_args *a) {
    pyrt_attn_each_query(a, attention_one);
}

void op_fwht(float *x, int64_t n, int32_t len) {
    const float scale = 1.0f / sqrtf((float)len);
    for (int64_t c = 0; c + len <= n; c += len) {
        float *y = x + c;
        for (int32_t j = 0; j < len; j++) y[j] *= scale;
        for (int32_t w = 1; w < len; w <<= 1)
            for (int32_t i = 0; i < len; i += 2 * w)
                for (int32_t j = i; j < i + w; j++) {
                    const float u = y[j], v = y[j + w];
                    y[j] = u + v;
                    y[j + w] = u - v;
                }
    }
}

/* ---- attention over a quantized KV cache (kernels.h: attn_head_fa) ----------
 * llama.cpp takes its flash-attention path whenever the V cache is quantized
 * (it refuses a quantized V without it), and a quantized K is read there by
 * the K type's own dot product against q converted to that dot's activation
 * type. Every step below is one rounding of an element-wise operation, so a
 * SIMD kernel that does the same per element (x86/ops_avx2.c) agrees bit for
 * bit; only the K dot's order is the table's, as in llama.cpp. */

/* Scratch of one query in a->acc (kernels.h asks for >= 32*head_dim floats):
 * [0, hd) f32 accumulator, [hd, 2hd) one dequantized V row, [2hd, 2.5hd) the
 * F16 accumulator (F16 V), [3hd, ...) q in K's dot type (<= 2*hd bytes). */
#define FA_VKQ(a)   ((a)->acc)
#define FA_V32(a)   ((a)->acc + (a)->head_dim)
#define FA_VKQ16(a) ((pyrt_fp16 *)((a)->acc + 2 * (int64_t)(a)->head_dim))
#define FA_QQ(a)    ((void *)((a)->acc + 3 * (int64_t)(a)->head_dim))

/* The running sum after one position: llama.cpp's S = S*ms + vs, which its
 * build (GCC, -ffp-contract=fast with FMA) computes as one fused multiply-add. */
static inline float fa_sum(float S, float ms, float vs) { return fmaf(S, ms, vs); }

static void attention_fa_one(const pyrt_attn_args *a) {
    const int32_t hd = a->head_dim;
    float *vkq = FA_VKQ(a), *v32 = FA_V32(a);
    pyrt_fp16 *vkq16 = FA_VKQ16(a);
    void *qq = FA_QQ(a);
    const int v16 = a->type_v == PYRT_TYPE_F16;
    const float scale = a->softcap != 0.0f ? a->scale / a->softcap : a->scale;
    a->q_to_dot(a->q, qq, hd);
    if (v16) memset(vkq16, 0, sizeof(pyrt_fp16) * (size_t)hd);
    else     memset(vkq, 0, sizeof(float) * (size_t)hd);
    float S = 0.0f, M = -INFINITY;
    for (int32_t j = a->first; j <= a->last; j++) {
        float s;
        a->k_dot(hd, &s, (const uint8_t *)a->kq + (int64_t)j * a->k_bytes, qq);
        s = s * scale;
        if (a->softcap != 0.0f) s = a->softcap * tanhf(s);
        const float Mold = M;
        float ms = 1.0f, vs = 1.0f;
        const uint8_t *vj = (const uint8_t *)a->vq + (int64_t)j * a->v_bytes;
        if (s > M) {                      /* new maximum: rescale what was summed */
            M = s;
            ms = expf(Mold - M);
            if (v16) for (int32_t d = 0; d < hd; d++) vkq16[d] = pyrt_fp32_to_fp16(pyrt_fp16_to_fp32(vkq16[d]) * ms);
            else     for (int32_t d = 0; d < hd; d++) vkq[d] *= ms;
        } else {
            vs = expf(s - M);
        }
        if (v16) {
            const pyrt_fp16 *x = (const pyrt_fp16 *)vj;
            for (int32_t d = 0; d < hd; d++)
                vkq16[d] = pyrt_fp32_to_fp16(fmaf(pyrt_fp16_to_fp32(x[d]), vs, pyrt_fp16_to_fp32(vkq16[d])));
        } else {
            a->v_to_f32(vj, v32, hd);
            for (int32_t d = 0; d < hd; d++) vkq[d] = fmaf(v32[d], vs, vkq[d]);
        }
        S = fa_sum(S, ms, vs);
    }
    if (v16) for (int32_t d = 0; d < hd; d++) vkq[d] = pyrt_fp16_to_fp32(vkq16[d]);
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    for (int32_t d = 0; d < hd; d++) a->out[d] = vkq[d] * inv;
}

static void op_attention_head_fa(const pyrt_attn_args *a) {
    pyrt_attn_each_query(a, attention_fa_one);
}

/* f32 -> Q4_0 as llama.cpp stores a Q4_0 cache row (its reference rounding:
 * d = (the value of largest magnitude) / -8, q = min(15, trunc(x/d + 8.5))) */
static void quant_q4_0_ref(const float *src, void *dst, int64_t n) {
    block_q4_0 *y = (block_q4_0 *)dst;          /* [n/32] */
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const float *x = src + i * QK4_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = pyrt_fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const float x0 = x[j] * id, x1 = x[QK4_0 / 2 + j] * id;
            const int8_t i0 = (int8_t)(x0 + 8.5f), i1 = (int8_t)(x1 + 8.5f);
            const uint8_t q0 = i0 < 15 ? (uint8_t)i0 : 15, q1 = i1 < 15 ? (uint8_t)i1 : 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void pyrt_fill_ops_scalar(pyrt_kernels *k) {
    k->attn_head_fa = op_attention_head_fa;
    k->type[PYRT_TYPE_Q4_0].quantize_row = quant_q4_0_ref;
    k->rope = op_rope;
    k->rope_cache = op_rope_cache;
    k->rope_cs = op_rope_cs;
    k->swiglu = op_swiglu;
    k->geglu = op_geglu;
    k->attn_head = op_attention_head;
    k->softmax = op_softmax;
    k->dot_f32_8 = op_dot_f32_8;
}
