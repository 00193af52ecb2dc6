/* core/threadpool.c — see threadpool.h.
 *
 * Waiting is spin-then-sleep everywhere: a spinning barrier costs ~0.1 us when
 * both threads are on a core, but when the machine is oversubscribed the
 * thread being waited for may not be running at all, and spinning (or
 * sched_yield) would burn its time slice — measured: 2-thread generation fell
 * from ~100 to 4 tokens/s under a load of 8. So after a short spin, waiters
 * sleep on a futex (Linux) and the last arrival wakes them. */
#define _GNU_SOURCE
#include "threadpool.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
static void futex_wait(_Atomic int *addr, int expected) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}
static void futex_wake_all(_Atomic int *addr) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
#else
static void futex_wait(_Atomic int *addr, int expected) { (void)addr; (void)expected; sched_yield(); }
static void futex_wake_all(_Atomic int *addr) { (void)addr; }
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define SPIN_BARRIER 4000        /* pause iterations before sleeping in a barrier (~20-100 us) */
#define SPIN_IDLE    100000      /* before an idle worker sleeps (~1-5 ms)      */

struct pyrt_pool {
    int n;
    pthread_t *threads;
    _Atomic int generation;      /* bumped per job; workers sleep on it */
    _Atomic int idle_sleepers;
    _Atomic int quit;
    pyrt_job_fn fn;
    void *arg;
    _Atomic int bar_count;
    _Atomic int bar_phase;       /* bumped per completed barrier; waiters sleep on it */
    _Atomic int bar_sleepers;
    char pad_[64];               /* pool_claim's counter away from the barrier's words */
    _Atomic int64_t claim;
};

typedef struct { pyrt_pool *p; int ith; } worker_arg;

static void *worker_main(void *varg) {
    worker_arg wa = *(worker_arg *)varg;
    free(varg);
    pyrt_pool *p = wa.p;
    int seen = 0;
    for (;;) {
        int g, spins = 0;
        while ((g = atomic_load(&p->generation)) == seen) {
            if (atomic_load(&p->quit)) return NULL;
            if (++spins < SPIN_IDLE) { cpu_relax(); continue; }
            atomic_fetch_add(&p->idle_sleepers, 1);
            if (atomic_load(&p->generation) == seen && !atomic_load(&p->quit))
                futex_wait(&p->generation, seen);
            atomic_fetch_sub(&p->idle_sleepers, 1);
            spins = 0;
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = g;
        p->fn(p->arg, wa.ith, p->n);
        pool_barrier(p);          /* the job is over for everyone */
    }
}

int pool_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

#define WORKER_STACK (2u << 20)

pyrt_pool *pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    pyrt_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) { free(p); return NULL; }
    /* workers get a stack of a known size, not the platform's default (musl: 128 KiB);
     * the kernels' big buffers are heap scratch (pyrt_thread_scratch), their frames small */
    pthread_attr_t attr;
    const int have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr) pthread_attr_setstacksize(&attr, WORKER_STACK);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) { wa->p = p; wa->ith = i; }
        if (!wa || pthread_create(&p->threads[i], have_attr ? &attr : NULL, worker_main, wa) != 0) {
            free(wa); p->n = i; pool_free(p);
            if (have_attr) pthread_attr_destroy(&attr);
            return NULL;
        }
    }
    if (have_attr) pthread_attr_destroy(&attr);
    return p;
}

void pool_free(pyrt_pool *p) {
    if (!p) return;
    atomic_store(&p->quit, 1);
    atomic_fetch_add(&p->generation, 1);
    futex_wake_all(&p->generation);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p);
}

int pool_size(const pyrt_pool *p) { return p->n; }

void pool_run(pyrt_pool *p, pyrt_job_fn fn, void *arg) {
    if (p->n == 1) { fn(arg, 0, 1); return; }
    p->fn = fn;
    p->arg = arg;
    atomic_fetch_add(&p->generation, 1);            /* seq_cst: pairs with idle_sleepers */
    if (atomic_load(&p->idle_sleepers) > 0) futex_wake_all(&p->generation);
    fn(arg, 0, p->n);
    pool_barrier(p);
}

void pool_claim_reset(pyrt_pool *p) { atomic_store_explicit(&p->claim, 0, memory_order_relaxed); }
int64_t pool_claim(pyrt_pool *p) { return atomic_fetch_add_explicit(&p->claim, 1, memory_order_relaxed); }

void pool_barrier(pyrt_pool *p) {
    if (p->n == 1) return;
    const int phase = atomic_load(&p->bar_phase);
    if (atomic_fetch_add(&p->bar_count, 1) == p->n - 1) {
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add(&p->bar_phase, 1);         /* seq_cst: pairs with bar_sleepers */
        if (atomic_load(&p->bar_sleepers) > 0) futex_wake_all(&p->bar_phase);
        return;
    }
    for (int i = 0; i < SPIN_BARRIER; i++) {
        if (atomic_load_explicit(&p->bar_phase, memory_order_acquire) != phase) return;
        cpu_relax();
    }
    atomic_fetch_add(&p->bar_sleepers, 1);
    while (atomic_load(&p->bar_phase) == phase) futex_wait(&p->bar_phase, phase);
    atomic_fetch_sub(&p->bar_sleepers, 1);
}

/* ---- per-thread kernel scratch (kernels.h) ---- */

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static int g_scratch_ok;

static void scratch_key_init(void) { g_scratch_ok = pthread_key_create(&g_scratch_key, free) == 0; }

/* A block of SCRATCH_HEAD bytes holding its size, then the buffer */
#define SCRATCH_HEAD 64

void *pyrt_thread_scratch(size_t bytes) {
    pthread_once(&g_scratch_once, scratch_key_init);
    if (!g_scratch_ok || bytes > SIZE_MAX - SCRATCH_HEAD) return NULL;
    char *old = pthread_getspecific(g_scratch_key);
    if (old && *(const size_t *)old >= bytes) return old + SCRATCH_HEAD;
    void *m = NULL;
    if (posix_memalign(&m, 64, bytes + SCRATCH_HEAD) != 0) return NULL;
    *(size_t *)m = bytes;
    if (pthread_setspecific(g_scratch_key, m) != 0) {
        free(m);
        return NULL;
    }
    free(old);
    return (char *)m + SCRATCH_HEAD;
}
