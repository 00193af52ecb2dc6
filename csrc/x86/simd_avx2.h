/* simd_avx2.h — small AVX2 helpers shared by the *_avx2.c kernel files (only
 * included by files compiled with -mavx2 -mfma -mf16c). */
#ifndef PYRT_SIMD_AVX2_H
#define PYRT_SIMD_AVX2_H

#include <immintrin.h>
#include <string.h>
#include "quant.h"

/* Horizontal sum in ggml's order: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)). */
static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* the largest lane of v, for v without NaN lanes (max_ps keeps its second
 * operand on NaN, so a running max_ps(x, m) from a non-NaN start has none) */
static inline float hmax_ps(__m256 v) {
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}
static inline int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* Software prefetch distance (bytes) along each weight row streamed from
 * memory in the single-token tiles. It mattered when those tiles read 4-8
 * adjacent rows (Q8_0 GEMV 5 -> 30 GB/s on one host); with the rows far
 * apart (GEMV_STREAMS, kernels.h) it is within noise either way. -DPF_DIST=
 * overrides it for experiments. */
#ifndef PF_DIST
#define PF_DIST 10240
#endif

static inline float fp16_1(pyrt_fp16 h) { return _cvtsh_ss(h); }

/* 16 packed nibble bytes -> 32 bytes in element order (lo nibbles = 0..15,
 * hi nibbles = 16..31), values 0..15 */
static inline __m256i unpack_nibbles(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* 32 bits of qh -> 32 bytes, 0x10 where bit j is set */
static inline __m256i qh_to_bit4(const uint8_t qh[4]) {
    uint32_t u;
    memcpy(&u, qh, 4);
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u), shuf);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), bits);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* Q4_K/Q5_K 12 packed scale bytes, as dwords u0 u1 u2 -> 16 bytes [scales 0..7,
 * mins 0..7] (ggml's get_scale_min_k4): scales 0..3 = u0 & 0x3f, mins 0..3 =
 * u1 & 0x3f, scales 4..7 = (u2 & 0x0f) | (u0 >> 6) << 4, mins 4..7 =
 * (u2 >> 4 & 0x0f) | (u1 >> 6) << 4, per byte; here from p = the packed dwords
 * as [u0 u2 u1 u2] and h = [u0 u0 u1 u1] */
static inline __m128i scales_mins_k4_uv(__m128i p, __m128i h) {
    const __m128i lo = _mm_and_si128(_mm_srlv_epi32(p, _mm_setr_epi32(0, 0, 0, 4)),
                                     _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i hi = _mm_and_si128(_mm_srli_epi32(h, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

/* from the 12 packed bytes (reads 16 bytes from `packed`: the 4 after them
 * are the block's own, its codes or fifth bits) */
static inline __m128i scales_mins_k4v(const uint8_t *packed) {
    const __m128i v = _mm_loadu_si128((const __m128i *)packed);       /* u0 u1 u2 . */
    return scales_mins_k4_uv(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)));
}

/* scales_mins_k4v for two blocks at once, one per 128-bit half of head =
 * each block's first 16 bytes [d|dmin u0 u1 u2] (d and dmin loaded along) */
static inline __m256i scales_mins_k4_head2(__m256i head) {
    const __m256i p = _mm256_shuffle_epi32(head, _MM_SHUFFLE(3, 2, 3, 1));
    const __m256i h = _mm256_shuffle_epi32(head, _MM_SHUFFLE(2, 2, 1, 1));
    const __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(p, _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4)),
                                        _mm256_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f,
                                                          0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi32(h, 2), _mm256_setr_epi32(0, 0x30303030, 0, 0x30303030,
                                                                                   0, 0x30303030, 0, 0x30303030));
    return _mm256_or_si256(lo, hi);
}

/* For the row-per-lane repacked Q4_0 GEMMs: per token t < nt and block b <
 * nb of Q8_0 activation rows a_row bytes apart, the vpdpbusd start value
 * -8 * (sum of the block's bytes) and the block scale as a float, [t][nb]. */
static inline void q8_0_corr_scales(const void *a, int64_t a_row, int64_t nt, int64_t nb, int32_t *cs, float *ds) {
    for (int64_t t = 0; t < nt; t++) {
        const block_q8_0 *ab = (const block_q8_0 *)((const char *)a + t * a_row);
        for (int64_t b = 0; b < nb; b++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)ab[b].qs);
            cs[t * nb + b] = -hsum_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), q),
                                                           _mm256_set1_epi16(1)));
            ds[t * nb + b] = fp16_1(ab[b].d);
        }
    }
}

/* Software prefetch of one block's cache lines DIST bytes ahead of p into the
 * L2 cache (prefetcht1), as inline asm (volatile) so the compiler can neither
 * drop nor move it; a prefetch never faults, even past the end of a matrix.
 * Used by the K-quant GEMVs. Into L2, not L1 (prefetcht0): on a Zen 4 host the
 * L1 prefetches of 8-16 streams made the GEMVs slower than no software
 * prefetch at all (DRAM-bound Q4_K 8192 x 2048, 1 thread, AVX-512 table:
 * 11 GB/s with prefetcht0, 8.5 with none, 21 with prefetcht1; AVX2 table
 * 14, 16.5 and 17). */
static inline __attribute__((always_inline)) void prefetch_l2(const void *p) {
    __asm__ volatile("prefetcht1 %0" : : "m"(*(const char *)p));
}
#define PREFETCH_BLOCK_AHEAD(p, BYTES, DIST)                                                      \
    do {                                                                                          \
        const char *pf_ = (const char *)(p) + (DIST);                                              \
        for (int l_ = 0; l_ < (int)(BYTES); l_ += 64) prefetch_l2(pf_ + l_);                       \
    } while (0)

/* A K-quant GEMV's row group in passes of up to 4 tokens (later passes find
 * the rows in cache): GROUP(nsb, xr, yt, NT, y0, ldy, ...) with NT a literal
 * 1..4, so each count gets its own unrolled instance of the always_inline
 * group kernel. */
#define KQ_TOKEN_PASSES(GROUP, nsb, xr, a, a_row, n_tok, yo, ldy, ...)                            \
    for (int64_t t0_ = 0; t0_ < (n_tok);) {                                                       \
        const int nt_ = (n_tok) - t0_ >= 4 ? 4 : (int)((n_tok) - t0_);                              \
        const block_q8_K *yt_[4];                                                                 \
        for (int j_ = 0; j_ < nt_; j_++)                                                          \
            yt_[j_] = (const block_q8_K *)((const char *)(a) + (t0_ + j_) * (a_row));               \
        float *y0_ = (yo) + t0_ * (ldy);                                                          \
        if (nt_ == 4) GROUP(nsb, xr, yt_, 4, y0_, ldy, __VA_ARGS__);                               \
        else if (nt_ == 3) GROUP(nsb, xr, yt_, 3, y0_, ldy, __VA_ARGS__);                          \
        else if (nt_ == 2) GROUP(nsb, xr, yt_, 2, y0_, ldy, __VA_ARGS__);                          \
        else GROUP(nsb, xr, yt_, 1, y0_, ldy, __VA_ARGS__);                                        \
        t0_ += nt_;                                                                               \
    }

#endif
