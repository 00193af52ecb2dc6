/* kquants_block.h — the K-quant weight blocks (Q2_K .. Q6_K, layouts in
 * ../quant.h and ../kquants_ref.c) as the CUDA matmul reads them: one
 * "chunk" of 8 consecutive weights at a time, as two ints of 4 signed bytes
 * and a scale pair (d, m) with x = d*q - m.
 *
 * Plain C++ with __host__ __device__ under nvcc, so that the very functions
 * the device kernels call (cuda_ops.cu) are also compiled for the CPU and
 * checked there against the scalar reference: tests/c/test_cuda_kquants.cpp
 * (run by tests/test_cuda_kquants.py, with g++ and, where present, nvcc as
 * host code). Only the loads, dp4a and the non-contracted float ops differ
 * between the two compilations (#ifdef __CUDA_ARCH__ below), and those are
 * exercised on a GPU by tests/c/test_cuda.cu.
 *
 * Chunk c (0..31) of a 256-weight super-block holds elements 8c .. 8c+7:
 * four chunks per 32-element activation block (c = 4*i32 + quarter), so a
 * warp of 32 lanes covers one super-block per step. A chunk never straddles
 * a sub-block (16 or 32 weights), so it has one scale (and one min).
 *
 * The activations are the backend's q8 blocks of 32 (act_q8: int8 + d per
 * 32); the min term uses the exact integer sum of the chunk's activations
 * (a dp4a with ones) rather than the fp16-rounded block sum, as ggml's Q8_K
 * bsums are exact. Every load is of 2-byte aligned pairs: Q3_K (110 bytes)
 * and Q6_K (210 bytes) blocks are only 2-byte aligned in a row. */
#ifndef PYRT_CUDA_KQUANTS_BLOCK_H
#define PYRT_CUDA_KQUANTS_BLOCK_H

#include <stdint.h>
#include "../pyrt.h"
#include "../quant.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define PYRT_HD __host__ __device__ __forceinline__
#else
#define PYRT_HD inline
#endif

namespace pyrt_kq {

template <int T> struct ktraits;
template <> struct ktraits<PYRT_TYPE_Q2_K> { static constexpr int bytes = 84;  static constexpr bool min = true; };
template <> struct ktraits<PYRT_TYPE_Q3_K> { static constexpr int bytes = 110; static constexpr bool min = false; };
template <> struct ktraits<PYRT_TYPE_Q4_K> { static constexpr int bytes = 144; static constexpr bool min = true; };
template <> struct ktraits<PYRT_TYPE_Q5_K> { static constexpr int bytes = 176; static constexpr bool min = true; };
template <> struct ktraits<PYRT_TYPE_Q6_K> { static constexpr int bytes = 210; static constexpr bool min = false; };

PYRT_HD constexpr bool is_k(int32_t type) {
    return type == PYRT_TYPE_Q2_K || type == PYRT_TYPE_Q3_K || type == PYRT_TYPE_Q4_K || type == PYRT_TYPE_Q5_K ||
           type == PYRT_TYPE_Q6_K;
}

/* 8 weights: bytes of w0 are elements 0..3, of w1 elements 4..7; x = d*q - m */
struct chunk {
    int w0, w1;
    float d, m;
};

/* ---- portable primitives ------------------------------------------------- */

PYRT_HD float f16(const uint8_t *p) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(*(const uint16_t *)p));
#else
    return pyrt_fp16_to_fp32((pyrt_fp16)(p[0] | (p[1] << 8)));
#endif
}

/* 4 bytes, little endian, at a 2-byte aligned address */
PYRT_HD uint32_t ld32(const uint8_t *p) {
#if defined(__CUDA_ARCH__)
    const uint16_t *h = (const uint16_t *)p;
    return (uint32_t)h[0] | ((uint32_t)h[1] << 16);
#else
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
#endif
}

/* per byte v - k as int8, for bytes v in [0, 127], k <= v + 128: the high bit
 * set first keeps the subtraction from borrowing across bytes */
PYRT_HD int sub_bytes(uint32_t v, uint32_t k4) { return (int)(((v | 0x80808080u) - k4) ^ 0x80808080u); }

PYRT_HD int dp4a(int a, int b, int c) {
#if defined(__CUDA_ARCH__)
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> 8 * i) * (int)(int8_t)(b >> 8 * i);
    return c;
#endif
}

/* a*b - c without FMA contraction (the CPU reference rounds the product) */
PYRT_HD float mul_sub(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(__fmul_rn(a, b), c);
#else
    const volatile float p = a * b;
    return p - c;
#endif
}

/* Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7), as scale_min_k4 */
PYRT_HD void scale_min_k4(int j, const uint8_t *q, int &sc, int &m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* ---- decoders: chunk c (0..31) of the super-block at blk ------------------- */

template <int T>
PYRT_HD chunk decode(const uint8_t *blk, int c) {
    chunk k;
    const int l0 = 8 * (c & 3);          /* element 8c's position within its 32-block */
    if constexpr (T == PYRT_TYPE_Q2_K) {
        /* scales[16] qs[64] d dmin; q = (qs[32h + l] >> 2g) & 3, h = c/16, g = (c%16)/4 */
        const uint8_t *qs = blk + 16 + 32 * (c >> 4) + l0;
        const int sh = 2 * ((c & 15) >> 2);
        k.w0 = (int)((ld32(qs) >> sh) & 0x03030303u);
        k.w1 = (int)((ld32(qs + 4) >> sh) & 0x03030303u);
        const int sc = blk[c >> 1];                      /* sub-block of 16: e/16 = c/2 */
        k.d = f16(blk + 80) * (float)(sc & 0x0F);
        k.m = f16(blk + 82) * (float)(sc >> 4);
    } else if constexpr (T == PYRT_TYPE_Q3_K) {
        /* hmask[32] qs[64] scales[12] d; q = low 2 bits + 4*hbit - 4 */
        const int h = c >> 4, g = (c & 15) >> 2;
        const uint8_t *qs = blk + 32 + 32 * h + l0, *hm = blk + l0;
        const int hs = g + 4 * h;
        const uint32_t q0 = ((ld32(qs) >> 2 * g) & 0x03030303u) | (((ld32(hm) >> hs) & 0x01010101u) << 2);
        const uint32_t q1 = ((ld32(qs + 4) >> 2 * g) & 0x03030303u) | (((ld32(hm + 4) >> hs) & 0x01010101u) << 2);
        k.w0 = sub_bytes(q0, 0x04040404u);
        k.w1 = sub_bytes(q1, 0x04040404u);
        const uint8_t *sp = blk + 96;
        const int s = c >> 1;
        const int lo = s < 8 ? sp[s] & 0x0F : sp[s - 8] >> 4;
        const int hi = (sp[8 + (s & 3)] >> (2 * (s >> 2))) & 3;
        k.d = f16(blk + 108) * (float)((lo | (hi << 4)) - 32);
        k.m = 0.0f;
    } else if constexpr (T == PYRT_TYPE_Q4_K || T == PYRT_TYPE_Q5_K) {
        /* d dmin scales[12] (qh[32]) qs[128]; nibble of qs[32*(c/8) + l], low for c%8 < 4 */
        const int qoff = T == PYRT_TYPE_Q4_K ? 16 : 48;
        const uint8_t *qs = blk + qoff + 32 * (c >> 3) + l0;
        const int sh = 4 * ((c >> 2) & 1);
        uint32_t q0 = (ld32(qs) >> sh) & 0x0F0F0F0Fu, q1 = (ld32(qs + 4) >> sh) & 0x0F0F0F0Fu;
        if constexpr (T == PYRT_TYPE_Q5_K) {             /* bit 4: bit c/4 of qh[l] */
            const uint8_t *qh = blk + 16 + l0;
            q0 |= ((ld32(qh) >> (c >> 2)) & 0x01010101u) << 4;
            q1 |= ((ld32(qh + 4) >> (c >> 2)) & 0x01010101u) << 4;
        }
        k.w0 = (int)q0;
        k.w1 = (int)q1;
        int sc, m;
        scale_min_k4(c >> 2, blk + 4, sc, m);
        k.d = f16(blk) * (float)sc;
        k.m = f16(blk + 2) * (float)m;
    } else {   /* Q6_K: ql[128] qh[64] int8 scales[16] d; q = lo4 | hi2 << 4, minus 32 */
        const int h = c >> 4, g = (c & 15) >> 2;
        const uint8_t *ql = blk + 64 * h + 32 * (g & 1) + l0, *qh = blk + 128 + 32 * h + l0;
        const int lsh = 4 * (g >> 1), hsh = 2 * g;
        const uint32_t q0 = ((ld32(ql) >> lsh) & 0x0F0F0F0Fu) | (((ld32(qh) >> hsh) & 0x03030303u) << 4);
        const uint32_t q1 = ((ld32(ql + 4) >> lsh) & 0x0F0F0F0Fu) | (((ld32(qh + 4) >> hsh) & 0x03030303u) << 4);
        k.w0 = sub_bytes(q0, 0x20202020u);
        k.w1 = sub_bytes(q1, 0x20202020u);
        k.d = f16(blk + 208) * (float)(int8_t)blk[192 + (c >> 1)];
        k.m = 0.0f;
    }
    return k;
}

/* Element i (0..7) of a chunk, dequantized exactly as generic/kquants.c does */
PYRT_HD float dequant(const chunk &k, int i) {
    const int q = (int)(int8_t)((i < 4 ? k.w0 : k.w1) >> 8 * (i & 3));
    return mul_sub(k.d, (float)q, k.m);
}

/* The chunk's dot with 8 activations a0 (elements 0..3), a1 (4..7) of a q8
 * block with scale da: da * (d * sum(q*a) - m * sum(a)) */
template <bool MIN>
PYRT_HD float dot(const chunk &k, int a0, int a1, float da) {
    const int sumi = dp4a(k.w0, a0, dp4a(k.w1, a1, 0));
    if constexpr (!MIN) {
        return da * (k.d * (float)sumi);
    } else {
        const int suma = dp4a(0x01010101, a0, dp4a(0x01010101, a1, 0));
        return da * (k.d * (float)sumi - k.m * (float)suma);
    }
}

/* Element j of a row of type `type` (a K-quant), for embedding lookups */
PYRT_HD float dequant_row_elem(int32_t type, const uint8_t *row, int64_t j) {
    const int64_t b = j / 256;
    const int e = (int)(j % 256);
    switch (type) {
    case PYRT_TYPE_Q2_K: return dequant(decode<PYRT_TYPE_Q2_K>(row + b * 84, e >> 3), e & 7);
    case PYRT_TYPE_Q3_K: return dequant(decode<PYRT_TYPE_Q3_K>(row + b * 110, e >> 3), e & 7);
    case PYRT_TYPE_Q4_K: return dequant(decode<PYRT_TYPE_Q4_K>(row + b * 144, e >> 3), e & 7);
    case PYRT_TYPE_Q5_K: return dequant(decode<PYRT_TYPE_Q5_K>(row + b * 176, e >> 3), e & 7);
    case PYRT_TYPE_Q6_K: return dequant(decode<PYRT_TYPE_Q6_K>(row + b * 210, e >> 3), e & 7);
    default: return 0.0f;
    }
}

}  // namespace pyrt_kq

#endif
