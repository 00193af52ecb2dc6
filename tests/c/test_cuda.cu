/* test_cuda.cu — GPU test harness for the CUDA backend (csrc/cuda/).
 *
 *   cmake -S . -B build-cuda -DPYRT_CUDA=ON && cmake --build build-cuda --target pyrt_test_cuda
 *   build-cuda/pyrt_test_cuda            # kernel tests + CPU/GPU model parity
 *   build-cuda/pyrt_test_cuda --bench    # pp512 / tg128 tokens/s, SmolLM2-135M shapes
 *
 * Every device kernel against the CPU scalar reference (libpyrt's own
 * kernels and ops), with the tolerances of docs/ARCHITECTURE.md, 'Correctness':
 *   quantize_q8  bit-exact vs quantize_row_q8_1 (scalar)
 *   matmul       |gpu - cpu| <= 1e-5 * sum|w*x| (same activation bytes);
 *                K-quants: vs the float64 dot of the dequantized weights and
 *                the q8 activations the GPU used (the CPU uses Q8_K there)
 *   get_rows     bit-exact vs dequantize (K-quants included)
 *   rmsnorm / residual_norm / rope / glu   <= a few ulp per element
 *   attention    NMSE <= 5e-4 vs op_attention_head (many positions, GQA,
 *                sliding window, odd head_dim, split and unsplit)
 * then whole synthetic models (llama and gemma3 shapes, every weight type)
 * through the public CPU ABI and through the CUDA backend: logits NMSE,
 * top-1 agreement where the CPU's top-2 margin is not a near-tie, greedy
 * continuations, state round trips (GPU->GPU and CPU->GPU), abort, and the
 * argument errors. Prints "N passed, M failed"; exit 1 on failure, 77 (the
 * usual "skipped" code) when there is no usable GPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <chrono>
#include <iterator>
#include <string>
#include <vector>

#include "cuda/cuda_ops.cuh"
#include "cuda/pyrt_cuda.h"
#include "test_rng.h"
extern "C" {
#include "ops.h"
}

using namespace pyrt_cuda;

/* ---- named tolerances ------------------------------------------------------ */
static const double DOT_SAME_ACT_RTOL = 1e-5;   /* matmul vs CPU on identical activations        */
static const double ELEM_ULP = 8;               /* element-wise ops: ulps of the larger magnitude  */
static const double ATTN_NMSE = 5e-4;           /* attention tolerance, docs/ARCHITECTURE.md       */
static const double MODEL_NMSE = 1e-3;          /* whole-model logits, GPU vs CPU (8-bit activation
                                                   requantization amplifies summation-order noise) */
static const double NEAR_TIE = 0.05;            /* top-2 logit margin below which top-1 may differ */

/* ---- bookkeeping ----------------------------------------------------------- */
static int g_passed, g_failed, g_verbose;

static void check(bool ok, const char *fmt, ...) {
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ok) {
        g_passed++;
        if (g_verbose) printf("ok   %s\n", msg);
    } else {
        g_failed++;
        if (g_failed <= 60) printf("FAIL %s\n", msg);
    }
}

#define CK(call)                                                                              \
    do {                                                                                      \
        const cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) {                                                              \
            check(false, "%s:%d %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_));  \
            return;                                                                           \
        }                                                                                     \
    } while (0)


static int64_t row_bytes(int t, int64_t n) { return n / pyrt_type_block_size(t) * pyrt_type_block_bytes(t); }
static const char *tname(int t) { return pyrt_type_traits_table[t].name; }
static float ulp(float f) { f = fabsf(f); return nextafterf(f, INFINITY) - f; }

/* ---- device buffers ----------------------------------------------------------- */
template <typename T>
struct dbuf {
    T *p = nullptr;
    size_t n = 0;
    explicit dbuf(size_t count) : n(count) {
        if (cudaMalloc(&p, (count ? count : 1) * sizeof(T)) != cudaSuccess) { p = nullptr; cudaGetLastError(); }
    }
    ~dbuf() { if (p) cudaFree(p); }
    dbuf(const dbuf &) = delete;
    dbuf &operator=(const dbuf &) = delete;
    bool ok() const { return p != nullptr; }
    cudaError_t put(const T *h) { return cudaMemcpy(p, h, n * sizeof(T), cudaMemcpyHostToDevice); }
    cudaError_t get(T *h) const { return cudaMemcpy(h, p, n * sizeof(T), cudaMemcpyDeviceToHost); }
};

/* ---- weights ------------------------------------------------------------------- */
static const int WTYPES[] = { PYRT_TYPE_F32, PYRT_TYPE_F16, PYRT_TYPE_BF16, PYRT_TYPE_Q8_0,
                              PYRT_TYPE_Q4_0, PYRT_TYPE_Q4_1, PYRT_TYPE_Q5_0, PYRT_TYPE_Q5_1 };
static const int N_WTYPES = (int)(sizeof WTYPES / sizeof WTYPES[0]);
/* K-quants: kernel tests only (no encoder for the synthetic models here; the
 * real Q4_K_M models are checked end to end by tests/test_device.py) */
static const int KTYPES[] = { PYRT_TYPE_Q2_K, PYRT_TYPE_Q3_K, PYRT_TYPE_Q4_K, PYRT_TYPE_Q5_K, PYRT_TYPE_Q6_K };

/* byte offsets of a K-quant block's fp16 d and dmin (-1: none) */
static void kquant_scale_offsets(int t, int *d, int *dmin) {
    switch (t) {
    case PYRT_TYPE_Q2_K: *d = 80; *dmin = 82; break;
    case PYRT_TYPE_Q3_K: *d = 108; *dmin = -1; break;
    case PYRT_TYPE_Q6_K: *d = 208; *dmin = -1; break;
    default: *d = 0; *dmin = 2; break;   /* Q4_K, Q5_K */
    }
}

/* Random valid bytes of a row: all bit patterns of qs/qh, fp16 scales 2^[lo,hi) */
static void random_row(int t, int64_t n, uint8_t *raw, double lo, double hi) {
    if (t == PYRT_TYPE_F32) { for (int64_t i = 0; i < n; i++) ((float *)raw)[i] = (float)gauss(); return; }
    if (t == PYRT_TYPE_F16 || t == PYRT_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)raw)[i] = t == PYRT_TYPE_F16 ? pyrt_fp32_to_fp16((float)gauss()) : pyrt_fp32_to_bf16((float)gauss());
        return;
    }
    const int64_t bb = pyrt_type_block_bytes(t), nb = n / pyrt_type_block_size(t);
    for (int64_t i = 0; i < nb * bb; i++) raw[i] = (uint8_t)next_u64();
    if (pyrt_type_block_size(t) == 256) {   /* K-quants */
        int offs[2];
        kquant_scale_offsets(t, &offs[0], &offs[1]);
        for (int64_t b = 0; b < nb; b++)
            for (int off : offs) {
                if (off < 0) continue;
                const double sign = uniform() < 0.5 ? -1.0 : 1.0;
                const pyrt_fp16 h = pyrt_fp32_to_fp16((float)(sign * exp2(lo + (hi - lo) * uniform())));
                memcpy(raw + b * bb + off, &h, 2);
            }
        return;
    }
    const int ns = (t == PYRT_TYPE_Q4_1 || t == PYRT_TYPE_Q5_1) ? 2 : 1;
    for (int64_t b = 0; b < nb; b++)
        for (int k = 0; k < ns; k++) {
            const double sign = (k == 0 && uniform() < 0.5) ? -1.0 : 1.0;
            const pyrt_fp16 h = pyrt_fp32_to_fp16((float)(sign * exp2(lo + (hi - lo) * uniform())));
            memcpy(raw + b * bb + 2 * k, &h, 2);
        }
}

/* Encode floats into a weight type (a simple valid encoder, not ggml's search) */
static void encode_row(int t, const float *x, int64_t n, uint8_t *out) {
    if (t == PYRT_TYPE_F32) { memcpy(out, x, (size_t)n * 4); return; }
    if (t == PYRT_TYPE_F16 || t == PYRT_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)out)[i] = t == PYRT_TYPE_F16 ? pyrt_fp32_to_fp16(x[i]) : pyrt_fp32_to_bf16(x[i]);
        return;
    }
    const int64_t bb = pyrt_type_block_bytes(t);
    for (int64_t b = 0; b < n / 32; b++) {
        const float *v = x + b * 32;
        uint8_t *blk = out + b * bb;
        memset(blk, 0, (size_t)bb);
        float mn = v[0], mx = v[0], amax = 0, smax = 0;
        for (int j = 0; j < 32; j++) {
            mn = fminf(mn, v[j]); mx = fmaxf(mx, v[j]);
            if (fabsf(v[j]) > amax) { amax = fabsf(v[j]); smax = v[j]; }
        }
        pyrt_fp16 hd = 0, hm = 0;
        uint8_t q[32];
        switch (t) {
        case PYRT_TYPE_Q8_0: {
            const float d = amax / 127; hd = pyrt_fp32_to_fp16(d);
            for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)(int8_t)lrintf(d ? v[j] / d : 0);
            memcpy(blk, &hd, 2);
            continue;
        }
        case PYRT_TYPE_Q4_0: case PYRT_TYPE_Q5_0: {
            const int half = t == PYRT_TYPE_Q4_0 ? 8 : 16, top = 2 * half - 1;
            const float d = smax / -(float)half; hd = pyrt_fp32_to_fp16(d);
            for (int j = 0; j < 32; j++) {
                const int qi = (int)lrintf(d ? v[j] / d : 0) + half;
                q[j] = (uint8_t)(qi < 0 ? 0 : qi > top ? top : qi);
            }
            break;
        }
        default: {   /* Q4_1, Q5_1 */
            const int top = t == PYRT_TYPE_Q4_1 ? 15 : 31;
            const float d = (mx - mn) / top; hd = pyrt_fp32_to_fp16(d); hm = pyrt_fp32_to_fp16(mn);
            for (int j = 0; j < 32; j++) {
                const int qi = (int)lrintf(d ? (v[j] - mn) / d : 0);
                q[j] = (uint8_t)(qi < 0 ? 0 : qi > top ? top : qi);
            }
        }
        }
        memcpy(blk, &hd, 2);
        const bool has_m = t == PYRT_TYPE_Q4_1 || t == PYRT_TYPE_Q5_1;
        if (has_m) memcpy(blk + 2, &hm, 2);
        uint8_t *qs = blk + (has_m ? 4 : 2);
        if (t == PYRT_TYPE_Q5_0 || t == PYRT_TYPE_Q5_1) {
            uint32_t qh = 0;
            for (int j = 0; j < 32; j++) qh |= (uint32_t)((q[j] >> 4) & 1) << j;
            memcpy(qs, &qh, 4);
            qs += 4;
        }
        for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
    }
}

static dweight up_weight(dbuf<uint8_t> &d, int t, int64_t rows, int64_t cols) {
    dweight w;
    w.data = d.p; w.type = t; w.cols = cols; w.rows = rows; w.row_bytes = row_bytes(t, cols);
    return w;
}

/* ======================================================================== */
/* kernel tests                                                              */
/* ======================================================================== */

static void test_quantize() {
    const int64_t cols_list[] = { 32, 96, 576, 4128 };
    const int64_t ntok_list[] = { 1, 3, 8 };
    for (int64_t cols : cols_list)
        for (int64_t nt : ntok_list) {
            seed((uint64_t)(cols * 7 + nt));
            std::vector<float> x((size_t)(nt * cols));
            for (auto &v : x) v = (float)(gauss() * 3);
            if (cols >= 64) for (int64_t t = 0; t < nt; t++) memset(&x[(size_t)(t * cols + 32)], 0, 32 * 4);
            /* exact .5 ties: amax 127 -> d = 1 */
            for (int j = 0; j < 32; j++) x[(size_t)j] = (float)(j - 16) + 0.5f;
            x[0] = 127.0f;
            dbuf<float> dx(x.size());
            dbuf<int8_t> dq(x.size());
            dbuf<float2> dds((size_t)(nt * cols / 32));
            CK(dx.put(x.data()));
            act_q8 a; a.qs = dq.p; a.ds = dds.p;
            CK(quantize_q8(dx.p, cols, nt, cols, a, 0));
            CK(cudaDeviceSynchronize());
            std::vector<int8_t> q(x.size());
            std::vector<float2> ds(dds.n);
            CK(dq.get(q.data()));
            CK(dds.get(ds.data()));
            std::vector<block_q8_1> ref((size_t)(cols / 32));
            bool ok = true;
            for (int64_t t = 0; t < nt; t++) {
                pyrt_quantize_act(PYRT_KERNELS_SCALAR, PYRT_TYPE_Q8_1, &x[(size_t)(t * cols)], ref.data(), cols);
                for (int64_t b = 0; b < cols / 32; b++) {
                    const float2 g = ds[(size_t)(t * cols / 32 + b)];
                    ok &= g.x == pyrt_fp16_to_fp32(ref[(size_t)b].d) && g.y == pyrt_fp16_to_fp32(ref[(size_t)b].s);
                    ok &= memcmp(&q[(size_t)(t * cols + b * 32)], ref[(size_t)b].qs, 32) == 0;
                }
            }
            check(ok, "quantize_q8 %lldx%lld bit-exact vs scalar quantize_row_q8_1", (long long)nt, (long long)cols);
        }
}

/* The CPU reference for a K-quant dots it with Q8_K activations, the GPU with
 * the q8 32-blocks: there the reference is the float64 dot of the dequantized
 * weights and the very activations the GPU used (quantized on the host the
 * same way). Every other type: the scalar CPU matmul on the same activations. */
static void q8_rounded(const float *x, int64_t nt, int64_t cols, float *xq) {
    std::vector<block_q8_1> q8((size_t)(cols / 32));
    for (int64_t tk = 0; tk < nt; tk++) {
        pyrt_quantize_act(PYRT_KERNELS_SCALAR, PYRT_TYPE_Q8_1, x + tk * cols, q8.data(), cols);
        for (int64_t c = 0; c < cols; c++)
            xq[tk * cols + c] = pyrt_fp16_to_fp32(q8[(size_t)(c / 32)].d) * q8[(size_t)(c / 32)].qs[c % 32];
    }
}

static void test_matmul() {
    const int64_t cols_list[] = { 32, 96, 256, 576, 1536, 4128, 4352 };
    const int64_t ntok_list[] = { 1, 2, 3, 5, 8, 17 };
    const int64_t rows_list[] = { 1, 37 };
    std::vector<int> types(WTYPES, WTYPES + N_WTYPES);
    types.insert(types.end(), std::begin(KTYPES), std::end(KTYPES));
    for (int t : types) {
        const bool kq = pyrt_type_block_size(t) == 256;
        for (int64_t cols : cols_list)
            for (int64_t rows : rows_list) {
                if (cols % pyrt_type_block_size(t)) continue;
                seed((uint64_t)(t * 1000 + cols + rows));
                std::vector<uint8_t> W((size_t)(rows * row_bytes(t, cols)));
                for (int64_t r = 0; r < rows; r++) random_row(t, cols, &W[(size_t)(r * row_bytes(t, cols))], -10, -3);
                std::vector<float> wf((size_t)(rows * cols));
                pyrt_dequantize(PYRT_KERNELS_SCALAR, t, W.data(), wf.data(), rows * cols);
                dbuf<uint8_t> dW(W.size());
                CK(dW.put(W.data()));
                const dweight w = up_weight(dW, t, rows, cols);
                for (int64_t nt : ntok_list) {
                    std::vector<float> x((size_t)(nt * cols)), xq(x.size()), yc((size_t)(nt * rows)), yg(yc.size());
                    for (auto &v : x) v = (float)gauss();
                    if (kq) {
                        q8_rounded(x.data(), nt, cols, xq.data());
                        for (int64_t tk = 0; tk < nt; tk++)
                            for (int64_t r = 0; r < rows; r++) {
                                double ref = 0;
                                for (int64_t c = 0; c < cols; c++)
                                    ref += (double)wf[(size_t)(r * cols + c)] * xq[(size_t)(tk * cols + c)];
                                yc[(size_t)(tk * rows + r)] = (float)ref;
                            }
                    } else {
                        pyrt_matmul(PYRT_KERNELS_SCALAR, t, W.data(), rows, cols, x.data(), nt, yc.data(), 1);
                    }
                    dbuf<float> dx(x.size()), dy(yg.size());
                    dbuf<int8_t> dq(x.size());
                    dbuf<float2> dds(x.size() / 32);
                    CK(dx.put(x.data()));
                    act_q8 a; a.qs = dq.p; a.ds = dds.p;
                    if (type_uses_q8(t)) CK(quantize_q8(dx.p, cols, nt, cols, a, 0));
                    CK(matmul(w, dx.p, cols, a, nt, dy.p, rows, 0));
                    CK(cudaDeviceSynchronize());
                    CK(dy.get(yg.data()));
                    const std::vector<float> &xm = kq ? xq : x;
                    double worst = 0;
                    for (int64_t tk = 0; tk < nt; tk++)
                        for (int64_t r = 0; r < rows; r++) {
                            double mag = 0;
                            for (int64_t c = 0; c < cols; c++) mag += fabs((double)wf[(size_t)(r * cols + c)] * xm[(size_t)(tk * cols + c)]);
                            const double err = fabs((double)yg[(size_t)(tk * rows + r)] - yc[(size_t)(tk * rows + r)]) / (mag + 1e-30);
                            if (!(err <= worst)) worst = err;   /* NaN sticks */
                        }
                    check(worst <= DOT_SAME_ACT_RTOL, "matmul %s %lldx%lld, %lld token(s): max |gpu-ref|/sum|wx| %.3g",
                          tname(t), (long long)rows, (long long)cols, (long long)nt, worst);
                }
            }
    }
}

static void test_get_rows() {
    std::vector<int> types(WTYPES, WTYPES + N_WTYPES);
    types.insert(types.end(), std::begin(KTYPES), std::end(KTYPES));
    for (int t : types) {
        const int64_t rows = 50, cols = pyrt_type_block_size(t) == 256 ? 768 : 576;
        seed((uint64_t)t + 99);
        std::vector<uint8_t> W((size_t)(rows * row_bytes(t, cols)));
        for (int64_t r = 0; r < rows; r++) random_row(t, cols, &W[(size_t)(r * row_bytes(t, cols))], -14, 2);
        const std::vector<int32_t> tok = { 0, 49, 7, 7, 31 };
        dbuf<uint8_t> dW(W.size());
        dbuf<int32_t> dt(tok.size());
        dbuf<float> dx(tok.size() * cols);
        CK(dW.put(W.data()));
        CK(dt.put(tok.data()));
        for (float scale : { 0.0f, 24.0f }) {
            CK(get_rows(up_weight(dW, t, rows, cols), dt.p, (int64_t)tok.size(), dx.p, scale, 0));
            CK(cudaDeviceSynchronize());
            std::vector<float> g(dx.n), ref((size_t)cols);
            CK(dx.get(g.data()));
            bool ok = true;
            for (size_t i = 0; i < tok.size(); i++) {
                pyrt_dequantize(PYRT_KERNELS_SCALAR, t, &W[(size_t)(tok[i] * row_bytes(t, cols))], ref.data(), cols);
                if (scale > 0) op_scale(ref.data(), scale, cols);
                ok &= memcmp(ref.data(), &g[i * (size_t)cols], (size_t)cols * 4) == 0;
            }
            check(ok, "get_rows %s (scale %g) bit-exact vs dequantize", tname(t), scale);
        }
    }
}

static bool close_ulp(const float *g, const float *c, int64_t n, double ulps, double *worst) {
    bool ok = true;
    *worst = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs((double)g[i] - c[i]) / ulp(fmaxf(fabsf(g[i]), fabsf(c[i])) + 1e-30f);
        if (!(e <= ulps)) ok = false;
        if (!(e <= *worst)) *worst = e;
    }
    return ok;
}

static void test_norms_glu() {
    for (int64_t n : { 64, 576, 2048 }) {
        const int64_t rows = 5;
        seed((uint64_t)n);
        std::vector<float> x((size_t)(rows * n)), t(x.size()), w((size_t)n), w2((size_t)n);
        for (auto &v : x) v = (float)(gauss() * 4);
        for (auto &v : t) v = (float)gauss();
        for (auto &v : w) v = (float)(1 + 0.2 * gauss());
        for (auto &v : w2) v = (float)(1 + 0.2 * gauss());
        dbuf<float> dx(x.size()), dt(t.size()), dw(w.size()), dw2(w2.size()), dy(x.size());
        CK(dx.put(x.data())); CK(dt.put(t.data())); CK(dw.put(w.data())); CK(dw2.put(w2.data()));
        /* rmsnorm */
        CK(rmsnorm(dy.p, n, dx.p, n, dw.p, n, rows, 1e-6f, 0));
        CK(cudaDeviceSynchronize());
        std::vector<float> g(x.size()), c(x.size());
        CK(dy.get(g.data()));
        for (int64_t r = 0; r < rows; r++) op_rmsnorm(&c[(size_t)(r * n)], &x[(size_t)(r * n)], w.data(), n, 1e-6f);
        double worst;
        const bool rms_ok = close_ulp(g.data(), c.data(), rows * n, ELEM_ULP, &worst);
        check(rms_ok, "rmsnorm n=%lld: %.2g ulp", (long long)n, worst);
        /* residual_norm, with and without the post-norm */
        for (int post = 0; post < 2; post++) {
            CK(dx.put(x.data()));
            CK(residual_norm(dx.p, dt.p, post ? dw2.p : nullptr, dy.p, dw.p, n, rows, 1e-6f, 0));
            CK(cudaDeviceSynchronize());
            std::vector<float> gx(x.size()), gy(x.size()), cx = x, cy(x.size()), tt = t;
            CK(dx.get(gx.data())); CK(dy.get(gy.data()));
            for (int64_t r = 0; r < rows; r++) {
                float *tr = &tt[(size_t)(r * n)];
                if (post) op_rmsnorm(tr, tr, w2.data(), n, 1e-6f);
                op_add(&cx[(size_t)(r * n)], tr, n);
                op_rmsnorm(&cy[(size_t)(r * n)], &cx[(size_t)(r * n)], w.data(), n, 1e-6f);
            }
            double w1, w2e;
            const bool ok = close_ulp(gx.data(), cx.data(), rows * n, ELEM_ULP, &w1) &
                            close_ulp(gy.data(), cy.data(), rows * n, ELEM_ULP, &w2e);
            check(ok, "residual_norm n=%lld post=%d: %.2g / %.2g ulp", (long long)n, post, w1, w2e);
        }
        /* glu */
        for (int gelu = 0; gelu < 2; gelu++) {
            CK(dx.put(x.data()));
            CK(glu(dx.p, dt.p, rows * n, gelu, 0));
            CK(cudaDeviceSynchronize());
            std::vector<float> gg(x.size()), cg = x;
            CK(dx.get(gg.data()));
            if (gelu) op_geglu(cg.data(), t.data(), rows * n);
            else op_swiglu(cg.data(), t.data(), rows * n);
            const bool glu_ok = close_ulp(gg.data(), cg.data(), rows * n, ELEM_ULP, &worst);
            check(glu_ok, "%s n=%lld: %.2g ulp", gelu ? "geglu" : "swiglu", (long long)(rows * n), worst);
        }
    }
}

static void test_rope() {
    struct cfg { int hd, n_rot, mode, norm, pos0; };
    const cfg cfgs[] = { { 64, 64, PYRT_ROPE_NORMAL, 0, 0 }, { 64, 64, PYRT_ROPE_NEOX, 0, 1000 },
                         { 80, 32, PYRT_ROPE_NORMAL, 0, 7 }, { 128, 128, PYRT_ROPE_NEOX, 1, 70000 },
                         { 256, 256, PYRT_ROPE_NEOX, 1, 3 } };
    for (const cfg &cf : cfgs) {
        const int nt = 3, nh = 4, nkv = 2, HD = cf.hd, n_ctx = cf.pos0 + nt;
        const int64_t QD = nh * HD, KVD = nkv * HD;
        seed((uint64_t)HD + cf.pos0);
        std::vector<float> q((size_t)(nt * QD)), k((size_t)(nt * KVD)), v(k.size()), qn((size_t)HD), kn((size_t)HD);
        for (auto &e : q) e = (float)gauss();
        for (auto &e : k) e = (float)gauss();
        for (auto &e : v) e = (float)gauss();
        for (auto &e : qn) e = (float)(1 + 0.3 * gauss());
        for (auto &e : kn) e = (float)(1 + 0.3 * gauss());
        dbuf<float> dq(q.size()), dk(k.size()), dv(v.size()), dqn(qn.size()), dkn(kn.size());
        dbuf<uint16_t> dkc((size_t)(n_ctx * KVD)), dvc((size_t)(n_ctx * KVD));
        CK(dq.put(q.data())); CK(dk.put(k.data())); CK(dv.put(v.data())); CK(dqn.put(qn.data())); CK(dkn.put(kn.data()));
        rope_args a;
        a.q = dq.p; a.k = dk.p; a.v = dv.p; a.kc = dkc.p; a.vc = dvc.p;
        a.q_norm = cf.norm ? dqn.p : nullptr; a.k_norm = cf.norm ? dkn.p : nullptr;
        a.n_tok = nt; a.pos0 = cf.pos0; a.n_head = nh; a.n_head_kv = nkv; a.head_dim = HD; a.n_rot = cf.n_rot;
        a.mode = cf.mode; a.theta_scale = powf(10000.0f, -2.0f / (float)cf.n_rot); a.freq_scale = 1.0f; a.eps = 1e-6f;
        a.q_scale = cf.norm ? 0.125f : 1.0f;   /* the gemma3 configurations fold the attention scale into q */
        CK(qk_rope_store(a, 0));
        CK(cudaDeviceSynchronize());
        std::vector<float> gq(q.size()), gk(k.size());
        std::vector<uint16_t> gkc(dkc.n), gvc(dvc.n);
        CK(dq.get(gq.data())); CK(dk.get(gk.data())); CK(dkc.get(gkc.data())); CK(dvc.get(gvc.data()));
        /* CPU: op_rmsnorm + op_rope per head, as core/forward.c */
        double worst = 0;
        bool ok = true, kv_ok = true;
        for (int t = 0; t < nt; t++)
            for (int h = 0; h < nh + nkv; h++) {
                const bool isq = h < nh;
                std::vector<float> r(isq ? q.begin() + t * QD + h * HD : k.begin() + t * KVD + (h - nh) * HD,
                                     isq ? q.begin() + t * QD + (h + 1) * HD : k.begin() + t * KVD + (h - nh + 1) * HD);
                if (cf.norm) op_rmsnorm(r.data(), r.data(), isq ? qn.data() : kn.data(), HD, 1e-6f);
                op_rope(r.data(), cf.n_rot, cf.mode, (float)(cf.pos0 + t), 10000.0f, 1.0f, NULL, 1.0f);
                if (isq && cf.norm) op_scale(r.data(), 0.125f, HD);
                const float *g = isq ? &gq[(size_t)(t * QD + h * HD)] : &gk[(size_t)(t * KVD + (h - nh) * HD)];
                double scale = 0;
                for (int d = 0; d < HD; d++) scale = fmax(scale, fabs(r[(size_t)d]));
                for (int d = 0; d < HD; d++) {
                    /* cos/sin of the CUDA math library: <= 2 ulp of a [-1,1] value */
                    const double e = fabs((double)g[d] - r[(size_t)d]) / scale;
                    worst = fmax(worst, e);
                    ok &= e <= 1e-6;
                }
                if (!isq) {
                    const int64_t row = (int64_t)(cf.pos0 + t) * KVD + (h - nh) * HD;
                    for (int d = 0; d < HD; d++) {
                        /* within one fp16 step of the CPU's rounding of its own k */
                        const float kh = pyrt_fp16_to_fp32(gkc[(size_t)(row + d)]);
                        const float rh = pyrt_fp16_to_fp32(pyrt_fp32_to_fp16(r[(size_t)d]));
                        kv_ok &= fabsf(kh - rh) <= ldexpf(1.0f, -10) * fabsf(rh) + 6e-8f;
                        kv_ok &= gvc[(size_t)(row + d)] == pyrt_fp32_to_fp16(v[(size_t)(t * KVD + (h - nh) * HD + d)]);
                    }
                }
            }
        check(ok && kv_ok, "qk_rope_store hd=%d n_rot=%d %s norm=%d pos0=%d: max rel err %.3g, cache %s", HD, cf.n_rot,
              cf.mode == PYRT_ROPE_NEOX ? "neox" : "normal", cf.norm, cf.pos0, worst, kv_ok ? "ok" : "BAD");
    }
}

static void test_attention() {
    struct cfg { int hd, n_tok, pos0, window, force_split; };
    const cfg cfgs[] = { { 64, 1, 0, 0, 0 }, { 64, 1, 2099, 0, 0 }, { 64, 4, 300, 0, 0 }, { 64, 9, 40, 0, 0 },
                         { 64, 1, 2099, 128, 0 }, { 128, 3, 700, 100, 0 }, { 80, 2, 517, 0, 0 }, { 256, 1, 1000, 0, 0 },
                         { 64, 1, 2099, 0, 32 }, { 64, 2, 10, 0, 32 }, { 64, 17, 100, 33, 0 } };
    for (const cfg &cf : cfgs) {
        const int nh = 6, nkv = 2, HD = cf.hd, nt = cf.n_tok, n_ctx = cf.pos0 + nt;
        const int64_t QD = nh * HD, KVD = nkv * HD;
        seed((uint64_t)(HD * 131 + cf.pos0 + nt));
        std::vector<float> q((size_t)(nt * QD));
        for (auto &e : q) e = (float)(gauss() * 2);
        std::vector<uint16_t> kc((size_t)(n_ctx * KVD)), vc(kc.size());
        for (auto &e : kc) e = pyrt_fp32_to_fp16((float)gauss());
        for (auto &e : vc) e = pyrt_fp32_to_fp16((float)gauss());
        const int split = cf.force_split ? cf.force_split : (nt <= 8 ? attn_pick_split(nt, nh, cf.pos0 + nt) : 1);
        dbuf<float> dq(q.size()), dout(q.size()), dpart((size_t)attn_partial_floats(nt, nh, HD, split));
        dbuf<uint16_t> dkc(kc.size()), dvc(vc.size());
        CK(dq.put(q.data())); CK(dkc.put(kc.data())); CK(dvc.put(vc.data()));
        attn_args a;
        a.out = dout.p; a.q = dq.p; a.kc = dkc.p; a.vc = dvc.p; a.partial = dpart.p;
        a.n_tok = nt; a.pos0 = cf.pos0; a.n_head = nh; a.n_head_kv = nkv; a.head_dim = HD;
        a.window = cf.window; a.n_split = split; a.scale = 1.0f / sqrtf((float)HD);
        CK(attention(a, 0));
        CK(cudaDeviceSynchronize());
        std::vector<float> g(q.size());
        CK(dout.get(g.data()));
        std::vector<float> scores((size_t)n_ctx + 32), acc((size_t)(32 * HD)), out((size_t)HD);
        std::vector<uint16_t> p16((size_t)n_ctx + 32), q16((size_t)HD);
        double err = 0, energy = 0;
        for (int t = 0; t < nt; t++)
            for (int h = 0; h < nh; h++) {
                const int pos = cf.pos0 + t;
                pyrt_attn_args ca;
                memset(&ca, 0, sizeof ca);
                ca.out = out.data(); ca.q = &q[(size_t)(t * QD + h * HD)];
                ca.k = kc.data() + (h / (nh / nkv)) * HD; ca.v = vc.data() + (h / (nh / nkv)) * HD;
                ca.stride = KVD; ca.head_dim = HD;
                ca.first = cf.window > 0 && pos - cf.window + 1 > 0 ? pos - cf.window + 1 : 0;
                ca.last = pos; ca.batched = 0; ca.scale = a.scale;
                ca.scores = scores.data(); ca.probs16 = p16.data(); ca.q16 = q16.data(); ca.acc = acc.data();
                op_attention_head(&ca);
                for (int d = 0; d < HD; d++) {
                    const double e = (double)g[(size_t)(t * QD + h * HD + d)] - out[(size_t)d];
                    err += e * e;
                    energy += (double)out[(size_t)d] * out[(size_t)d];
                }
            }
        const double nmse = err / energy;
        check(nmse <= ATTN_NMSE, "attention hd=%d n_tok=%d pos0=%d window=%d split=%d: NMSE %.3g", HD, nt, cf.pos0,
              cf.window, split, nmse);
    }
}

/* ======================================================================== */
/* synthetic models: CPU ABI vs CUDA backend                                 */
/* ======================================================================== */

struct synth_tensor {
    std::string name;
    int32_t type;
    int64_t ne0, ne1;
    std::vector<uint8_t> data;
};

struct synth_model {
    pyrt_hparams hp;
    std::vector<synth_tensor> tensors;
    const synth_tensor *find(const std::string &n) const {
        for (const auto &t : tensors) if (t.name == n) return &t;
        return nullptr;
    }
};

/* random_bytes: random blocks (fast, for --bench) instead of encoded gaussians */
static synth_model make_model(int arch, int wtype, const pyrt_hparams *shape, bool random_bytes) {
    synth_model m;
    memset(&m.hp, 0, sizeof m.hp);
    if (shape) m.hp = *shape;
    else {
        m.hp.n_vocab = 512; m.hp.n_embd = 256; m.hp.n_layer = 4; m.hp.n_head = 4; m.hp.n_head_kv = 2;
        m.hp.head_dim = 64; m.hp.n_ff = 512; m.hp.n_rot = 64;
    }
    m.hp.arch = arch;
    m.hp.rope_type = arch == PYRT_ARCH_GEMMA3 ? PYRT_ROPE_NEOX : PYRT_ROPE_NORMAL;
    m.hp.rope_freq_base = 10000.0f;
    m.hp.rope_freq_scale = 1.0f;
    m.hp.norm_eps = 1e-5f;
    m.hp.n_ctx_train = 4096;
    if (arch == PYRT_ARCH_GEMMA3) {
        m.hp.sliding_window = 8; m.hp.swa_period = 2; m.hp.rope_freq_base_swa = 10000.0f;
        m.hp.embd_scale = sqrtf((float)m.hp.n_embd); m.hp.norm_eps = 1e-6f;
    }
    const pyrt_hparams &hp = m.hp;
    const int64_t E = hp.n_embd, QD = (int64_t)hp.n_head * hp.head_dim, KVD = (int64_t)hp.n_head_kv * hp.head_dim;
    auto add = [&](const std::string &name, int type, int64_t ne0, int64_t ne1, double sd) {
        synth_tensor t;
        t.name = name; t.type = type; t.ne0 = ne0; t.ne1 = ne1;
        t.data.resize((size_t)(row_bytes(type, ne0) * ne1));
        if (type == PYRT_TYPE_F32 && ne1 == 1) {         /* norm weights */
            float *f = (float *)t.data.data();
            for (int64_t i = 0; i < ne0; i++) f[i] = (float)(1.0 + 0.1 * gauss());
        } else if (random_bytes) {
            for (int64_t r = 0; r < ne1; r++) random_row(type, ne0, &t.data[(size_t)(r * row_bytes(type, ne0))], -9, -7);
        } else {
            std::vector<float> row((size_t)ne0);
            for (int64_t r = 0; r < ne1; r++) {
                for (auto &v : row) v = (float)(gauss() * sd);
                encode_row(type, row.data(), ne0, &t.data[(size_t)(r * row_bytes(type, ne0))]);
            }
        }
        m.tensors.push_back(std::move(t));
    };
    add("token_embd.weight", wtype, E, hp.n_vocab, arch == PYRT_ARCH_GEMMA3 ? 1.0 / sqrt((double)E) : 1.0);
    add("output_norm.weight", PYRT_TYPE_F32, E, 1, 0);
    if (arch != PYRT_ARCH_GEMMA3) add("output.weight", wtype, E, hp.n_vocab, 4.0 / sqrt((double)E));   /* gemma3: tied */
    for (int il = 0; il < hp.n_layer; il++) {
        const std::string p = "blk." + std::to_string(il) + ".";
        const double s = 1.0 / sqrt((double)E);
        add(p + "attn_norm.weight", PYRT_TYPE_F32, E, 1, 0);
        add(p + "attn_q.weight", wtype, E, QD, s);
        add(p + "attn_k.weight", wtype, E, KVD, s);
        add(p + "attn_v.weight", wtype, E, KVD, s);
        add(p + "attn_output.weight", wtype, QD, E, 1.0 / sqrt((double)QD));
        add(p + "ffn_norm.weight", PYRT_TYPE_F32, E, 1, 0);
        add(p + "ffn_gate.weight", wtype, E, hp.n_ff, s);
        add(p + "ffn_up.weight", wtype, E, hp.n_ff, s);
        add(p + "ffn_down.weight", wtype, hp.n_ff, E, 1.0 / sqrt((double)hp.n_ff));
        if (arch == PYRT_ARCH_GEMMA3) {
            add(p + "attn_q_norm.weight", PYRT_TYPE_F32, hp.head_dim, 1, 0);
            add(p + "attn_k_norm.weight", PYRT_TYPE_F32, hp.head_dim, 1, 0);
            add(p + "post_attention_norm.weight", PYRT_TYPE_F32, E, 1, 0);
            add(p + "post_ffw_norm.weight", PYRT_TYPE_F32, E, 1, 0);
        }
    }
    return m;
}

static int cpu_model(const synth_model &s, pyrt_model **out) {
    int st = pyrt_model_create(&s.hp, out);
    if (st) return st;
    for (const auto &t : s.tensors) {
        const int64_t ne[2] = { t.ne0, t.ne1 };
        st = pyrt_model_set_tensor(*out, t.name.c_str(), t.type, t.ne1 == 1 ? 1 : 2, ne, t.data.data(),
                                   (int64_t)t.data.size());
        if (st) return st;
    }
    return pyrt_model_finalize(*out);
}

static pyrt_cuda_tensor ct(const synth_model &s, const std::string &name) {
    pyrt_cuda_tensor t;
    memset(&t, 0, sizeof t);
    const synth_tensor *p = s.find(name);
    if (p) { t.data = p->data.data(); t.type = p->type; t.ne0 = p->ne0; t.ne1 = p->ne1; }
    return t;
}

/* What core/backend.c (pyrt_model_offload) builds from its layer table. */
static int gpu_model(const synth_model &s, pyrt_cuda_model **out) {
    std::vector<pyrt_cuda_layer> L((size_t)s.hp.n_layer);
    for (int il = 0; il < s.hp.n_layer; il++) {
        const std::string p = "blk." + std::to_string(il) + ".";
        pyrt_cuda_layer &l = L[(size_t)il];
        l.attn_norm = ct(s, p + "attn_norm.weight"); l.wq = ct(s, p + "attn_q.weight");
        l.wk = ct(s, p + "attn_k.weight"); l.wv = ct(s, p + "attn_v.weight"); l.wo = ct(s, p + "attn_output.weight");
        l.ffn_norm = ct(s, p + "ffn_norm.weight"); l.w_gate = ct(s, p + "ffn_gate.weight");
        l.w_up = ct(s, p + "ffn_up.weight"); l.w_down = ct(s, p + "ffn_down.weight");
        l.q_norm = ct(s, p + "attn_q_norm.weight"); l.k_norm = ct(s, p + "attn_k_norm.weight");
        l.post_attn_norm = ct(s, p + "post_attention_norm.weight"); l.post_ffn_norm = ct(s, p + "post_ffw_norm.weight");
    }
    pyrt_cuda_model_desc d;
    memset(&d, 0, sizeof d);
    d.hp = s.hp;
    d.tok_embd = ct(s, "token_embd.weight");
    d.out_norm = ct(s, "output_norm.weight");
    d.output = s.find("output.weight") ? ct(s, "output.weight") : d.tok_embd;
    d.layers = L.data();
    return pyrt_cuda_model_upload(&d, 0, out);
}

static int argmax(const float *x, int n, float *margin) {
    int best = 0, second = -1;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) { second = best; best = i; }
        else if (second < 0 || x[i] > x[second]) second = i;
    }
    if (margin) *margin = second >= 0 ? x[best] - x[second] : INFINITY;
    return best;
}

static double nmse(const float *g, const float *c, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)g[i] - c[i]) * ((double)g[i] - c[i]);
        s += (double)c[i] * c[i];
    }
    return s > 0 ? e / s : (e > 0 ? INFINITY : 0);
}

static void test_model(int arch, int wtype) {
    const char *an = arch == PYRT_ARCH_GEMMA3 ? "gemma3" : "llama";
    seed((uint64_t)(arch * 100 + wtype));
    const synth_model s = make_model(arch, wtype, nullptr, false);
    const pyrt_hparams &hp = s.hp;
    pyrt_model *cm = nullptr;
    pyrt_ctx *cc = nullptr;
    pyrt_cuda_model *gm = nullptr;
    pyrt_cuda_ctx *gc = nullptr, *gc2 = nullptr;
    const int n_ctx = 64, n_batch = 16, n_prompt = 20, n_gen = 12;
    const int V = hp.n_vocab;
    int st = cpu_model(s, &cm);
    if (!st) st = pyrt_ctx_create(cm, n_ctx, 2, n_batch, &cc);
    check(st == PYRT_OK, "%s/%s: CPU model (%s)", an, tname(wtype), st ? pyrt_last_error() : "ok");
    int sg = gpu_model(s, &gm);
    if (!sg) sg = pyrt_cuda_ctx_create(gm, n_ctx, n_batch, &gc);
    check(sg == PYRT_OK, "%s/%s: GPU model (%s)", an, tname(wtype), sg ? pyrt_last_error() : "ok");
    if (!st && !sg) {
        std::vector<int32_t> prompt((size_t)n_prompt);
        for (auto &t : prompt) t = (int32_t)(next_u64() % (uint64_t)V);
        std::vector<float> lc((size_t)n_prompt * V), lg(lc.size());
        st = pyrt_decode(cc, prompt.data(), n_prompt, 0, PYRT_OUT_LOGITS_ALL, lc.data(), (int64_t)lc.size());
        sg = pyrt_cuda_decode(gc, prompt.data(), n_prompt, 0, PYRT_OUT_LOGITS_ALL, lg.data(), (int64_t)lg.size(), nullptr);
        check(st == 0 && sg == 0, "%s/%s: prompt decode (%s)", an, tname(wtype), pyrt_last_error());
        const double e = nmse(lg.data(), lc.data(), (int64_t)lc.size());
        int agree = 0, decided = 0;
        for (int i = 0; i < n_prompt; i++) {
            float margin;
            const int c = argmax(&lc[(size_t)i * V], V, &margin);
            if (margin < NEAR_TIE) continue;
            decided++;
            agree += argmax(&lg[(size_t)i * V], V, nullptr) == c;
        }
        check(e <= MODEL_NMSE && agree == decided && decided > 0,
              "%s/%s: 20-token prompt (2 chunks), logits NMSE %.3g, top-1 %d/%d outside near-ties", an, tname(wtype), e,
              agree, decided);

        /* embeddings */
        std::vector<float> ec((size_t)n_prompt * hp.n_embd), eg(ec.size());
        st = pyrt_decode(cc, prompt.data(), n_prompt, 0, PYRT_OUT_EMBD_ALL, ec.data(), (int64_t)ec.size());
        sg = pyrt_cuda_decode(gc, prompt.data(), n_prompt, 0, PYRT_OUT_EMBD_ALL, eg.data(), (int64_t)eg.size(), nullptr);
        const double ee = nmse(eg.data(), ec.data(), (int64_t)ec.size());
        check(st == 0 && sg == 0 && ee <= MODEL_NMSE, "%s/%s: embeddings NMSE %.3g", an, tname(wtype), ee);

        /* LOGITS_LAST == last row of LOGITS_ALL on the GPU */
        std::vector<float> last((size_t)V);
        sg = pyrt_cuda_decode(gc, prompt.data(), n_prompt, 0, PYRT_OUT_LOGITS_LAST, last.data(), V, nullptr);
        check(sg == 0 && memcmp(last.data(), &lg[(size_t)(n_prompt - 1) * V], (size_t)V * 4) == 0,
              "%s/%s: LOGITS_LAST equals the last row of LOGITS_ALL", an, tname(wtype));

        /* greedy continuation, each backend on its own choices, compared
         * until the first CPU near-tie */
        std::vector<float> oc((size_t)V), og((size_t)V);
        int32_t tc = argmax(&lc[(size_t)(n_prompt - 1) * V], V, nullptr), tg = argmax(last.data(), V, nullptr);
        pyrt_ctx_truncate(cc, n_prompt);
        int same = 0, compared = 0;
        bool tie = false;
        for (int i = 0; i < n_gen && !tie; i++) {
            compared++;
            if (tc != tg) break;
            same++;
            st = pyrt_decode(cc, &tc, 1, n_prompt + i, PYRT_OUT_LOGITS_LAST, oc.data(), V);
            sg = pyrt_cuda_decode(gc, &tg, 1, n_prompt + i, PYRT_OUT_LOGITS_LAST, og.data(), V, nullptr);
            if (st || sg) break;
            float margin;
            tc = argmax(oc.data(), V, &margin);
            tg = argmax(og.data(), V, nullptr);
            tie = margin < NEAR_TIE;
        }
        check(same == compared, "%s/%s: greedy continuation identical for %d/%d tokens%s", an, tname(wtype), same,
              compared, tie ? " (stopped at a near-tie)" : "");

        /* state: GPU -> GPU, and CPU -> GPU through the CPU state blob */
        const int n_past = n_prompt;
        const int64_t KVD = (int64_t)hp.n_head_kv * hp.head_dim;
        std::vector<uint16_t> kb((size_t)(n_past * KVD)), vb(kb.size());
        sg = pyrt_cuda_decode(gc, prompt.data(), n_prompt, 0, PYRT_OUT_NONE, nullptr, 0, nullptr);
        int s2 = pyrt_cuda_ctx_create(gm, n_ctx, n_batch, &gc2);
        for (int il = 0; il < hp.n_layer && !sg && !s2; il++) {
            sg = pyrt_cuda_kv_read(gc, il, n_past, kb.data(), vb.data());
            if (!sg) s2 = pyrt_cuda_kv_write(gc2, il, n_past, kb.data(), vb.data());
        }
        const int32_t nxt = 3;
        std::vector<float> a1((size_t)V), a2((size_t)V);
        if (!sg && !s2) {
            sg = pyrt_cuda_decode(gc, &nxt, 1, n_past, PYRT_OUT_LOGITS_LAST, a1.data(), V, nullptr);
            s2 = pyrt_cuda_decode(gc2, &nxt, 1, n_past, PYRT_OUT_LOGITS_LAST, a2.data(), V, nullptr);
        }
        check(!sg && !s2 && memcmp(a1.data(), a2.data(), (size_t)V * 4) == 0,
              "%s/%s: KV state GPU -> new GPU context: next-token logits identical", an, tname(wtype));
        st = pyrt_decode(cc, prompt.data(), n_prompt, 0, PYRT_OUT_NONE, nullptr, 0);
        const int64_t size = pyrt_ctx_state_size(cc);
        std::vector<uint8_t> blob((size_t)size);
        if (!st) st = pyrt_ctx_state_get(cc, blob.data(), size);
        const int64_t payload = 2 * (int64_t)hp.n_layer * n_past * KVD * 2, header = size - payload;
        for (int il = 0; il < hp.n_layer && !st && !s2; il++) {
            const uint8_t *p = blob.data() + header + (int64_t)il * 2 * n_past * KVD * 2;
            s2 = pyrt_cuda_kv_write(gc2, il, n_past, (const uint16_t *)p, (const uint16_t *)(p + n_past * KVD * 2));
        }
        if (!st && !s2) {
            st = pyrt_decode(cc, &nxt, 1, n_past, PYRT_OUT_LOGITS_LAST, a1.data(), V);
            s2 = pyrt_cuda_decode(gc2, &nxt, 1, n_past, PYRT_OUT_LOGITS_LAST, a2.data(), V, nullptr);
        }
        const double es = nmse(a2.data(), a1.data(), V);
        check(!st && !s2 && header > 0 && es <= MODEL_NMSE, "%s/%s: KV state CPU -> GPU: next-token NMSE %.3g", an,
              tname(wtype), es);

        /* abort and argument errors */
        volatile int flag = 1;
        check(pyrt_cuda_decode(gc, prompt.data(), 4, 0, PYRT_OUT_NONE, nullptr, 0, &flag) == PYRT_ERR_ABORTED,
              "%s/%s: abort flag stops decode", an, tname(wtype));
        const int32_t bad = V;
        check(pyrt_cuda_decode(gc, &bad, 1, 0, PYRT_OUT_LOGITS_LAST, og.data(), V, nullptr) == PYRT_ERR_INVALID_ARG,
              "%s/%s: token id n_vocab rejected", an, tname(wtype));
        check(pyrt_cuda_decode(gc, prompt.data(), 1, n_ctx, PYRT_OUT_NONE, nullptr, 0, nullptr) == PYRT_ERR_CONTEXT_FULL,
              "%s/%s: position n_ctx rejected", an, tname(wtype));
        check(pyrt_cuda_decode(gc, prompt.data(), 2, 0, PYRT_OUT_LOGITS_ALL, og.data(), V, nullptr) == PYRT_ERR_INVALID_ARG,
              "%s/%s: short output buffer rejected", an, tname(wtype));
        /* the context still works after rejected calls */
        sg = pyrt_cuda_decode(gc, prompt.data(), n_prompt, 0, PYRT_OUT_LOGITS_LAST, og.data(), V, nullptr);
        check(sg == 0 && memcmp(og.data(), last.data(), (size_t)V * 4) == 0, "%s/%s: usable after errors", an,
              tname(wtype));
    }
    pyrt_cuda_ctx_free(gc2);
    pyrt_cuda_ctx_free(gc);
    pyrt_cuda_model_free(gm);
    pyrt_ctx_free(cc);
    pyrt_model_free(cm);
}

static void test_upload_errors() {
    seed(5);
    synth_model s = make_model(PYRT_ARCH_LLAMA, PYRT_TYPE_Q8_0, nullptr, true);
    for (auto &t : s.tensors)
        if (t.name == "blk.1.ffn_down.weight") {   /* Q8_K: an activation type, no weight kernels */
            t.type = PYRT_TYPE_Q8_K;
            t.data.assign((size_t)(row_bytes(PYRT_TYPE_Q8_K, t.ne0) * t.ne1), 0);
        }
    pyrt_cuda_model *gm = nullptr;
    const int st = gpu_model(s, &gm);
    check(st == PYRT_ERR_UNSUPPORTED && gm == nullptr && strstr(pyrt_last_error(), "blk.1.ffn_down.weight"),
          "upload of a Q8_K tensor: UNSUPPORTED naming it (%s)", pyrt_last_error());
    pyrt_cuda_model_desc d;
    memset(&d, 0, sizeof d);
    check(pyrt_cuda_model_upload(&d, 0, &gm) == PYRT_ERR_INVALID_ARG, "upload of an empty description rejected");
    char name[128];
    check(pyrt_cuda_device_name(pyrt_cuda_device_count(), name, sizeof name) == PYRT_ERR_INVALID_ARG,
          "device index past the last rejected");
}

/* ======================================================================== */
/* --bench: SmolLM2-135M shapes, random weights                              */
/* ======================================================================== */

static void bench(int wtype, bool with_cpu) {
    pyrt_hparams shape;
    memset(&shape, 0, sizeof shape);
    shape.n_vocab = 49152; shape.n_embd = 576; shape.n_layer = 30; shape.n_head = 9; shape.n_head_kv = 3;
    shape.head_dim = 64; shape.n_ff = 1536; shape.n_rot = 64;
    seed(1);
    const synth_model s = make_model(PYRT_ARCH_LLAMA, wtype, &shape, true);
    pyrt_cuda_model *gm = nullptr;
    pyrt_cuda_ctx *gc = nullptr;
    if (gpu_model(s, &gm) || pyrt_cuda_ctx_create(gm, 1024, 512, &gc)) {
        printf("bench %s: %s\n", tname(wtype), pyrt_last_error());
        return;
    }
    std::vector<int32_t> toks(512);
    for (auto &t : toks) t = (int32_t)(next_u64() % 49152);
    std::vector<float> logits(49152);
    using clk = std::chrono::steady_clock;
    auto secs = [](clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    pyrt_cuda_decode(gc, toks.data(), 512, 0, PYRT_OUT_LOGITS_LAST, logits.data(), 49152, nullptr);   /* warm-up */
    double pp = 1e30, tg = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        auto t0 = clk::now();
        pyrt_cuda_decode(gc, toks.data(), 512, 0, PYRT_OUT_LOGITS_LAST, logits.data(), 49152, nullptr);
        auto t1 = clk::now();
        for (int i = 0; i < 128; i++) pyrt_cuda_decode(gc, &toks[(size_t)i], 1, 512 + i, PYRT_OUT_LOGITS_LAST, logits.data(), 49152, nullptr);
        auto t2 = clk::now();
        pp = fmin(pp, secs(t0, t1));
        tg = fmin(tg, secs(t1, t2));
    }
    printf("bench %-5s cuda: pp512 %8.1f tok/s   tg128 %7.1f tok/s   (%.1f MiB of weights on the device)\n", tname(wtype),
           512 / pp, 128 / tg, pyrt_cuda_model_device_bytes(gm) / 1048576.0);
    if (with_cpu) {
        pyrt_model *cm = nullptr;
        pyrt_ctx *cc = nullptr;
        if (!cpu_model(s, &cm) && !pyrt_ctx_create(cm, 1024, 0, 512, &cc)) {
            auto t0 = clk::now();
            pyrt_decode(cc, toks.data(), 512, 0, PYRT_OUT_LOGITS_LAST, logits.data(), 49152);
            auto t1 = clk::now();
            for (int i = 0; i < 128; i++) pyrt_decode(cc, &toks[(size_t)i], 1, 512 + i, PYRT_OUT_LOGITS_LAST, logits.data(), 49152);
            auto t2 = clk::now();
            printf("bench %-5s cpu:  pp512 %8.1f tok/s   tg128 %7.1f tok/s   (%d threads)\n", tname(wtype),
                   512 / secs(t0, t1), 128 / secs(t1, t2), pyrt_ctx_n_threads(cc));
        }
        pyrt_ctx_free(cc);
        pyrt_model_free(cm);
    }
    pyrt_cuda_ctx_free(gc);
    pyrt_cuda_model_free(gm);
}

int main(int argc, char **argv) {
    bool do_bench = false, with_cpu = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-v")) g_verbose = 1;
        else if (!strcmp(argv[i], "--bench")) do_bench = true;
        else if (!strcmp(argv[i], "--cpu")) with_cpu = true;
        else { fprintf(stderr, "usage: %s [-v] [--bench [--cpu]]\n", argv[0]); return 2; }
    }
    const int n_dev = pyrt_cuda_device_count();
    if (n_dev == 0) {
        printf("no usable CUDA device: skipped\n0 passed, 0 failed\n");
        return 77;
    }
    char name[256];
    pyrt_cuda_device_name(0, name, sizeof name);
    printf("device 0 of %d: %s\n", n_dev, name);
    if (cudaSetDevice(0) != cudaSuccess) { printf("cudaSetDevice failed\n0 passed, 1 failed\n"); return 1; }
    if (do_bench) {
        for (int t : { PYRT_TYPE_Q4_1, PYRT_TYPE_Q8_0, PYRT_TYPE_Q4_0, PYRT_TYPE_Q4_K, PYRT_TYPE_Q6_K }) bench(t, with_cpu);
        return 0;
    }
    test_quantize();
    test_matmul();
    test_get_rows();
    test_norms_glu();
    test_rope();
    test_attention();
    for (int arch : { PYRT_ARCH_LLAMA, PYRT_ARCH_GEMMA3 })
        for (int ti = 0; ti < N_WTYPES; ti++) test_model(arch, WTYPES[ti]);
    test_upload_errors();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
