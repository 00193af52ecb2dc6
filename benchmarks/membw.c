/* Machine memory bandwidth, for benchmarks/bandwidth.py: read and copy rates of a buffer much
 * larger than the caches, split over T threads, each reading its own contiguous slice. A thread
 * reads its slice either as one sequential stream or as 8 streams 1/8 of the slice apart, 64
 * bytes from each in turn (what the GEMV kernels do with 8 rows far apart: on some hosts one
 * stream per core does not reach the memory's rate); the faster is the read rate.
 *
 *     cc -O3 -march=native -pthread benchmarks/membw.c -o membw && ./membw [MiB] [threads] [reps]
 *
 * Prints one JSON line: {"read_gbs": best read rate, "read1_gbs": one stream per thread,
 * "read8_gbs": 8 streams per thread, "copy_gbs": best memcpy rate (bytes read + bytes written
 * per second), "mib": ..., "threads": ...}. GB = 1e9 bytes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const uint64_t *src;
    uint64_t *dst;
    size_t n;            /* uint64 words in this thread's slice */
    int copy;            /* 0: read, 1: memcpy */
    int streams;         /* reads: 1 or 8 streams */
    uint64_t sum;
} job;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *work(void *p) {
    job *j = p;
    if (j->copy) {
        memcpy(j->dst, j->src, j->n * sizeof(uint64_t));
        return NULL;
    }
    /* eight independent accumulators: the compiler vectorizes this into wide loads */
    uint64_t a[8] = {0};
    if (j->streams == 8) {
        size_t part = j->n / 64 * 8;     /* words per stream, whole cache lines */
        for (size_t i = 0; i < part; i += 8)
            for (int s = 0; s < 8; s++)
                for (int k = 0; k < 8; k++) a[k] += j->src[s * part + i + k];
        for (size_t i = 8 * part; i < j->n; i++) a[0] += j->src[i];
    } else {
        size_t i = 0;
        for (; i + 8 <= j->n; i += 8)
            for (int k = 0; k < 8; k++) a[k] += j->src[i + k];
        for (; i < j->n; i++) a[0] += j->src[i];
    }
    for (int k = 1; k < 8; k++) a[0] += a[k];
    j->sum = a[0];
    return NULL;
}

static double run(const uint64_t *src, uint64_t *dst, size_t words, int nt, int copy, int streams, uint64_t *sink) {
    pthread_t th[64];
    job jobs[64];
    size_t per = words / nt;
    double t0 = now();
    for (int t = 0; t < nt; t++) {
        jobs[t] = (job){src + t * per, dst ? dst + t * per : NULL, t == nt - 1 ? words - t * per : per, copy, streams, 0};
        pthread_create(&th[t], NULL, work, &jobs[t]);
    }
    for (int t = 0; t < nt; t++) {
        pthread_join(th[t], NULL);
        *sink += jobs[t].sum;
    }
    return now() - t0;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 1024;
    int nt = argc > 2 ? atoi(argv[2]) : 2;
    int reps = argc > 3 ? atoi(argv[3]) : 10;
    if (mib < 64 || nt < 1 || nt > 64 || reps < 1) {
        fprintf(stderr, "usage: membw [MiB >= 64] [threads 1..64] [reps >= 1]\n");
        return 2;
    }
    size_t bytes = mib << 20, words = bytes / sizeof(uint64_t);
    uint64_t *src = aligned_alloc(64, bytes), *dst = aligned_alloc(64, bytes);
    if (!src || !dst) {
        fprintf(stderr, "membw: cannot allocate 2 x %zu MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < words; i++) src[i] = i * 0x9E3779B97F4A7C15ull;
    memset(dst, 1, bytes);
    uint64_t sink = 0;
    double best_r1 = 1e30, best_r8 = 1e30, best_c = 1e30;
    for (int r = 0; r < reps; r++) {           /* alternate, so load changes hit all three */
        double t1 = run(src, NULL, words, nt, 0, 1, &sink);
        double t8 = run(src, NULL, words, nt, 0, 8, &sink);
        double tc = run(src, dst, words, nt, 1, 1, &sink);
        if (t1 < best_r1) best_r1 = t1;
        if (t8 < best_r8) best_r8 = t8;
        if (tc < best_c) best_c = tc;
    }
    double r1 = bytes / best_r1 / 1e9, r8 = bytes / best_r8 / 1e9;
    printf("{\"read_gbs\": %.2f, \"read1_gbs\": %.2f, \"read8_gbs\": %.2f, \"copy_gbs\": %.2f, "
           "\"mib\": %zu, \"threads\": %d, \"sink\": %llu}\n",
           r1 > r8 ? r1 : r8, r1, r8, 2.0 * bytes / best_c / 1e9, mib, nt, (unsigned long long)(sink & 1));
    free(src);
    free(dst);
    return 0;
}
