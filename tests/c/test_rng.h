/* test_rng.h — the deterministic random numbers of the C++/CUDA test
 * programs (splitmix64, as tests/c/test_kernels.c): same seed, same data. */
#ifndef PYRT_TEST_RNG_H
#define PYRT_TEST_RNG_H

#include <math.h>
#include <stdint.h>

static uint64_t g_rng;
static inline void seed(uint64_t s) { g_rng = s * 0x9E3779B97F4A7C15ULL + 12345; }
static inline uint64_t next_u64() {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline double uniform() { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static inline double gauss() {
    const double u = uniform() + 1e-300, v = uniform();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

#endif
