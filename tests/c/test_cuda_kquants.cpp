/* test_cuda_kquants.cpp — the K-quant block math of the CUDA backend
 * (csrc/cuda/kquants_block.h, the functions its device matmul and embedding
 * kernels call) checked on the CPU, so that it is verified on machines
 * without a GPU. tests/test_cuda_kquants.py builds and runs it against
 * libpyrt (the scalar reference), with g++ and, where nvcc is present, with
 * nvcc compiling the same header as host code:
 *
 *   c++ -O2 -std=c++17 -ffp-contract=off -Icsrc tests/c/test_cuda_kquants.cpp \
 *       -Lbuild -lpyrt -Wl,-rpath,$PWD/build -o /tmp/t && /tmp/t
 *
 * For Q2_K .. Q6_K, on random blocks (every bit pattern of the quants and
 * scales; fp16 d/dmin of both signs over a wide range):
 *   decode + dequant   bit-exact vs pyrt_dequantize (scalar generic/kquants.c)
 *   row dot            the kernel's sum of chunk dots over q8_1 activations
 *                      (pyrt_quantize_act Q8_1, as the device quantizes) vs
 *                      the float64 dot of the dequantized weights and
 *                      activations: |err| <= 1e-5 * sum|w*a|
 *   vs the CPU path    vs pyrt_vec_dot (Q8_K activations):
 *                      |err| <= 2e-2 * sum|w*x| (activation rounding only)
 * What this cannot check: the device loads/dp4a (#ifdef __CUDA_ARCH__ in the
 * header) and the kernels' indexing; tests/c/test_cuda.cu does, on a GPU.
 * Prints "N passed, M failed"; exit 1 on failure. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "cuda/kquants_block.h"
#include "test_rng.h"

static int g_passed, g_failed;

static void check(bool ok, const char *fmt, ...) {
    if (ok) { g_passed++; return; }
    g_failed++;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

struct kinfo { int type; const char *name; int bytes; int d_off, dmin_off; };   /* dmin_off < 0: none */
static const kinfo KTYPES[] = {
    { PYRT_TYPE_Q2_K, "q2_K", 84, 80, 82 },
    { PYRT_TYPE_Q3_K, "q3_K", 110, 108, -1 },
    { PYRT_TYPE_Q4_K, "q4_K", 144, 0, 2 },
    { PYRT_TYPE_Q5_K, "q5_K", 176, 0, 2 },
    { PYRT_TYPE_Q6_K, "q6_K", 210, 208, -1 },
};

/* random bytes, then finite fp16 scales 2^[lo,hi) of random sign */
static void random_blocks(const kinfo &k, uint8_t *p, int64_t nb, double lo, double hi) {
    for (int64_t i = 0; i < nb * k.bytes; i++) p[i] = (uint8_t)next_u64();
    for (int64_t b = 0; b < nb; b++)
        for (int off : { k.d_off, k.dmin_off }) {
            if (off < 0) continue;
            const double s = uniform() < 0.5 ? -1.0 : 1.0;
            const pyrt_fp16 h = pyrt_fp32_to_fp16((float)(s * exp2(lo + (hi - lo) * uniform())));
            memcpy(p + b * k.bytes + off, &h, 2);
        }
}

static pyrt_kq::chunk decode(int type, const uint8_t *blk, int c) {
    switch (type) {
    case PYRT_TYPE_Q2_K: return pyrt_kq::decode<PYRT_TYPE_Q2_K>(blk, c);
    case PYRT_TYPE_Q3_K: return pyrt_kq::decode<PYRT_TYPE_Q3_K>(blk, c);
    case PYRT_TYPE_Q4_K: return pyrt_kq::decode<PYRT_TYPE_Q4_K>(blk, c);
    case PYRT_TYPE_Q5_K: return pyrt_kq::decode<PYRT_TYPE_Q5_K>(blk, c);
    default:             return pyrt_kq::decode<PYRT_TYPE_Q6_K>(blk, c);
    }
}

static void test_dequant(const kinfo &k) {
    const int64_t nb = 64;
    std::vector<uint8_t> w((size_t)(nb * k.bytes));
    std::vector<float> ref((size_t)(nb * 256));
    bool ok = true, ok_rows = true;
    int64_t first_bad = -1;
    for (double hi : { -20.0, -6.0, 4.0, 15.0 }) {
        random_blocks(k, w.data(), nb, hi - 6.0, hi);
        if (pyrt_dequantize(PYRT_KERNELS_SCALAR, k.type, w.data(), ref.data(), nb * 256) != PYRT_OK) {
            check(false, "%s: pyrt_dequantize failed: %s", k.name, pyrt_last_error());
            return;
        }
        for (int64_t b = 0; b < nb; b++)
            for (int c = 0; c < 32; c++) {
                const pyrt_kq::chunk ch = decode(k.type, &w[(size_t)(b * k.bytes)], c);
                for (int i = 0; i < 8; i++) {
                    const float g = pyrt_kq::dequant(ch, i), r = ref[(size_t)(b * 256 + 8 * c + i)];
                    if (memcmp(&g, &r, 4) != 0) {
                        if (ok) first_bad = b * 256 + 8 * c + i;
                        ok = false;
                    }
                }
            }
        for (int64_t j = 0; j < nb * 256; j++) {
            const float g = pyrt_kq::dequant_row_elem(k.type, w.data(), j);
            ok_rows &= memcmp(&g, &ref[(size_t)j], 4) == 0;
        }
    }
    check(ok, "%s: chunk decode + dequant bit-exact vs kquants_ref (first mismatch at element %lld)", k.name,
          (long long)first_bad);
    check(ok_rows, "%s: dequant_row_elem bit-exact vs kquants_ref", k.name);
}

static float row_dot(int type, bool min, const uint8_t *w, const block_q8_1 *a, int64_t n) {
    /* as mmq_kernel: 32 lanes, lane = 4*i32 + quarter, one super-block per
     * step; each lane's partial sum in float, then the lanes summed */
    float lane_acc[32] = { 0 };
    for (int64_t sb = 0; sb < n / 256; sb++)
        for (int lane = 0; lane < 32; lane++) {
            const int i32 = lane >> 2, sub = lane & 3;
            const pyrt_kq::chunk ch = decode(type, w + sb * pyrt_type_block_bytes(type), lane);
            const block_q8_1 &ab = a[sb * 8 + i32];
            int a0, a1;
            memcpy(&a0, ab.qs + 8 * sub, 4);
            memcpy(&a1, ab.qs + 8 * sub + 4, 4);
            const float da = pyrt_fp16_to_fp32(ab.d);
            lane_acc[lane] += min ? pyrt_kq::dot<true>(ch, a0, a1, da) : pyrt_kq::dot<false>(ch, a0, a1, da);
        }
    float s = 0;
    for (float v : lane_acc) s += v;
    return s;
}

static void test_dot(const kinfo &k) {
    const bool min = k.dmin_off >= 0;
    const int64_t sizes[] = { 256, 512, 2304, 8192 };
    for (int64_t n : sizes) {
        const int64_t nb = n / 256;
        std::vector<uint8_t> w((size_t)(nb * k.bytes));
        std::vector<float> x((size_t)n), wf((size_t)n);
        std::vector<block_q8_1> a8((size_t)(n / 32));
        std::vector<uint8_t> aK((size_t)(nb * sizeof(block_q8_K)));
        double worst_same = 0, worst_cpu = 0;
        for (int rep = 0; rep < 20; rep++) {
            random_blocks(k, w.data(), nb, -10, -3);
            for (auto &v : x) v = (float)(gauss() * (rep % 3 == 0 ? 100.0 : 1.0));
            if (rep % 5 == 1) for (int64_t i = 0; i < 32 && i < n; i++) x[(size_t)(n / 2 + i) % n] = 0.0f;
            pyrt_dequantize(PYRT_KERNELS_SCALAR, k.type, w.data(), wf.data(), n);
            pyrt_quantize_act(PYRT_KERNELS_SCALAR, PYRT_TYPE_Q8_1, x.data(), a8.data(), n);
            const float got = row_dot(k.type, min, w.data(), a8.data(), n);
            double ref = 0, mag = 0, magx = 0;
            for (int64_t i = 0; i < n; i++) {
                const block_q8_1 &ab = a8[(size_t)(i / 32)];
                const double av = (double)pyrt_fp16_to_fp32(ab.d) * ab.qs[i % 32];
                ref += (double)wf[(size_t)i] * av;
                mag += fabs((double)wf[(size_t)i] * av);
                magx += fabs((double)wf[(size_t)i] * x[(size_t)i]);
            }
            const double e1 = fabs(got - ref) / (mag + 1e-30);
            if (!(e1 <= worst_same)) worst_same = e1;
            pyrt_quantize_act(PYRT_KERNELS_SCALAR, PYRT_TYPE_Q8_K, x.data(), aK.data(), n);
            float cpu = 0;
            pyrt_vec_dot(PYRT_KERNELS_SCALAR, k.type, n, w.data(), aK.data(), &cpu);
            const double e2 = fabs((double)got - cpu) / (magx + 1e-30);
            if (!(e2 <= worst_cpu)) worst_cpu = e2;
        }
        check(worst_same <= 1e-5, "%s n=%lld: dot vs float64 on the same q8 activations: %.3g", k.name,
              (long long)n, worst_same);
        check(worst_cpu <= 2e-2, "%s n=%lld: dot vs the CPU's Q8_K path: %.3g", k.name, (long long)n, worst_cpu);
    }
}

static void test_is_k() {
    bool ok = true;
    for (int t = 0; t < PYRT_TYPE_COUNT; t++) {
        const bool want = t == PYRT_TYPE_Q2_K || t == PYRT_TYPE_Q3_K || t == PYRT_TYPE_Q4_K ||
                          t == PYRT_TYPE_Q5_K || t == PYRT_TYPE_Q6_K;
        ok &= pyrt_kq::is_k(t) == want;
    }
    for (const kinfo &k : KTYPES) ok &= pyrt_type_block_bytes(k.type) == k.bytes && pyrt_type_block_size(k.type) == 256;
    check(ok, "is_k and block geometry agree with libpyrt");
}

int main() {
    seed(0x5EED);
    test_is_k();
    for (const kinfo &k : KTYPES) {
        test_dequant(k);
        test_dot(k);
    }
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
