/* threadpool.h — persistent workers running one SPMD job at a time.
 *
 * pool_run(fn) calls fn(arg, ith, nth) on every thread (the caller is ith 0)
 * and returns when all are done. Inside a job, pool_barrier() is a spinning
 * barrier (~0.1 us here, vs ~20 us for a sleeping one), so a whole forward pass
 * is one job with a barrier between dependent ops. Idle workers spin briefly,
 * then park on a condition variable. */
#ifndef PYRT_THREADPOOL_H
#define PYRT_THREADPOOL_H

#include <stdint.h>

typedef struct pyrt_pool pyrt_pool;
typedef void (*pyrt_job_fn)(void *arg, int ith, int nth);

pyrt_pool *pool_create(int n_threads);      /* NULL on failure */
void       pool_free(pyrt_pool *p);
int        pool_size(const pyrt_pool *p);
void       pool_run(pyrt_pool *p, pyrt_job_fn fn, void *arg);
void       pool_barrier(pyrt_pool *p);
int        pool_default_threads(void);      /* online CPUs, >= 1 */
/* A shared work counter for items claimed one at a time inside a job:
 * pool_claim() returns 0, 1, 2, ... across all threads (each value once).
 * pool_claim_reset() sets it back to 0; call it from one thread, between two
 * barriers that no claim crosses (e.g. before a barrier that precedes the
 * claims, after the barrier that ended the previous ones). */
void       pool_claim_reset(pyrt_pool *p);
int64_t    pool_claim(pyrt_pool *p);

/* Contiguous share [*lo, *hi) of n items for thread ith of nth. */
static inline void pool_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

#endif
