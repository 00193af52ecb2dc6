/* check.c — pyrt's NEON ops (arm/ops_neon.c, attention over an F16 cache at
 * 1..8 tokens x 2 query heads per kv head, softmax, SwiGLU, rope, and the
 * generic rms_norm) against ggml's CPU backend cross-built for baseline
 * AArch64 (no FP16 vector arithmetic, llamafile on as llama.cpp builds it),
 * on the same inputs, bit for bit. The attention graph is llama.cpp's
 * non-flash one: K.Q with Q permuted (so not contiguous), soft_max_ext with
 * an F16 causal mask, V^T (the transposed cache) times the probabilities.
 * Built and run under qemu-aarch64 by run.sh; prints one line per case and
 * exits 1 if any differs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"
#include "ggml-cpu.h"
#include "kernels.h"
#include "ops.h"

static unsigned long long rng = 88172645463325252ULL;
static double unif(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (rng >> 11) * (1.0 / 9007199254740992.0); }
static double gauss(void) { double u = unif() + 1e-300, v = unif(); return sqrt(-2 * log(u)) * cos(6.283185307179586 * v); }

int main(void) {
    const pyrt_kernels *K = pyrt_kernels_get(PYRT_KERNELS_NEON);
    int fails = 0, cases = 0;
    const int HD[] = {64, 128, 40}, NT[] = {1, 2, 5, 8}, POS[] = {0, 37, 100, 200};
    for (int hi = 0; hi < 3; hi++) for (int ti = 0; ti < 4; ti++) for (int pi = 0; pi < 4; pi++) {
        const int hd = HD[hi], nt = NT[ti], pos0 = POS[pi], nh = 2, n_kv = 256;
        struct ggml_init_params ip = { 64 << 20, NULL, false };
        struct ggml_context *ctx = ggml_init(ip);
        struct ggml_tensor *k = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, hd, n_kv);
        struct ggml_tensor *vt = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, hd);
        struct ggml_tensor *q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, nh, nt);
        struct ggml_tensor *mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, 64);
        pyrt_fp16 *kd = k->data, *vtd = vt->data, *md = mask->data;
        pyrt_fp16 *vrow = malloc(sizeof(pyrt_fp16) * n_kv * hd);
        float *qd = q->data;
        for (int j = 0; j < n_kv; j++)
            for (int d = 0; d < hd; d++) {
                kd[j * hd + d] = ggml_fp32_to_fp16((float)gauss());
                vrow[j * hd + d] = vtd[d * n_kv + j] = ggml_fp32_to_fp16((float)gauss());
            }
        for (int i = 0; i < hd * nh * nt; i++) qd[i] = (float)(gauss() * 3);
        for (int t = 0; t < 64; t++)
            for (int j = 0; j < n_kv; j++) md[t * n_kv + j] = ggml_fp32_to_fp16(t < nt && j <= pos0 + t ? 0.0f : -INFINITY);
        const float scale = 1.0f / sqrtf((float)hd);
        struct ggml_tensor *qp = ggml_permute(ctx, q, 0, 2, 1, 3);
        struct ggml_tensor *kq = ggml_mul_mat(ctx, k, qp);
        kq = ggml_soft_max_ext(ctx, kq, mask, scale, 0.0f);
        struct ggml_tensor *kqv = ggml_mul_mat(ctx, vt, kq);     /* [hd, nt, nh] */
        struct ggml_cgraph *gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, kqv);
        ggml_graph_compute_with_ctx(ctx, gf, 1);

        float *out = calloc((size_t)nt * nh * hd, sizeof(float));
        float *scores = calloc((size_t)nt * nh * (n_kv + 32), sizeof(float));
        float *acc = calloc((size_t)(32 * hd + nt * nh * (hd + 264)), sizeof(float));
        pyrt_fp16 *p16 = calloc(n_kv + 32, sizeof(pyrt_fp16)), *q16 = calloc(hd, sizeof(pyrt_fp16));
        pyrt_attn_args a;
        memset(&a, 0, sizeof a);
        a.out = out; a.q = qd; a.k = kd; a.v = vrow; a.stride = hd; a.head_dim = hd;
        a.first = 0; a.last = pos0; a.batched = nt > 1; a.scale = scale;
        a.scores = scores; a.probs16 = p16; a.q16 = q16; a.acc = acc;
        a.n_tok = nt; a.n_head = nh; a.q_stride = nh * hd;
        K->attn_head(&a);
        const float *g = kqv->data;
        int bad = 0; double maxd = 0;
        for (int t = 0; t < nt; t++) for (int h = 0; h < nh; h++) for (int d = 0; d < hd; d++) {
            const float x = out[(t * nh + h) * hd + d], y = g[(h * nt + t) * hd + d];
            if (memcmp(&x, &y, 4)) { bad++; if (fabs(x - y) > maxd) maxd = fabs(x - y); }
        }
        cases++;
        if (bad) fails++;
        printf("hd=%3d nt=%d pos0=%3d: %s (%d of %d differ, max %.3g)\n", hd, nt, pos0, bad ? "DIFF" : "same", bad, nt * nh * hd, maxd);
        free(out); free(scores); free(acc); free(p16); free(q16); free(vrow);
        ggml_free(ctx);
    }
    for (int n = 5; n <= 4099; n = n * 3 + 2) {
        struct ggml_init_params ip = { 16 << 20, NULL, false };
        struct ggml_context *ctx = ggml_init(ip);
        struct ggml_tensor *x = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n), *u = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
        float *xd = x->data, *ud = u->data, *mine = malloc(sizeof(float) * n), *mine2 = malloc(sizeof(float) * n);
        for (int i = 0; i < n; i++) { xd[i] = mine[i] = mine2[i] = (float)(gauss() * (i % 5 ? 3 : 40)); ud[i] = (float)gauss(); }
        struct ggml_tensor *sw = ggml_swiglu_split(ctx, x, u), *sm = ggml_soft_max(ctx, x);
        struct ggml_cgraph *gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, sw);
        ggml_build_forward_expand(gf, sm);
        ggml_graph_compute_with_ctx(ctx, gf, 1);
        K->swiglu(mine, ud, n);
        K->softmax(mine2, n);
        cases += 2;
        const int a1 = memcmp(mine, sw->data, sizeof(float) * n) != 0, a2 = memcmp(mine2, sm->data, sizeof(float) * n) != 0;
        fails += a1 + a2;
        if (a2) { const float *r = sm->data; for (int i = 0; i < n; i++) if (memcmp(&r[i], &mine2[i], 4)) { printf("  softmax first diff at %d: x=%a ggml=%a pyrt=%a\n", i, xd[i], r[i], mine2[i]); break; } }
        printf("n=%d: swiglu %s, softmax %s\n", n, a1 ? "DIFF" : "same", a2 ? "DIFF" : "same");
        free(mine); free(mine2);
        ggml_free(ctx);
    }
    for (int mode = 0; mode <= 2; mode += 2) {          /* rope (normal, neox) and rms_norm * w */
        const int hd = 128, nh = 3, n = 4096;
        struct ggml_init_params ip = { 16 << 20, NULL, false };
        struct ggml_context *ctx = ggml_init(ip);
        struct ggml_tensor *x = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, nh, 1);
        struct ggml_tensor *pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 1);
        struct ggml_tensor *h = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n), *w = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
        float *xd = x->data, *hd_ = h->data, *wd = w->data;
        float mine[3 * 128], mine_n[4096];
        for (int i = 0; i < hd * nh; i++) xd[i] = mine[i] = (float)gauss();
        for (int i = 0; i < n; i++) { hd_[i] = (float)(gauss() * 4); wd[i] = (float)gauss(); }
        ((int32_t *)pos->data)[0] = 1234;
        struct ggml_tensor *r = ggml_rope_ext(ctx, x, pos, NULL, hd, mode, 4096, 10000.0f, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
        struct ggml_tensor *nm = ggml_mul(ctx, ggml_rms_norm(ctx, h, 1e-5f), w);
        struct ggml_cgraph *gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, r);
        ggml_build_forward_expand(gf, nm);
        ggml_graph_compute_with_ctx(ctx, gf, 1);
        for (int k = 0; k < nh; k++) K->rope(mine + k * hd, hd, mode, 1234.0f, 10000.0f, 1.0f, NULL, 1.0f);
        op_rmsnorm(mine_n, hd_, wd, n, 1e-5f);
        const int a1 = memcmp(mine, r->data, sizeof mine) != 0, a2 = memcmp(mine_n, nm->data, sizeof mine_n) != 0;
        cases += 2;
        fails += a1 + a2;
        printf("rope mode %d: %s; rms_norm * w: %s\n", mode, a1 ? "DIFF" : "same", a2 ? "DIFF" : "same");
        ggml_free(ctx);
    }
    printf("%d of %d cases bit-identical\n", cases - fails, cases);
    return fails != 0;
}
