/* cuda_ops.cu — device kernels of the CUDA backend (see cuda_ops.cuh). */
#include "cuda_ops.cuh"
#include "kquants_block.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

namespace pyrt_cuda {

/* ======================================================================== */
/* helpers                                                                   */
/* ======================================================================== */

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum of a double over the whole block (blockDim.x a multiple of 32, <= 1024);
 * every thread gets the result. `red` is __shared__ double[32]. */
__device__ double block_sum_d(double v, double *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();                 /* red may still be read from a previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0;
    return warp_sum_d(v);
}

__device__ __forceinline__ float f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float ld_f16(const uint8_t *p) { return f16(*(const uint16_t *)p); }
__device__ __forceinline__ float round_f16(float x) { return __half2float(__float2half_rn(x)); }
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

/* 4 bytes at a 2-byte aligned address (GGUF blocks are 18/22/34 bytes) */
__device__ __forceinline__ int ld_i32_a2(const uint8_t *p) {
    const uint16_t *h = (const uint16_t *)p;
    return (int)((uint32_t)h[0] | ((uint32_t)h[1] << 16));
}

/* 4 bits -> 4 bytes with 0x10 where the bit is set (Q5 high bits) */
__device__ __forceinline__ int bits_to_bit4(uint32_t b) {
    return (int)(((b & 1u) << 4) | ((b & 2u) << 11) | ((b & 4u) << 18) | ((b & 8u) << 25));
}

/* ======================================================================== */
/* type traits                                                               */
/* ======================================================================== */

bool type_supported(int32_t type) {
    switch (type) {
    case PYRT_TYPE_F32: case PYRT_TYPE_F16: case PYRT_TYPE_BF16:
    case PYRT_TYPE_Q8_0: case PYRT_TYPE_Q4_0: case PYRT_TYPE_Q4_1: case PYRT_TYPE_Q5_0: case PYRT_TYPE_Q5_1:
        return true;
    default:
        return pyrt_kq::is_k(type);
    }
}

bool type_uses_q8(int32_t type) {
    return type == PYRT_TYPE_Q8_0 || type == PYRT_TYPE_Q4_0 || type == PYRT_TYPE_Q4_1 ||
           type == PYRT_TYPE_Q5_0 || type == PYRT_TYPE_Q5_1 || pyrt_kq::is_k(type);
}

template <int T> struct qtraits;
template <> struct qtraits<PYRT_TYPE_Q8_0> { static constexpr int bytes = 34; static constexpr bool min = false; };
template <> struct qtraits<PYRT_TYPE_Q4_0> { static constexpr int bytes = 18; static constexpr bool min = false; };
template <> struct qtraits<PYRT_TYPE_Q4_1> { static constexpr int bytes = 20; static constexpr bool min = true; };
template <> struct qtraits<PYRT_TYPE_Q5_0> { static constexpr int bytes = 22; static constexpr bool min = false; };
template <> struct qtraits<PYRT_TYPE_Q5_1> { static constexpr int bytes = 24; static constexpr bool min = true; };
/* K-quants (256-weight super-blocks): pyrt_kq::ktraits in kquants_block.h */

/* Quarter `sub` (0..3) of a weight block as two ints of 4 signed bytes each,
 * the activation byte offsets they pair with, and the block's d (and m). */
template <int T>
__device__ __forceinline__ void decode_quarter(const uint8_t *blk, int sub, int &w0, int &w1,
                                               int &a0, int &a1, float &d, float &m) {
    d = ld_f16(blk);
    m = 0.0f;
    if constexpr (T == PYRT_TYPE_Q8_0) {
        w0 = ld_i32_a2(blk + 2 + 8 * sub);
        w1 = ld_i32_a2(blk + 2 + 8 * sub + 4);
        a0 = 8 * sub; a1 = 8 * sub + 4;
    } else if constexpr (T == PYRT_TYPE_Q4_0 || T == PYRT_TYPE_Q4_1) {
        const int qoff = T == PYRT_TYPE_Q4_0 ? 2 : 4;
        if constexpr (T == PYRT_TYPE_Q4_1) m = ld_f16(blk + 2);
        const int v = ld_i32_a2(blk + qoff + 4 * sub);
        w0 = v & 0x0F0F0F0F;              /* elements 4sub .. 4sub+3      */
        w1 = (v >> 4) & 0x0F0F0F0F;       /* elements 16+4sub .. 16+4sub+3 */
        if constexpr (T == PYRT_TYPE_Q4_0) { w0 = __vsub4(w0, 0x08080808); w1 = __vsub4(w1, 0x08080808); }
        a0 = 4 * sub; a1 = 16 + 4 * sub;
    } else {   /* Q5_0 / Q5_1 */
        const int hoff = T == PYRT_TYPE_Q5_0 ? 2 : 4;
        if constexpr (T == PYRT_TYPE_Q5_1) m = ld_f16(blk + 2);
        const uint32_t qh = (uint32_t)ld_i32_a2(blk + hoff);
        const int v = ld_i32_a2(blk + hoff + 4 + 4 * sub);
        w0 = (v & 0x0F0F0F0F) | bits_to_bit4((qh >> (4 * sub)) & 0xFu);
        w1 = ((v >> 4) & 0x0F0F0F0F) | bits_to_bit4((qh >> (16 + 4 * sub)) & 0xFu);
        if constexpr (T == PYRT_TYPE_Q5_0) { w0 = __vsub4(w0, 0x10101010); w1 = __vsub4(w1, 0x10101010); }
        a0 = 4 * sub; a1 = 16 + 4 * sub;
    }
}

/* ======================================================================== */
/* activation quantization                                                   */
/* ======================================================================== */

/* one warp per 32-block: quantize_row_q8_1_ref exactly */
__global__ void quantize_q8_kernel(const float *__restrict__ x, int64_t ldx, int64_t n_blocks, int64_t nb,
                                   int8_t *__restrict__ qs, float2 *__restrict__ ds) {
    const int64_t g = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (g >= n_blocks) return;
    const int lane = threadIdx.x & 31;
    const int64_t t = g / nb, b = g % nb;
    const float v = x[t * ldx + b * 32 + lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);     /* half away from zero, as the reference */
    qs[t * nb * 32 + b * 32 + lane] = (int8_t)q;
    const int sum = warp_sum_i(q);
    if (lane == 0) ds[g] = make_float2(round_f16(d), round_f16((float)sum * d));
}

cudaError_t quantize_q8(const float *x, int64_t ldx, int64_t n_tok, int64_t cols, act_q8 a, cudaStream_t st) {
    const int64_t nb = cols / 32, n_blocks = n_tok * nb;
    if (n_blocks <= 0) return cudaSuccess;
    const int warps = 4;
    quantize_q8_kernel<<<(unsigned)((n_blocks + warps - 1) / warps), 32 * warps, 0, st>>>(x, ldx, n_blocks, nb, a.qs, a.ds);
    return cudaGetLastError();
}

/* ======================================================================== */
/* matmul                                                                    */
/* ======================================================================== */

constexpr int MM_WARPS = 4;   /* rows per thread block: one warp per weight row */

/* Quantized weights: a warp takes one row; 4 lanes share a 32-block (a
 * quarter each: 8 weights, two dp4a), 8 blocks per step. The row's quarter is
 * decoded once and multiplied with NT token rows. K-quants: the 8 blocks of a
 * step are one super-block, lane = its chunk (kquants_block.h); the quarter
 * of a K-quant is 8 consecutive weights. */
template <int T, int NT>
__global__ void __launch_bounds__(32 * MM_WARPS)
mmq_kernel(const uint8_t *__restrict__ W, int64_t row_bytes, int64_t rows, int64_t nb,
           const int8_t *__restrict__ aq, const float2 *__restrict__ ads, int64_t n_tok,
           float *__restrict__ y, int64_t ldy) {
    const int64_t r = (int64_t)blockIdx.x * MM_WARPS + threadIdx.y;
    if (r >= rows) return;
    const int lane = threadIdx.x, sub = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.y * NT;
    const uint8_t *wr = W + r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int k = 0; k < NT; k++) acc[k] = 0.0f;
    if constexpr (pyrt_kq::is_k(T)) {
        for (int64_t b = lane >> 2; b < nb; b += 8) {      /* nb % 8 == 0: whole super-blocks */
            const pyrt_kq::chunk q = pyrt_kq::decode<T>(wr + (b >> 3) * pyrt_kq::ktraits<T>::bytes, lane);
#pragma unroll
            for (int k = 0; k < NT; k++) {
                const int64_t t = t0 + k;
                if (t < n_tok) {
                    const int8_t *ab = aq + (t * nb + b) * 32 + 8 * sub;
                    acc[k] += pyrt_kq::dot<pyrt_kq::ktraits<T>::min>(q, *(const int *)ab, *(const int *)(ab + 4),
                                                              ads[t * nb + b].x);
                }
            }
        }
    } else {
        for (int64_t b = lane >> 2; b < nb; b += 8) {
            int w0, w1, o0, o1;
            float d, m;
            decode_quarter<T>(wr + b * qtraits<T>::bytes, sub, w0, w1, o0, o1, d, m);
#pragma unroll
            for (int k = 0; k < NT; k++) {
                const int64_t t = t0 + k;
                if (t < n_tok) {
                    const int8_t *ab = aq + (t * nb + b) * 32;
                    const int sumi = __dp4a(w0, *(const int *)(ab + o0), __dp4a(w1, *(const int *)(ab + o1), 0));
                    const float2 ds = ads[t * nb + b];
                    acc[k] += d * ds.x * (float)sumi;
                    if (qtraits<T>::min && sub == 0) acc[k] += m * ds.y;
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < NT; k++) {
        const float v = warp_sum(acc[k]);
        if (lane == 0 && t0 + k < n_tok) y[(t0 + k) * ldy + r] = v;
    }
}

template <int T>
__device__ __forceinline__ float load_wf(const uint8_t *row, int64_t i) {
    if constexpr (T == PYRT_TYPE_F32) return ((const float *)row)[i];
    else if constexpr (T == PYRT_TYPE_F16) return f16(((const uint16_t *)row)[i]);
    else return __uint_as_float((uint32_t)((const uint16_t *)row)[i] << 16);
}
template <int T>
__device__ __forceinline__ float round_act(float x) {
    if constexpr (T == PYRT_TYPE_F32) return x;
    else if constexpr (T == PYRT_TYPE_F16) return round_f16(x);
    else return round_bf16(x);
}

/* Float weights: a warp per row, lanes stride the row (coalesced) */
template <int T, int NT>
__global__ void __launch_bounds__(32 * MM_WARPS)
mmf_kernel(const uint8_t *__restrict__ W, int64_t row_bytes, int64_t rows, int64_t cols,
           const float *__restrict__ x, int64_t ldx, int64_t n_tok, float *__restrict__ y, int64_t ldy) {
    const int64_t r = (int64_t)blockIdx.x * MM_WARPS + threadIdx.y;
    if (r >= rows) return;
    const int lane = threadIdx.x;
    const int64_t t0 = (int64_t)blockIdx.y * NT;
    const uint8_t *wr = W + r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int k = 0; k < NT; k++) acc[k] = 0.0f;
    for (int64_t i = lane; i < cols; i += 32) {
        const float w = load_wf<T>(wr, i);
#pragma unroll
        for (int k = 0; k < NT; k++)
            if (t0 + k < n_tok) acc[k] += w * round_act<T>(x[(t0 + k) * ldx + i]);
    }
#pragma unroll
    for (int k = 0; k < NT; k++) {
        const float v = warp_sum(acc[k]);
        if (lane == 0 && t0 + k < n_tok) y[(t0 + k) * ldy + r] = v;
    }
}

template <int NT>
static void launch_mm(const dweight &w, const float *x, int64_t ldx, act_q8 a, int64_t n_tok, float *y,
                      int64_t ldy, cudaStream_t st) {
    const dim3 block(32, MM_WARPS);
    const dim3 grid((unsigned)((w.rows + MM_WARPS - 1) / MM_WARPS), (unsigned)((n_tok + NT - 1) / NT));
    const int64_t nb = w.cols / 32;
    switch (w.type) {
#define MMQ(TY) case TY: mmq_kernel<TY, NT><<<grid, block, 0, st>>>(w.data, w.row_bytes, w.rows, nb, a.qs, a.ds, n_tok, y, ldy); break;
#define MMF(TY) case TY: mmf_kernel<TY, NT><<<grid, block, 0, st>>>(w.data, w.row_bytes, w.rows, w.cols, x, ldx, n_tok, y, ldy); break;
    MMQ(PYRT_TYPE_Q8_0) MMQ(PYRT_TYPE_Q4_0) MMQ(PYRT_TYPE_Q4_1) MMQ(PYRT_TYPE_Q5_0) MMQ(PYRT_TYPE_Q5_1)
    MMQ(PYRT_TYPE_Q2_K) MMQ(PYRT_TYPE_Q3_K) MMQ(PYRT_TYPE_Q4_K) MMQ(PYRT_TYPE_Q5_K) MMQ(PYRT_TYPE_Q6_K)
    MMF(PYRT_TYPE_F32) MMF(PYRT_TYPE_F16) MMF(PYRT_TYPE_BF16)
#undef MMQ
#undef MMF
    default: break;
    }
}

cudaError_t matmul(const dweight &w, const float *x, int64_t ldx, act_q8 a, int64_t n_tok, float *y, int64_t ldy,
                   cudaStream_t st) {
    if (!type_supported(w.type)) return cudaErrorInvalidValue;
    if (n_tok <= 0 || w.rows <= 0) return cudaSuccess;
    /* tokens per warp pass: weights are decoded once per NT tokens */
    if (n_tok == 1)      launch_mm<1>(w, x, ldx, a, n_tok, y, ldy, st);
    else if (n_tok == 2) launch_mm<2>(w, x, ldx, a, n_tok, y, ldy, st);
    else if (n_tok <= 4) launch_mm<4>(w, x, ldx, a, n_tok, y, ldy, st);
    else                 launch_mm<8>(w, x, ldx, a, n_tok, y, ldy, st);
    return cudaGetLastError();
}

/* ======================================================================== */
/* embedding rows                                                            */
/* ======================================================================== */

__device__ float dequant_elem(int32_t type, const uint8_t *row, int64_t j) {
    const int64_t b = j / 32;
    const int e = (int)(j % 32);
    switch (type) {
    case PYRT_TYPE_F32: return ((const float *)row)[j];
    case PYRT_TYPE_F16: return f16(((const uint16_t *)row)[j]);
    case PYRT_TYPE_BF16: return __uint_as_float((uint32_t)((const uint16_t *)row)[j] << 16);
    case PYRT_TYPE_Q8_0: {
        const uint8_t *blk = row + b * 34;
        return (float)(int8_t)blk[2 + e] * ld_f16(blk);
    }
    case PYRT_TYPE_Q4_0: case PYRT_TYPE_Q4_1: {
        const bool q41 = type == PYRT_TYPE_Q4_1;
        const uint8_t *blk = row + b * (q41 ? 20 : 18);
        const uint8_t v = blk[(q41 ? 4 : 2) + (e & 15)];
        const int q = e < 16 ? (v & 15) : (v >> 4);
        return q41 ? (float)q * ld_f16(blk) + ld_f16(blk + 2) : (float)(q - 8) * ld_f16(blk);
    }
    case PYRT_TYPE_Q5_0: case PYRT_TYPE_Q5_1: {
        const bool q51 = type == PYRT_TYPE_Q5_1;
        const uint8_t *blk = row + b * (q51 ? 24 : 22);
        const int hoff = q51 ? 4 : 2;
        const uint32_t qh = (uint32_t)blk[hoff] | ((uint32_t)blk[hoff + 1] << 8) |
                            ((uint32_t)blk[hoff + 2] << 16) | ((uint32_t)blk[hoff + 3] << 24);
        const uint8_t v = blk[hoff + 4 + (e & 15)];
        const int q = (e < 16 ? (v & 15) : (v >> 4)) | (int)(((qh >> e) & 1u) << 4);
        return q51 ? (float)q * ld_f16(blk) + ld_f16(blk + 2) : (float)(q - 16) * ld_f16(blk);
    }
    default: return pyrt_kq::dequant_row_elem(type, row, j);   /* K-quants; 0 for others */
    }
}

__global__ void get_rows_kernel(const uint8_t *__restrict__ W, int32_t type, int64_t row_bytes, int64_t cols,
                                const int32_t *__restrict__ tokens, float *__restrict__ x, float scale) {
    const int64_t t = blockIdx.x;
    const uint8_t *row = W + (int64_t)tokens[t] * row_bytes;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
        float v = dequant_elem(type, row, j);
        if (scale > 0.0f) v *= scale;
        x[t * cols + j] = v;
    }
}

cudaError_t get_rows(const dweight &w, const int32_t *tokens, int64_t n_tok, float *x, float scale, cudaStream_t st) {
    if (!type_supported(w.type)) return cudaErrorInvalidValue;
    if (n_tok <= 0) return cudaSuccess;
    get_rows_kernel<<<(unsigned)n_tok, 256, 0, st>>>(w.data, w.type, w.row_bytes, w.cols, tokens, x, scale);
    return cudaGetLastError();
}

/* ======================================================================== */
/* RMSNorm                                                                   */
/* ======================================================================== */

/* as op_rmsnorm: float squares summed in double, 1/sqrtf(mean + eps),
 * y = (x * scale) * w */
__device__ float row_rms_scale(const float *x, int64_t n, float eps, double *red) {
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += (double)(x[i] * x[i]);
    s = block_sum_d(s, red);
    const float mean = (float)(s / (double)n);
    return 1.0f / sqrtf(mean + eps);
}

__global__ void rmsnorm_kernel(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t n, float eps) {
    __shared__ double red[32];
    const float *xr = x + (int64_t)blockIdx.x * ldx;
    float *yr = y + (int64_t)blockIdx.x * ldy;
    const float scale = row_rms_scale(xr, n, eps, red);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = w ? __fmul_rn(__fmul_rn(xr[i], scale), w[i]) : __fmul_rn(xr[i], scale);
}

cudaError_t rmsnorm(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t n, int64_t rows,
                    float eps, cudaStream_t st) {
    if (rows <= 0) return cudaSuccess;
    rmsnorm_kernel<<<(unsigned)rows, 256, 0, st>>>(y, ldy, x, ldx, w, n, eps);
    return cudaGetLastError();
}

__global__ void residual_norm_kernel(float *x, const float *t, const float *post_w, float *xn, const float *next_w,
                                     int64_t n, float eps) {
    __shared__ double red[32];
    const int64_t off = (int64_t)blockIdx.x * n;
    float *xr = x + off;
    const float *tr = t + off;
    if (post_w) {
        const float sc = row_rms_scale(tr, n, eps, red);
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            xr[i] = __fadd_rn(xr[i], __fmul_rn(__fmul_rn(tr[i], sc), post_w[i]));
    } else {
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xr[i] = __fadd_rn(xr[i], tr[i]);
    }
    if (next_w) {
        /* each thread reads back only the elements it wrote: no barrier needed
         * before the sum (block_sum_d has its own) */
        const float sc = row_rms_scale(xr, n, eps, red);
        float *xnr = xn + off;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xnr[i] = __fmul_rn(__fmul_rn(xr[i], sc), next_w[i]);
    }
}

cudaError_t residual_norm(float *x, const float *t, const float *post_w, float *xn, const float *next_w, int64_t n,
                          int64_t rows, float eps, cudaStream_t st) {
    if (rows <= 0) return cudaSuccess;
    residual_norm_kernel<<<(unsigned)rows, 256, 0, st>>>(x, t, post_w, xn, next_w, n, eps);
    return cudaGetLastError();
}

/* ======================================================================== */
/* QK-norm, RoPE, KV store                                                   */
/* ======================================================================== */

__global__ void qk_rope_store_kernel(rope_args a) {
    extern __shared__ float buf[];            /* [head_dim] */
    __shared__ double red[32];
    const int h = blockIdx.x, t = blockIdx.y, HD = a.head_dim;
    const bool isq = h < a.n_head;
    const int hk = h - a.n_head;
    const int64_t QD = (int64_t)a.n_head * HD, KVD = (int64_t)a.n_head_kv * HD;
    float *src = isq ? a.q + t * QD + (int64_t)h * HD : a.k + t * KVD + (int64_t)hk * HD;
    const float *nw = isq ? a.q_norm : a.k_norm;
    for (int i = threadIdx.x; i < HD; i += blockDim.x) buf[i] = src[i];
    __syncthreads();
    if (nw) {
        const float sc = row_rms_scale(buf, HD, a.eps, red);
        __syncthreads();
        for (int i = threadIdx.x; i < HD; i += blockDim.x) buf[i] = __fmul_rn(__fmul_rn(buf[i], sc), nw[i]);
    }
    __syncthreads();
    /* rotate pair i; theta_i = pos * theta_scale^i by the CPU's chain of
     * float multiplications, rotation without contraction (as generic/ops.c) */
    const float pos = (float)(a.pos0 + t);
    const int half = a.n_rot / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = pos;
        for (int k = 0; k < i; k++) theta = __fmul_rn(theta, a.theta_scale);
        const float th = __fmul_rn(theta, a.freq_scale);
        const float c = cosf(th), s = sinf(th);
        const int ia = a.mode == PYRT_ROPE_NEOX ? i : 2 * i;
        const int ib = a.mode == PYRT_ROPE_NEOX ? i + half : 2 * i + 1;
        const float x0 = buf[ia], x1 = buf[ib];
        buf[ia] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        buf[ib] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
    __syncthreads();
    if (isq && a.q_scale != 1.0f)
        for (int i = threadIdx.x; i < HD; i += blockDim.x) buf[i] = __fmul_rn(buf[i], a.q_scale);
    for (int i = threadIdx.x; i < HD; i += blockDim.x) src[i] = buf[i];
    if (!isq) {
        const int64_t row = (int64_t)(a.pos0 + t) * KVD + (int64_t)hk * HD;
        const float *vr = a.v + t * KVD + (int64_t)hk * HD;
        for (int i = threadIdx.x; i < HD; i += blockDim.x) {
            a.kc[row + i] = __half_as_ushort(__float2half_rn(buf[i]));
            a.vc[row + i] = __half_as_ushort(__float2half_rn(vr[i]));
        }
    }
}

cudaError_t qk_rope_store(const rope_args &a, cudaStream_t st) {
    if (a.n_tok <= 0) return cudaSuccess;
    const dim3 grid((unsigned)(a.n_head + a.n_head_kv), (unsigned)a.n_tok);
    qk_rope_store_kernel<<<grid, 128, (size_t)a.head_dim * sizeof(float), st>>>(a);
    return cudaGetLastError();
}

/* ======================================================================== */
/* attention                                                                 */
/* ======================================================================== */

constexpr int ATTN_WARPS = 4;

/* One (head, token, split) per block. Each warp takes chunks of 32 cache
 * positions: lane j computes the score of position j (q.k over head_dim, q
 * from shared memory), the warp updates its running max / sum, then the
 * probabilities are broadcast lane by lane and each lane accumulates its
 * head_dim/32 output elements. Warps are merged in shared memory and the
 * block writes (max, sum, unnormalized output) for the combine kernel. */
template <int NDL>   /* output elements per lane: ceil(head_dim / 32) <= NDL */
__global__ void __launch_bounds__(32 * ATTN_WARPS) attn_split_kernel(attn_args a) {
    extern __shared__ float sm[];
    const int HD = a.head_dim;
    float *sq = sm;                                   /* [HD]                      */
    float *wpart = sm + HD;                           /* [ATTN_WARPS][HD + 2]      */
    const int h = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gqa = a.n_head / a.n_head_kv;
    const int64_t KVD = (int64_t)a.n_head_kv * HD, QD = (int64_t)a.n_head * HD;
    const int pos = a.pos0 + t;
    const int first = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    const int n = pos - first + 1;
    const int per = (n + a.n_split - 1) / a.n_split;
    const int lo = first + split * per;
    const int hi = min(pos + 1, lo + per);
    const uint16_t *kb = a.kc + (int64_t)(h / gqa) * HD;
    const uint16_t *vb = a.vc + (int64_t)(h / gqa) * HD;

    for (int d = threadIdx.x; d < HD; d += blockDim.x) sq[d] = round_f16(a.q[t * QD + (int64_t)h * HD + d]);
    __syncthreads();

    float m = -INFINITY, l = 0.0f, o[NDL];
#pragma unroll
    for (int i = 0; i < NDL; i++) o[i] = 0.0f;
    for (int j0 = lo + warp * 32; j0 < hi; j0 += ATTN_WARPS * 32) {
        const int j = j0 + lane;
        float s = -INFINITY;
        if (j < hi) {
            const __half2 *kr = (const __half2 *)(kb + (int64_t)j * KVD);   /* HD even, rows 4-byte aligned */
            float acc = 0.0f;
            for (int d = 0; d < HD / 2; d++) {
                const float2 kf = __half22float2(kr[d]);
                acc += kf.x * sq[2 * d] + kf.y * sq[2 * d + 1];
            }
            s = acc * a.scale;
        }
        const float m_new = fmaxf(m, warp_max(s));     /* finite: lane 0 has j < hi */
        const float corr = expf(m - m_new);            /* 0 on the first chunk       */
        const float p = j < hi ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < NDL; i++) o[i] *= corr;
        const int cnt = min(32, hi - j0);
        for (int jj = 0; jj < cnt; jj++) {
            const float pj = __shfl_sync(0xffffffffu, p, jj);
            const uint16_t *vr = vb + (int64_t)(j0 + jj) * KVD;
#pragma unroll
            for (int i = 0; i < NDL; i++) {
                const int d = lane + 32 * i;
                if (d < HD) o[i] += pj * f16(vr[d]);
            }
        }
        m = m_new;
    }

    float *wp = wpart + warp * (HD + 2);
    if (lane == 0) { wp[0] = m; wp[1] = l; }
#pragma unroll
    for (int i = 0; i < NDL; i++) {
        const int d = lane + 32 * i;
        if (d < HD) wp[2 + d] = o[i];
    }
    __syncthreads();
    /* merge the warps; a warp without positions has l = 0 and drops out */
    float M = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; w++)
        if (wpart[w * (HD + 2) + 1] > 0.0f) M = fmaxf(M, wpart[w * (HD + 2)]);
    float *dst = a.partial + (((int64_t)t * a.n_head + h) * a.n_split + split) * (HD + 2);
    float L = 0.0f;
    for (int w = 0; w < ATTN_WARPS; w++) {
        const float lw = wpart[w * (HD + 2) + 1];
        if (lw > 0.0f) L += lw * expf(wpart[w * (HD + 2)] - M);
    }
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float od = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) {
            const float lw = wpart[w * (HD + 2) + 1];
            if (lw > 0.0f) od += wpart[w * (HD + 2) + 2 + d] * expf(wpart[w * (HD + 2)] - M);
        }
        dst[2 + d] = od;
    }
    if (threadIdx.x == 0) { dst[0] = M; dst[1] = L; }
}

__global__ void attn_combine_kernel(attn_args a) {
    const int h = blockIdx.x, t = blockIdx.y, HD = a.head_dim;
    const float *src = a.partial + ((int64_t)t * a.n_head + h) * a.n_split * (HD + 2);
    float M = -INFINITY;
    for (int s = 0; s < a.n_split; s++)
        if (src[s * (HD + 2) + 1] > 0.0f) M = fmaxf(M, src[s * (HD + 2)]);
    float L = 0.0f;
    for (int s = 0; s < a.n_split; s++) {
        const float ls = src[s * (HD + 2) + 1];
        if (ls > 0.0f) L += ls * expf(src[s * (HD + 2)] - M);
    }
    const float inv = 1.0f / L;
    float *out = a.out + (int64_t)t * a.n_head * HD + (int64_t)h * HD;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float od = 0.0f;
        for (int s = 0; s < a.n_split; s++) {
            const float ls = src[s * (HD + 2) + 1];
            if (ls > 0.0f) od += src[s * (HD + 2) + 2 + d] * expf(src[s * (HD + 2)] - M);
        }
        out[d] = od * inv;
    }
}

int64_t attn_partial_floats(int32_t n_tok, int32_t n_head, int32_t head_dim, int32_t n_split) {
    return (int64_t)n_tok * n_head * n_split * (head_dim + 2);
}

int32_t attn_pick_split(int32_t n_tok, int32_t n_head, int32_t max_pos) {
    /* enough blocks to fill a GPU when few (token, head) pairs exist; each
     * split keeps >= 128 positions so the merge stays cheap */
    if ((int64_t)n_tok * n_head >= 256) return 1;
    int32_t s = (max_pos + 127) / 128;
    const int32_t want = (int32_t)((256 + (int64_t)n_tok * n_head - 1) / ((int64_t)n_tok * n_head));
    if (s > want) s = want;
    if (s > ATTN_MAX_SPLIT) s = ATTN_MAX_SPLIT;
    return s < 1 ? 1 : s;
}

cudaError_t attention(const attn_args &a, cudaStream_t st) {
    if (a.n_tok <= 0) return cudaSuccess;
    if (a.head_dim <= 0 || a.head_dim > ATTN_MAX_HEAD_DIM || a.head_dim % 2 || a.n_split < 1 ||
        a.n_split > ATTN_MAX_SPLIT)
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)a.n_head, (unsigned)a.n_tok, (unsigned)a.n_split);
    const size_t shm = ((size_t)a.head_dim + ATTN_WARPS * ((size_t)a.head_dim + 2)) * sizeof(float);
    const int ndl = (a.head_dim + 31) / 32;
    if (ndl <= 2)       attn_split_kernel<2><<<grid, 32 * ATTN_WARPS, shm, st>>>(a);
    else if (ndl <= 4)  attn_split_kernel<4><<<grid, 32 * ATTN_WARPS, shm, st>>>(a);
    else if (ndl <= 8)  attn_split_kernel<8><<<grid, 32 * ATTN_WARPS, shm, st>>>(a);
    else if (ndl <= 16) attn_split_kernel<16><<<grid, 32 * ATTN_WARPS, shm, st>>>(a);
    else                attn_split_kernel<32><<<grid, 32 * ATTN_WARPS, shm, st>>>(a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    attn_combine_kernel<<<dim3((unsigned)a.n_head, (unsigned)a.n_tok), 128, 0, st>>>(a);
    return cudaGetLastError();
}

/* ======================================================================== */
/* gated activations                                                         */
/* ======================================================================== */

__global__ void glu_kernel(float *g, const float *u, int64_t n, int gelu) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = g[i];
    if (gelu) {
        const float c = 0.7978845608028654f;
        g[i] = 0.5f * v * (1.0f + tanhf(c * v * (1.0f + 0.044715f * v * v))) * u[i];
    } else {
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

cudaError_t glu(float *g, const float *u, int64_t n, int gelu, cudaStream_t st) {
    if (n <= 0) return cudaSuccess;
    glu_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(g, u, n, gelu);
    return cudaGetLastError();
}

}  // namespace pyrt_cuda
