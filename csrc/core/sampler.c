/* core/sampler.c — token sampling: logit bias, penalties, DRY, top-k, typical,
 * top-p, min-p, XTC, temperature, Mirostat (v1, v2), seeded draw.
 *
 * The chain and each step's rule follow llama.cpp's sampler chain as
 * llama-cpp-python and llama.cpp's common sampler build it (min_keep = 1):
 *
 *   bias (additive) -> penalties -> DRY -> temperature <= 0 ? argmax
 *     : top-k -> typical -> top-p -> min-p -> XTC -> temperature -> softmax -> draw
 *   with mirostat 1/2: bias -> penalties -> temperature -> Mirostat (its own
 *     truncation, draw and mu update; no DRY, top-k..min-p or XTC, as llama.cpp)
 *
 * DRY ("don't repeat yourself") penalises a token that would extend a
 * repetition of the recent history longer than dry_allowed_length by
 * dry_multiplier * dry_base^(length - allowed); sequence breakers (token
 * sequences, from strings such as "\n" in pyrt/sampling.py) end the
 * repetition window. XTC ("exclude top choices"), with probability
 * xtc_probability per sample, removes every candidate whose probability is
 * >= xtc_threshold except the least likely of them.
 *
 * Differences from llama.cpp, on purpose:
 *   - Our own RNG (xoshiro256**, seeded through splitmix64) and a 53-bit uniform
 *     double per draw; exactly one draw per non-greedy sample (plus one for
 *     XTC's coin when XTC is on), none for greedy.
 *   - Candidate order is a total order: logit descending, then token id
 *     ascending, so ties never depend on the sort algorithm.
 *   - NaN logits count as -inf, +inf as FLT_MAX; -inf candidates are dropped
 *     before the filters (they have probability 0 anyway). All -inf is an error.
 *   - penalty_last_n == -1 means the whole history, capped (like any window)
 *     at PYRT_SAMPLER_MAX_HISTORY tokens.
 *
 * Buffers are allocated once per sampler (n_vocab entries each); sampling
 * does no allocation.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define PYRT_SAMPLER_MAX_HISTORY 65536
/* top-k up to this size is selected with a k-heap in one pass over the logits;
 * larger k, and top-p over an unsorted set, use a histogram cut (hist_cut) */
#define HEAP_TOPK_MAX 512

typedef struct {
    float   logit;
    int32_t id;
    float   p;
} cand_t;

struct pyrt_sampler {
    pyrt_sampler_params p;
    int32_t n_vocab;

    float  *work;          /* [n_vocab] logits after sanitising, bias, penalties */
    cand_t *cand;          /* [n_vocab] current candidates (size n_cand)          */
    cand_t *tmp;           /* [n_vocab] scratch (typical's reorder)               */

    /* penalties: ring of the last hist_cap accepted tokens, per-token counts
     * within the ring, and the list of distinct tokens in it (so applying the
     * penalties costs O(distinct), not O(n_vocab)). hist_cap == 0: disabled. */
    int32_t  hist_cap;
    int32_t *ring;         /* [hist_cap]                     */
    int32_t  ring_head;    /* index of the oldest entry      */
    int32_t  ring_len;
    int32_t *count;        /* [n_vocab]                      */
    int32_t *distinct;     /* [min(hist_cap, n_vocab)]        */
    int32_t *dpos;         /* [n_vocab] index into distinct  */
    int32_t  n_distinct;

    /* logit bias, sparse */
    int32_t  n_bias;
    int32_t *bias_id;      /* [n_bias] */
    float   *bias_val;     /* [n_bias] */

    uint64_t rng[4];       /* xoshiro256** state */

    /* Mirostat */
    float    mu;

    /* DRY: ring of the last dry_cap accepted tokens (dry_cap == 0: off) */
    int32_t  dry_cap;
    int32_t *dry_ring;     /* [dry_cap]                                   */
    int32_t  dry_head, dry_len;
    int32_t *dry_repeat;   /* [dry_cap] repeat length ending at each position */
    int32_t *dry_max;      /* [n_vocab] longest repeat each token would extend (0: none) */
    int32_t *dry_touched;  /* [dry_cap] tokens with dry_max > 0              */
    /* sequence breakers, grouped by head token: entries brk_first[tok] ..
     * brk_first[tok] + brk_count[tok] - 1 of brk_off/brk_len (tails in brk_toks) */
    int32_t *brk_first;    /* [n_vocab], -1: no breaker starts with the token */
    int32_t *brk_count;    /* [n_vocab]                                   */
    int32_t *brk_off;      /* [n_brk]                                     */
    int32_t *brk_len;      /* [n_brk] tail length (0: single-token breaker) */
    int32_t *brk_toks;     /* tails, concatenated                         */
    int32_t  n_brk;
};

#define DRY_MAX_TAIL 32
#define MIROSTAT_M 100

/* ---- rng ------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rng_seed(uint64_t s[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&x);
    /* splitmix64 never yields four zeros from one seed, but be explicit */
    if ((s[0] | s[1] | s[2] | s[3]) == 0) s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* uniform in [0, 1) with 53 random bits */
static double rng_uniform(uint64_t s[4]) {
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* ---- candidate ordering and sorting ---------------------------------------- */

/* a comes before b: higher logit first, then lower id. Candidates never hold
 * NaN, and ids are unique, so this is a strict total order. */
static inline int before(const cand_t *a, const cand_t *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static inline void cswap(cand_t *a, cand_t *b) { cand_t t = *a; *a = *b; *b = t; }

static void insertion_sort(cand_t *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        cand_t x = a[i];
        size_t j = i;
        while (j > 0 && before(&x, &a[j - 1])) { a[j] = a[j - 1]; j--; }
        a[j] = x;
    }
}

/* heap whose root is the *last* element in `before` order */
static void sift_down_last(cand_t *a, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && before(&a[m], &a[l])) m = l;
        if (l + 1 < n && before(&a[m], &a[l + 1])) m = l + 1;
        if (m == i) return;
        cswap(&a[i], &a[m]);
        i = m;
    }
}

static void heap_sort(cand_t *a, size_t n) {
    if (n < 2) return;
    for (size_t i = n / 2; i-- > 0;) sift_down_last(a, n, i);
    for (size_t end = n - 1; end > 0; end--) {
        cswap(&a[0], &a[end]);
        sift_down_last(a, end, 0);
    }
}

/* Lomuto partition around a median-of-three pivot; returns the pivot's final
 * index: a[0..r) come before it, a(r..n) after. n >= 3. */
static size_t partition(cand_t *a, size_t n) {
    size_t mid = n / 2, last = n - 1;
    if (before(&a[mid], &a[0])) cswap(&a[mid], &a[0]);
    if (before(&a[last], &a[0])) cswap(&a[last], &a[0]);
    if (before(&a[last], &a[mid])) cswap(&a[last], &a[mid]);
    cswap(&a[mid], &a[last]);          /* pivot (the median) to the end */
    const cand_t piv = a[last];
    size_t store = 0;
    for (size_t i = 0; i < last; i++)
        if (before(&a[i], &piv)) cswap(&a[i], &a[store++]);
    cswap(&a[store], &a[last]);
    return store;
}

static int depth_limit(size_t n) {
    int d = 0;
    while (n > 1) { n >>= 1; d++; }
    return 2 * d + 2;
}

static void intro_sort_rec(cand_t *a, size_t n, int depth) {
    while (n > 16) {
        if (depth-- == 0) { heap_sort(a, n); return; }
        size_t r = partition(a, n);
        /* recurse into the smaller side, loop on the larger */
        if (r < n - r - 1) {
            intro_sort_rec(a, r, depth);
            a += r + 1; n -= r + 1;
        } else {
            intro_sort_rec(a + r + 1, n - r - 1, depth);
            n = r;
        }
    }
    insertion_sort(a, n);
}

static void cand_sort(cand_t *a, size_t n) { intro_sort_rec(a, n, depth_limit(n)); }

/* ---- helpers --------------------------------------------------------------- */

/* NaN -> -inf, +inf -> FLT_MAX; by bit pattern so that -ffast-math cannot
 * optimise the check away */
static inline float sanitize(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    if ((b & 0x7fffffffu) > 0x7f800000u) return -INFINITY;
    if (b == 0x7f800000u) return FLT_MAX;
    return v;
}

static inline float clamp_finite_or_neg_inf(float v) {
    if (v > FLT_MAX) return FLT_MAX;
    if (v != v) return -INFINITY;
    return v;
}

static int check_float(float v, const char *name, int allow_inf) {
    if (v != v || (!allow_inf && (v == INFINITY || v == -INFINITY)))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler: %s must be a finite number (got %g)", name, (double)v);
    return PYRT_OK;
}

static int validate_params(const pyrt_sampler_params *p) {
    int st;
    if ((st = check_float(p->temperature, "temperature", 0))) return st;
    if ((st = check_float(p->top_p, "top_p", 0))) return st;
    if ((st = check_float(p->min_p, "min_p", 0))) return st;
    if ((st = check_float(p->typical_p, "typical_p", 0))) return st;
    if ((st = check_float(p->repeat_penalty, "repeat_penalty", 0))) return st;
    if ((st = check_float(p->frequency_penalty, "frequency_penalty", 0))) return st;
    if ((st = check_float(p->presence_penalty, "presence_penalty", 0))) return st;
    if (!(p->repeat_penalty > 0.0f))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler: repeat_penalty must be > 0 (got %g)",
                              (double)p->repeat_penalty);
    if (p->penalty_last_n < -1)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler: penalty_last_n must be >= -1 (got %d)",
                              (int)p->penalty_last_n);
    if (p->mirostat < 0 || p->mirostat > 2)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler: mirostat must be 0, 1 or 2 (got %d)", (int)p->mirostat);
    if ((st = check_float(p->mirostat_tau, "mirostat_tau", 0))) return st;
    if ((st = check_float(p->mirostat_eta, "mirostat_eta", 0))) return st;
    if ((st = check_float(p->dry_multiplier, "dry_multiplier", 0))) return st;
    if ((st = check_float(p->dry_base, "dry_base", 0))) return st;
    if ((st = check_float(p->xtc_probability, "xtc_probability", 0))) return st;
    if ((st = check_float(p->xtc_threshold, "xtc_threshold", 0))) return st;
    if (p->dry_allowed_length < 0 || p->dry_penalty_last_n < -1)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler: dry_allowed_length must be >= 0 and "
                              "dry_penalty_last_n >= -1 (got %d, %d)", (int)p->dry_allowed_length,
                              (int)p->dry_penalty_last_n);
    return PYRT_OK;
}

static int dry_enabled(const pyrt_sampler_params *p) {
    return p->dry_multiplier != 0.0f && p->dry_base >= 1.0f && p->dry_penalty_last_n != 0;
}

static int penalties_enabled(const pyrt_sampler_params *p) {
    return p->penalty_last_n != 0 &&
           !(p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f);
}

static void history_clear(pyrt_sampler *s) {
    if (s->hist_cap == 0) return;
    for (int32_t i = 0; i < s->n_distinct; i++) s->count[s->distinct[i]] = 0;
    s->n_distinct = 0;
    s->ring_head = 0;
    s->ring_len = 0;
}

/* ---- lifecycle ------------------------------------------------------------- */

void pyrt_sampler_free(pyrt_sampler *s) {
    if (!s) return;
    free(s->work);
    free(s->cand);
    free(s->tmp);
    free(s->ring);
    free(s->count);
    free(s->distinct);
    free(s->dpos);
    free(s->bias_id);
    free(s->bias_val);
    free(s->dry_ring);
    free(s->dry_repeat);
    free(s->dry_max);
    free(s->dry_touched);
    free(s->brk_first);
    free(s->brk_count);
    free(s->brk_off);
    free(s->brk_len);
    free(s->brk_toks);
    free(s);
}

int pyrt_sampler_create(const pyrt_sampler_params *p, int32_t n_vocab, pyrt_sampler **out) {
    if (!out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_create: out is NULL");
    *out = NULL;
    if (!p) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_create: params is NULL");
    if (n_vocab < 1)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_create: n_vocab must be >= 1 (got %d)", (int)n_vocab);
    int st = validate_params(p);
    if (st) return st;

    pyrt_sampler *s = calloc(1, sizeof *s);
    if (!s) return pyrt_set_error(PYRT_ERR_OOM, "sampler_create: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t n = (size_t)n_vocab;
    s->work = malloc(n * sizeof *s->work);
    s->cand = malloc(n * sizeof *s->cand);
    s->tmp = malloc(n * sizeof *s->tmp);
    int ok = s->work && s->cand && s->tmp;

    if (ok && penalties_enabled(p)) {
        int32_t cap = p->penalty_last_n < 0 ? PYRT_SAMPLER_MAX_HISTORY : p->penalty_last_n;
        if (cap > PYRT_SAMPLER_MAX_HISTORY) cap = PYRT_SAMPLER_MAX_HISTORY;
        s->hist_cap = cap;
        int32_t nd = cap < n_vocab ? cap : n_vocab;
        s->ring = malloc((size_t)cap * sizeof *s->ring);
        s->count = calloc(n, sizeof *s->count);
        s->distinct = malloc((size_t)nd * sizeof *s->distinct);
        s->dpos = malloc(n * sizeof *s->dpos);
        ok = s->ring && s->count && s->distinct && s->dpos;
    }
    if (ok && dry_enabled(p)) {
        int32_t cap = p->dry_penalty_last_n < 0 ? PYRT_SAMPLER_MAX_HISTORY : p->dry_penalty_last_n;
        if (cap > PYRT_SAMPLER_MAX_HISTORY) cap = PYRT_SAMPLER_MAX_HISTORY;
        s->dry_cap = cap;
        s->dry_ring = malloc((size_t)cap * sizeof *s->dry_ring);
        s->dry_repeat = malloc((size_t)cap * sizeof *s->dry_repeat);
        s->dry_touched = malloc((size_t)cap * sizeof *s->dry_touched);
        s->dry_max = calloc(n, sizeof *s->dry_max);
        s->brk_first = malloc(n * sizeof *s->brk_first);
        s->brk_count = calloc(n, sizeof *s->brk_count);
        ok = s->dry_ring && s->dry_repeat && s->dry_touched && s->dry_max && s->brk_first && s->brk_count;
        if (ok) for (size_t i = 0; i < n; i++) s->brk_first[i] = -1;
    }
    if (!ok) {
        pyrt_sampler_free(s);
        return pyrt_set_error(PYRT_ERR_OOM, "sampler_create: out of memory (n_vocab=%d)", (int)n_vocab);
    }
    rng_seed(s->rng, p->seed);
    s->mu = 2.0f * p->mirostat_tau;
    *out = s;
    return PYRT_OK;
}

int pyrt_sampler_reset(pyrt_sampler *s, uint64_t seed) {
    if (!s) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_reset: sampler is NULL");
    history_clear(s);
    s->dry_head = s->dry_len = 0;
    s->mu = 2.0f * s->p.mirostat_tau;
    s->p.seed = seed;
    rng_seed(s->rng, seed);
    return PYRT_OK;
}

int pyrt_sampler_accept(pyrt_sampler *s, int32_t token) {
    if (!s) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_accept: sampler is NULL");
    if (token < 0 || token >= s->n_vocab)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_accept: token %d out of range [0, %d)",
                              (int)token, (int)s->n_vocab);
    if (s->dry_cap > 0) {
        if (s->dry_len == s->dry_cap) {
            s->dry_ring[s->dry_head] = token;
            s->dry_head = (s->dry_head + 1) % s->dry_cap;
        } else {
            s->dry_ring[(s->dry_head + s->dry_len) % s->dry_cap] = token;
            s->dry_len++;
        }
    }
    if (s->hist_cap == 0) return PYRT_OK;

    if (s->ring_len == s->hist_cap) {            /* evict the oldest */
        int32_t old = s->ring[s->ring_head];
        if (--s->count[old] == 0) {              /* swap-remove from distinct */
            int32_t i = s->dpos[old], last = s->distinct[--s->n_distinct];
            s->distinct[i] = last;
            s->dpos[last] = i;
        }
        s->ring[s->ring_head] = token;
        s->ring_head = (s->ring_head + 1) % s->hist_cap;
    } else {
        s->ring[(s->ring_head + s->ring_len) % s->hist_cap] = token;
        s->ring_len++;
    }
    if (s->count[token]++ == 0) {
        s->dpos[token] = s->n_distinct;
        s->distinct[s->n_distinct++] = token;
    }
    return PYRT_OK;
}

int pyrt_sampler_set_bias(pyrt_sampler *s, const int32_t *ids, const float *bias, int32_t n) {
    if (!s) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_bias: sampler is NULL");
    if (n < 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_bias: n must be >= 0 (got %d)", (int)n);
    if (n > 0 && (!ids || !bias))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_bias: ids/bias is NULL");
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= s->n_vocab)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_bias: token %d out of range [0, %d)",
                                  (int)ids[i], (int)s->n_vocab);
        /* -inf bans a token; NaN and +inf have no meaning */
        if (bias[i] != bias[i] || bias[i] == INFINITY)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_bias: bias for token %d is %g",
                                  (int)ids[i], (double)bias[i]);
    }
    int32_t *nid = NULL;
    float *nval = NULL;
    if (n > 0) {
        nid = malloc((size_t)n * sizeof *nid);
        nval = malloc((size_t)n * sizeof *nval);
        if (!nid || !nval) {
            free(nid);
            free(nval);
            return pyrt_set_error(PYRT_ERR_OOM, "sampler_set_bias: out of memory");
        }
        memcpy(nid, ids, (size_t)n * sizeof *nid);
        memcpy(nval, bias, (size_t)n * sizeof *nval);
    }
    free(s->bias_id);
    free(s->bias_val);
    s->bias_id = nid;
    s->bias_val = nval;
    s->n_bias = n;
    return PYRT_OK;
}

int pyrt_sampler_set_dry_breakers(pyrt_sampler *s, const int32_t *toks, const int32_t *lens, int32_t n) {
    if (!s) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_dry_breakers: sampler is NULL");
    if (n < 0 || (n > 0 && (!toks || !lens)))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_dry_breakers: bad arrays (n=%d)", (int)n);
    if (s->dry_cap == 0) return PYRT_OK;          /* DRY off: nothing to break */
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (lens[i] < 1 || lens[i] > 1 + DRY_MAX_TAIL)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_dry_breakers: sequence %d has %d tokens "
                                  "(1..%d)", (int)i, (int)lens[i], 1 + DRY_MAX_TAIL);
        total += lens[i];
    }
    for (int64_t i = 0; i < total; i++)
        if (toks[i] < 0 || toks[i] >= s->n_vocab)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_set_dry_breakers: token %d out of range [0, %d)",
                                  (int)toks[i], (int)s->n_vocab);
    int32_t *off = malloc(((size_t)n + 1) * sizeof *off);
    int32_t *len = malloc(((size_t)n + 1) * sizeof *len);
    int32_t *tt = malloc(((size_t)total + 1) * sizeof *tt);
    int32_t *start = malloc(((size_t)n + 1) * sizeof *start);
    if (!off || !len || !tt || !start) {
        free(off); free(len); free(tt); free(start);
        return pyrt_set_error(PYRT_ERR_OOM, "sampler_set_dry_breakers: out of memory");
    }
    /* group the entries by head token (counting sort over the heads) */
    for (int32_t i = 0; i < s->n_vocab; i++) { s->brk_first[i] = -1; s->brk_count[i] = 0; }
    int64_t pos = 0;
    for (int32_t i = 0; i < n; i++) { start[i] = (int32_t)pos; s->brk_count[toks[pos]]++; pos += lens[i]; }
    int32_t next = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t h = toks[start[i]];
        if (s->brk_first[h] < 0) { s->brk_first[h] = next; next += s->brk_count[h]; s->brk_count[h] = 0; }
    }
    int32_t tpos = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t h = toks[start[i]];
        int32_t e = s->brk_first[h] + s->brk_count[h]++;
        off[e] = tpos;
        len[e] = lens[i] - 1;
        for (int32_t j = 1; j < lens[i]; j++) tt[tpos++] = toks[start[i] + j];
    }
    free(start);
    free(s->brk_off); free(s->brk_len); free(s->brk_toks);
    s->brk_off = off;
    s->brk_len = len;
    s->brk_toks = tt;
    s->n_brk = n;
    return PYRT_OK;
}

float pyrt_sampler_mirostat_mu(const pyrt_sampler *s) {
    if (!s || s->p.mirostat == 0) return NAN;
    return s->mu;
}

/* ---- vector helpers (SSE2 is baseline on x86-64; scalar elsewhere) ------------ */

#if defined(__SSE2__)
#include <emmintrin.h>
#define SAMPLER_SSE2 1
#endif

/* dst = sanitize(src), n floats */
static void sanitize_copy(float *dst, const float *src, size_t n) {
    size_t i = 0;
#ifdef SAMPLER_SSE2
    const __m128i absm = _mm_set1_epi32(0x7fffffff), pinf = _mm_set1_epi32(0x7f800000);
    const __m128i ninf = _mm_set1_epi32((int32_t)0xff800000u), fmax = _mm_set1_epi32(0x7f7fffff);
    for (; i + 4 <= n; i += 4) {
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i isnan = _mm_cmpgt_epi32(_mm_and_si128(b, absm), pinf);
        __m128i isinf = _mm_cmpeq_epi32(b, pinf);
        b = _mm_or_si128(_mm_andnot_si128(isnan, b), _mm_and_si128(isnan, ninf));
        b = _mm_or_si128(_mm_andnot_si128(isinf, b), _mm_and_si128(isinf, fmax));
        _mm_storeu_si128((__m128i *)(dst + i), b);
    }
#endif
    for (; i < n; i++) dst[i] = sanitize(src[i]);
}

static float vec_max(const float *w, size_t n);

/* index of the largest value, lowest index on ties; w has no NaN */
static size_t argmax(const float *w, size_t n) {
    const float mx = vec_max(w, n);
    size_t i = 0;
#ifdef SAMPLER_SSE2
    const __m128 vmx = _mm_set1_ps(mx);
    for (; i + 8 <= n; i += 8) {
        int mask = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(w + i), vmx)) |
                   (_mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(w + i + 4), vmx)) << 4);
        if (mask) return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#endif
    for (; i < n; i++)
        if (w[i] == mx) break;
    return i;
}

#ifdef SAMPLER_SSE2
/* exp(x) for x <= 0 (Cephes' expf polynomial, ~2 ulp); 0 below -87.3 */
static inline __m128 exp4_nonpos(__m128 x) {
    const __m128 lo = _mm_set1_ps(-87.3f);
    const __m128 under = _mm_cmplt_ps(x, lo);
    x = _mm_max_ps(x, lo);
    __m128 fx = _mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269504088896341f)), _mm_set1_ps(0.5f));
    __m128 t = _mm_cvtepi32_ps(_mm_cvttps_epi32(fx));            /* floor (fx may be < 0) */
    fx = _mm_sub_ps(t, _mm_and_ps(_mm_cmpgt_ps(t, fx), _mm_set1_ps(1.0f)));
    x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(0.693359375f)));
    x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(-2.12194440e-4f)));
    __m128 y = _mm_set1_ps(1.9875691500e-4f);
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.3981999507e-3f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(8.3334519073e-3f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(4.1665795894e-2f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.6666665459e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(5.0000001201e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, _mm_mul_ps(x, x)), _mm_add_ps(x, _mm_set1_ps(1.0f)));
    __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(fx), _mm_set1_epi32(127)), 23);
    y = _mm_mul_ps(y, _mm_castsi128_ps(e));
    return _mm_andnot_ps(under, y);
}
#endif

/* c[i].p = exp((c[i].logit - mx) * scale) for i < m (mx >= every logit,
 * scale > 0 finite); returns the sum, in double. If bsum is not NULL it
 * receives the sum of each block of EXP_BLOCK candidates (for the draw). */
#define EXP_BLOCK 64
static double exp_shifted(cand_t *c, size_t m, float mx, float scale, double *bsum) {
    double sum = 0.0;
    size_t i = 0;
#ifdef SAMPLER_SSE2
    const __m128 vmx = _mm_set1_ps(mx), vsc = _mm_set1_ps(scale);
    for (size_t blk = 0; i + EXP_BLOCK <= m; blk++) {
        __m128d acc = _mm_setzero_pd();
        for (size_t end = i + EXP_BLOCK; i < end; i += 4) {
            __m128 x = _mm_setr_ps(c[i].logit, c[i + 1].logit, c[i + 2].logit, c[i + 3].logit);
            __m128 e = exp4_nonpos(_mm_mul_ps(_mm_sub_ps(x, vmx), vsc));
            float f[4];
            _mm_storeu_ps(f, e);
            c[i].p = f[0]; c[i + 1].p = f[1]; c[i + 2].p = f[2]; c[i + 3].p = f[3];
            acc = _mm_add_pd(acc, _mm_add_pd(_mm_cvtps_pd(e), _mm_cvtps_pd(_mm_movehl_ps(e, e))));
        }
        double a2[2];
        _mm_storeu_pd(a2, acc);
        const double bs = a2[0] + a2[1];
        if (bsum) bsum[blk] = bs;
        sum += bs;
    }
    double tail = 0.0;
    for (; i < m; i++) {
        float f[4];
        _mm_storeu_ps(f, exp4_nonpos(_mm_set1_ps((c[i].logit - mx) * scale)));
        c[i].p = f[0];
        tail += f[0];
    }
#else
    size_t blk = 0;
    for (; i + EXP_BLOCK <= m; blk++) {
        double bs = 0.0;
        for (size_t end = i + EXP_BLOCK; i < end; i++) { c[i].p = expf((c[i].logit - mx) * scale); bs += c[i].p; }
        if (bsum) bsum[blk] = bs;
        sum += bs;
    }
    double tail = 0.0;
    for (; i < m; i++) { c[i].p = expf((c[i].logit - mx) * scale); tail += c[i].p; }
#endif
    if (bsum && m % EXP_BLOCK) bsum[m / EXP_BLOCK] = tail;
    return sum + tail;
}

static float vec_max(const float *w, size_t n) {
    float mx = -INFINITY;
    size_t i = 0;
#ifdef SAMPLER_SSE2
    if (n >= 8) {
        __m128 m0 = _mm_loadu_ps(w), m1 = _mm_loadu_ps(w + 4);
        for (i = 8; i + 8 <= n; i += 8) {
            m0 = _mm_max_ps(m0, _mm_loadu_ps(w + i));
            m1 = _mm_max_ps(m1, _mm_loadu_ps(w + i + 4));
        }
        m0 = _mm_max_ps(m0, m1);
        m0 = _mm_max_ps(m0, _mm_shuffle_ps(m0, m0, _MM_SHUFFLE(1, 0, 3, 2)));
        m0 = _mm_max_ps(m0, _mm_shuffle_ps(m0, m0, _MM_SHUFFLE(2, 3, 0, 1)));
        mx = _mm_cvtss_f32(m0);
    }
#endif
    for (; i < n; i++) mx = w[i] > mx ? w[i] : mx;
    return mx;
}

static float cand_max(const cand_t *c, size_t m) {
    float m0 = c[0].logit, m1 = m0, m2 = m0, m3 = m0;   /* 4 chains: no latency-bound loop */
    size_t i = 1;
    for (; i + 4 <= m; i += 4) {
        m0 = c[i].logit > m0 ? c[i].logit : m0;
        m1 = c[i + 1].logit > m1 ? c[i + 1].logit : m1;
        m2 = c[i + 2].logit > m2 ? c[i + 2].logit : m2;
        m3 = c[i + 3].logit > m3 ? c[i + 3].logit : m3;
    }
    for (; i < m; i++) m0 = c[i].logit > m0 ? c[i].logit : m0;
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    return m2 > m0 ? m2 : m0;
}

static float cand_min(const cand_t *c, size_t m) {
    float m0 = c[0].logit, m1 = m0, m2 = m0, m3 = m0;
    size_t i = 1;
    for (; i + 4 <= m; i += 4) {
        m0 = c[i].logit < m0 ? c[i].logit : m0;
        m1 = c[i + 1].logit < m1 ? c[i + 1].logit : m1;
        m2 = c[i + 2].logit < m2 ? c[i + 2].logit : m2;
        m3 = c[i + 3].logit < m3 ? c[i + 3].logit : m3;
    }
    for (; i < m; i++) m0 = c[i].logit < m0 ? c[i].logit : m0;
    m0 = m1 < m0 ? m1 : m0;
    m2 = m3 < m2 ? m3 : m2;
    return m2 < m0 ? m2 : m0;
}

/* ---- the chain --------------------------------------------------------------- */

/* work[] = sanitised logits + bias, penalised (llama.cpp's rule) */
static void prepare_logits(pyrt_sampler *s, const float *logits) {
    float *w = s->work;
    sanitize_copy(w, logits, (size_t)s->n_vocab);

    for (int32_t i = 0; i < s->n_bias; i++) {
        int32_t t = s->bias_id[i];
        w[t] = clamp_finite_or_neg_inf(w[t] + s->bias_val[i]);
    }

    if (s->hist_cap > 0 && s->n_distinct > 0) {
        const float rep = s->p.repeat_penalty, freq = s->p.frequency_penalty, pres = s->p.presence_penalty;
        for (int32_t i = 0; i < s->n_distinct; i++) {
            int32_t t = s->distinct[i];
            float l = w[t];
            /* dividing a negative logit would make the token *more* likely */
            l = l <= 0.0f ? l * rep : l / rep;
            l -= (float)s->count[t] * freq + pres;   /* count > 0 here */
            w[t] = clamp_finite_or_neg_inf(l);
        }
    }
}

/* i-th most recent token of the DRY history (0: the last one) */
static inline int32_t dry_rat(const pyrt_sampler *s, int32_t i) {
    return s->dry_ring[(s->dry_head + s->dry_len - 1 - i) % s->dry_cap];
}

/* DRY on work[]: as llama.cpp's DRY sampler (its steps 1-4 in comments below) */
static void apply_dry(pyrt_sampler *s) {
    const pyrt_sampler_params *p = &s->p;
    const int32_t allowed = p->dry_allowed_length;
    const int32_t last_n = s->dry_len;          /* the ring holds at most the window */
    if (s->dry_cap == 0 || last_n <= allowed) return;

    /* 1. the most recent sequence breaker limits how far back a repeat may reach */
    int32_t rep_limit = last_n;
    for (int32_t i = 0; i < last_n; i++) {
        const int32_t tok = dry_rat(s, i);
        const int32_t e0 = s->brk_first[tok];
        if (e0 < 0) continue;
        int32_t longest = -1;
        for (int32_t e = e0; e < e0 + s->brk_count[tok]; e++) {
            const int32_t L = s->brk_len[e];
            if (L > longest && L <= i) {
                int match = 1;
                for (int32_t k = 0; k < L && match; k++)
                    match = s->brk_toks[s->brk_off[e] + k] == dry_rat(s, i - k - 1);
                if (match) longest = L;
            }
        }
        if (longest >= 0) { rep_limit = i - longest; break; }
    }
    if (rep_limit < allowed) return;

    /* 2. Z-algorithm over the reversed history: rep[last - k] = length of the
     *    longest common prefix of the reversed history and its shift by k,
     *    i.e. how long the current suffix also ends k tokens earlier */
    int32_t *rep = s->dry_repeat;
    const int32_t last = last_n - 1;
    for (int32_t i = 0; i < last_n; i++) rep[i] = 0;
    int32_t lt = 0, rt = 0;
    for (int32_t k = 1; k < last_n; k++) {
        if (k > rt) {
            int32_t n = 0;
            while (n + k < last_n && dry_rat(s, n) == dry_rat(s, n + k)) n++;
            rep[last - k] = n < rep_limit ? n : rep_limit;
            if (n > 0) { lt = k; rt = k + n - 1; }
        } else {
            const int32_t q = k - lt, right = rt - k + 1;
            if (rep[last - q] < right) {
                const int32_t n = rep[last - q];
                rep[last - k] = n < rep_limit ? n : rep_limit;
            } else {
                int32_t i = rt + 1;
                while (i < last_n && dry_rat(s, i) == dry_rat(s, i - k)) i++;
                const int32_t n = i - k;
                rep[last - k] = n < rep_limit ? n : rep_limit;
                lt = k;
                rt = i - 1;
            }
        }
    }

    /* 3. the token that followed each earlier occurrence would extend the repeat */
    int32_t n_touched = 0;
    for (int32_t i = 0; i < last_n - 1; i++) {
        const int32_t len = rep[i];
        if (len >= allowed) {
            const int32_t tok = dry_rat(s, last_n - 2 - i);
            if (s->dry_max[tok] == 0) s->dry_touched[n_touched++] = tok;
            if (len + 1 > s->dry_max[tok]) s->dry_max[tok] = len + 1;   /* stored +1: 0 = none */
        }
    }

    /* 4. penalty multiplier * base^(len - allowed), the exponent capped so the
     *    power stays finite; single-token breakers are never penalised */
    int32_t max_exp = 0;
    if (p->dry_base > 1.000001f) max_exp = (int32_t)(88.7228391f / logf(p->dry_base));
    float *w = s->work;
    for (int32_t j = 0; j < n_touched; j++) {
        const int32_t tok = s->dry_touched[j];
        const int32_t len = s->dry_max[tok] - 1;
        s->dry_max[tok] = 0;
        int single = 0;
        const int32_t e0 = s->brk_first[tok];
        if (e0 >= 0)
            for (int32_t e = e0; e < e0 + s->brk_count[tok]; e++) single |= s->brk_len[e] == 0;
        if (single) continue;
        int32_t ex = len - allowed;
        if (max_exp > 0 && ex > max_exp) ex = max_exp;
        w[tok] = clamp_finite_or_neg_inf(w[tok] - p->dry_multiplier * powf(p->dry_base, (float)ex));
    }
}

static int all_masked_error(void) {
    return pyrt_set_error(PYRT_ERR_INVALID_ARG,
                          "sampler_sample: every logit is -inf or NaN (after logit bias and penalties)");
}

/* top-k with small k: one pass over work[] keeping a k-heap whose root is the
 * worst kept candidate; result sorted. Returns the number of candidates
 * (< k when fewer are finite; 0: all -inf). */
static size_t topk_heap(pyrt_sampler *s, size_t k) {
    const float *w = s->work;
    cand_t *h = s->cand;
    const size_t n = (size_t)s->n_vocab;
    size_t m = 0, i = 0;
    for (; i < n && m < k; i++) {
        float v = w[i];
        if (v > -INFINITY) { h[m].logit = v; h[m].id = (int32_t)i; h[m].p = 0.0f; m++; }
    }
    if (m < k) { cand_sort(h, m); return m; }
    for (size_t a = m / 2; a-- > 0;) sift_down_last(h, m, a);

    /* ids only grow from here on, so a later equal logit is worse: strict > */
    float thr = h[0].logit;
#ifdef SAMPLER_SSE2
    __m128 vthr = _mm_set1_ps(thr);
    for (; i + 8 <= n; i += 8) {
        int mask = _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(w + i), vthr)) |
                   (_mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(w + i + 4), vthr)) << 4);
        if (!mask) continue;
        for (size_t j = i; mask; mask >>= 1, j++) {
            if ((mask & 1) && w[j] > thr) {
                h[0].logit = w[j];
                h[0].id = (int32_t)j;
                sift_down_last(h, m, 0);
                thr = h[0].logit;
            }
        }
        vthr = _mm_set1_ps(thr);
    }
#endif
    for (; i < n; i++) {
        float v = w[i];
        if (v > thr) {
            h[0].logit = v;
            h[0].id = (int32_t)i;
            sift_down_last(h, m, 0);
            thr = h[0].logit;
        }
    }
    cand_sort(h, m);
    return m;
}

/* all finite candidates, in id order */
static size_t compact_all(pyrt_sampler *s) {
    const float *w = s->work;
    cand_t *c = s->cand;
    const int32_t n = s->n_vocab;
    size_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float v = w[i];
        c[m].logit = v;          /* written unconditionally, kept only if finite */
        c[m].id = i;
        m += v > -INFINITY;
    }
    return m;
}

/* Histogram cut for large unsorted candidate sets, instead of sorting them.
 * Bins of logit distance from mx (monotone in `before` order; equal logits
 * share a bin); walks bins best-first until the accumulated weight (c[i].p if
 * by_mass, else 1 per candidate) reaches `target`, then sorts only the
 * boundary bin. Leaves the kept candidates (the first in `before` order whose
 * weight reaches target) in c[0..r), unsorted; returns r. */
#define HIST_BINS 1024
static inline int hist_bin(float mx, float l, float scale) {
    const float d = (mx - l) * scale;   /* >= 0; +inf and huge values go to the last bin */
    return d < (float)HIST_BINS ? (int)d : HIST_BINS;
}
static size_t hist_cut(pyrt_sampler *s, size_t m, float mx, float range, int by_mass, double target) {
    cand_t *c = s->cand, *t = s->tmp;
    double wsum[HIST_BINS + 1];
    memset(wsum, 0, sizeof wsum);
    const float scale = range > 0.0f ? (float)HIST_BINS / range : 0.0f;
    for (size_t i = 0; i < m; i++) wsum[hist_bin(mx, c[i].logit, scale)] += by_mass ? (double)c[i].p : 1.0;
    double cum = 0.0;
    int b = 0;
    for (; b <= HIST_BINS; b++) {
        if (cum + wsum[b] >= target) break;
        cum += wsum[b];
    }
    if (b > HIST_BINS) return m;   /* rounding: never reached, keep all */
    size_t r = 0, q = 0;
    for (size_t i = 0; i < m; i++) {
        int bi = hist_bin(mx, c[i].logit, scale);
        if (bi < b) c[r++] = c[i];
        else if (bi == b) t[q++] = c[i];
    }
    cand_sort(t, q);
    for (size_t j = 0; j < q; j++) {
        c[r++] = t[j];
        cum += by_mass ? (double)t[j].p : 1.0;
        if (cum >= target) break;
    }
    return r;
}

/* locally typical sampling (Meister et al.), as llama.cpp does it */
static size_t apply_typical(pyrt_sampler *s, size_t m, int *sorted) {
    cand_t *c = s->cand, *t = s->tmp;
    if (!*sorted) { cand_sort(c, m); *sorted = 1; }
    const double sum = exp_shifted(c, m, c[0].logit, 1.0f, NULL);
    const float inv = (float)(1.0 / sum);
    float entropy = 0.0f;
    for (size_t i = 0; i < m; i++) {
        c[i].p *= inv;
        if (c[i].p > 0.0f) entropy += -c[i].p * logf(c[i].p);
    }
    /* order by |-log p - H| ascending, ties by position: encode the score as a
     * negated "logit" and the position as the "id" and reuse the sort */
    for (size_t i = 0; i < m; i++) {
        float score = c[i].p > 0.0f ? fabsf(-logf(c[i].p) - entropy) : INFINITY;
        t[i].logit = -score;
        t[i].id = (int32_t)i;
        t[i].p = 0.0f;
    }
    cand_sort(t, m);
    const float tp = s->p.typical_p;
    float cum = 0.0f;
    size_t last = m;
    for (size_t i = 0; i < m; i++) {
        cum += c[t[i].id].p;
        if (cum > tp) { last = i + 1; break; }
    }
    for (size_t i = 0; i < last; i++) t[i] = c[t[i].id];  /* gather in place: t[i].id read before write */
    s->cand = t;
    s->tmp = c;
    *sorted = 0;
    return last;
}

/* smallest set of best candidates whose probability mass reaches top_p */
static size_t apply_top_p(pyrt_sampler *s, size_t m, int *sorted, float mx) {
    cand_t *c = s->cand;
    const double target = (double)s->p.top_p * exp_shifted(c, m, mx, 1.0f, NULL);
    if (!*sorted && m > 1024)                   /* unsorted: histogram, no full sort */
        return hist_cut(s, m, mx, 32.0f, 1, target);
    if (!*sorted) { cand_sort(c, m); *sorted = 1; }
    double cum = 0.0;
    for (size_t i = 0; i < m; i++) {
        cum += c[i].p;
        if (cum >= target) return i + 1;
    }
    return m;
}

/* keep tokens with p >= min_p * p_max, i.e. logit >= max + log(min_p) */
static size_t apply_min_p(pyrt_sampler *s, size_t m, int sorted, float mx) {
    cand_t *c = s->cand;
    float thr = mx + logf(s->p.min_p);
    if (thr > mx) thr = mx;   /* min_p > 1 (C callers): keep the best */
    size_t r = 0;
    if (sorted) {
        while (r < m && c[r].logit >= thr) r++;
    } else {
        for (size_t i = 0; i < m; i++)
            if (c[i].logit >= thr) c[r++] = c[i];
    }
    return r;
}

/* XTC: with probability xtc_probability, drop the candidates whose
 * probability (at temperature 1, over the current set) is >= xtc_threshold,
 * all but the least likely of them; at least one candidate stays. */
static size_t apply_xtc(pyrt_sampler *s, size_t m, int *sorted, float *mx) {
    const float chance = (float)rng_uniform(s->rng);
    if (chance > s->p.xtc_probability) return m;
    cand_t *c = s->cand;
    if (!*sorted) { cand_sort(c, m); *sorted = 1; }
    const double sum = exp_shifted(c, m, c[0].logit, 1.0f, NULL);
    const float thr = s->p.xtc_threshold;
    size_t pos_last = 0;
    for (size_t i = 0; i < m; i++) {
        if ((float)(c[i].p / sum) >= thr) pos_last = i;
        else break;
    }
    if (pos_last > 0 && m - pos_last >= 1) {
        memmove(c, c + pos_last, (m - pos_last) * sizeof *c);
        m -= pos_last;
        *mx = c[0].logit;
    }
    return m;
}

/* draw from c[0..m) with weights c[i].p (sum > 0); strict '>' never lands on p == 0 */
static size_t draw_linear(pyrt_sampler *s, const cand_t *c, size_t m, double sum) {
    const double target = sum * rng_uniform(s->rng);
    double run = 0.0;
    for (size_t i = 0; i < m; i++) {
        run += c[i].p;
        if (run > target) return i;
    }
    size_t sel = m - 1;                          /* rounding: the last token with p > 0 */
    while (sel > 0 && !(c[sel].p > 0.0f)) sel--;
    return sel;
}

/* Mirostat v1 (Basu et al., as llama.cpp: Zipf exponent from the top
 * MIROSTAT_M probabilities, then top-k with k from mu) and v2 (keep the
 * tokens whose surprise -log2 p is <= mu), on temperature-scaled logits;
 * after the draw mu -= eta * (surprise of the drawn token - tau), the
 * surprise measured in the truncated, renormalised distribution. */
static int sample_mirostat(pyrt_sampler *s, int32_t *out_token) {
    const pyrt_sampler_params *p = &s->p;
    size_t m = compact_all(s);
    if (m == 0) return all_masked_error();
    cand_t *c = s->cand;
    cand_sort(c, m);
    float inv_t = 1.0f / p->temperature;
    if (inv_t > FLT_MAX) inv_t = FLT_MAX;
    const float mx = c[0].logit;
    double sum = exp_shifted(c, m, mx, inv_t, NULL);
    const float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < m; i++) c[i].p *= inv;

    size_t keep;
    if (p->mirostat == 1) {
        float sum_tb = 0.0f, sum_tt = 0.0f;
        for (size_t i = 0; i + 1 < (size_t)MIROSTAT_M && i + 1 < m; i++) {
            if (!(c[i + 1].p > 0.0f)) break;
            const float t = logf((float)(i + 2) / (float)(i + 1));
            const float b = logf(c[i].p / c[i + 1].p);
            sum_tb += t * b;
            sum_tt += t * t;
        }
        keep = 1;
        if (sum_tt > 0.0f) {
            const float s_hat = sum_tb / sum_tt;
            const float eps = s_hat - 1.0f;
            const float k = powf((eps * powf(2.0f, s->mu)) / (1.0f - powf((float)s->n_vocab, -eps)), 1.0f / s_hat);
            if (k >= (float)m) keep = m;            /* also +inf */
            else if (k >= 1.0f) keep = (size_t)k;   /* NaN and k < 1 keep 1 */
        }
    } else {
        keep = 0;
        while (keep < m && !(-log2f(c[keep].p) > s->mu)) keep++;
        if (keep == 0) keep = 1;
    }
    double ksum = 0.0;
    for (size_t i = 0; i < keep; i++) ksum += c[i].p;
    size_t sel = 0;
    if (ksum > 0.0) sel = draw_linear(s, c, keep, ksum);
    else (void)rng_uniform(s->rng);              /* keep one draw per sample */
    const double p_sel = ksum > 0.0 ? c[sel].p / ksum : 1.0;
    const float surprise = -log2f((float)p_sel);
    s->mu -= p->mirostat_eta * (surprise - p->mirostat_tau);
    *out_token = c[sel].id;
    return PYRT_OK;
}

int pyrt_sampler_sample(pyrt_sampler *s, const float *logits, int32_t *out_token) {
    if (!s) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_sample: sampler is NULL");
    if (!logits || !out_token)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "sampler_sample: logits/out_token is NULL");

    prepare_logits(s, logits);
    const pyrt_sampler_params *p = &s->p;
    const size_t n = (size_t)s->n_vocab;
    if (p->mirostat == 0 || p->temperature <= 0.0f) apply_dry(s);

    /* ---- greedy ---- */
    if (p->temperature <= 0.0f) {
        size_t best = argmax(s->work, n);
        if (!(s->work[best] > -INFINITY)) return all_masked_error();
        *out_token = (int32_t)best;
        return PYRT_OK;
    }

    if (p->mirostat != 0) return sample_mirostat(s, out_token);

    /* ---- top-k (also builds the candidate set, without -inf entries) ---- */
    size_t m;
    int sorted = 0;
    float mx;          /* max logit among the candidates; every filter but typical keeps it */
    const size_t k = p->top_k > 0 ? (size_t)p->top_k : 0;
    if (k > 0 && k <= HEAP_TOPK_MAX && k < n) {
        m = topk_heap(s, k);
        sorted = 1;
        mx = s->cand[0].logit;
    } else {
        m = compact_all(s);
        mx = vec_max(s->work, n);
        if (m > 0 && k > 0 && k < m) {
            const float mn = cand_min(s->cand, m);
            m = hist_cut(s, m, mx, mx - mn, 0, (double)k);
        }
    }
    if (m == 0) return all_masked_error();

    /* ---- typical, top-p, min-p ---- */
    if (p->typical_p < 1.0f && m > 1) {
        m = apply_typical(s, m, &sorted);
        mx = cand_max(s->cand, m);
    }
    if (p->top_p < 1.0f && m > 1) m = apply_top_p(s, m, &sorted, mx);
    if (p->min_p > 0.0f && m > 1) m = apply_min_p(s, m, sorted, mx);
    if (p->xtc_probability > 0.0f && p->xtc_threshold <= 0.5f && m > 1) m = apply_xtc(s, m, &sorted, &mx);

    /* ---- temperature + softmax (fused: exp((l - max) / T)), draw ---- */
    cand_t *c = s->cand;
    float inv_t = 1.0f / p->temperature;
    if (inv_t > FLT_MAX) inv_t = FLT_MAX;                /* denormal temperatures */
    double *bsum = (double *)s->tmp;                     /* m / EXP_BLOCK + 1 doubles fit easily */
    const double sum = exp_shifted(c, m, mx, inv_t, bsum);
    const double target = sum * rng_uniform(s->rng);   /* one draw per sample, always */
    /* skip whole blocks, then walk candidates; strict '>' never lands on p == 0 */
    double run = 0.0;
    size_t i = 0;
    for (size_t b = 0; i + EXP_BLOCK <= m && run + bsum[b] <= target; b++, i += EXP_BLOCK) run += bsum[b];
    size_t sel = m;
    for (; i < m; i++) {
        run += c[i].p;
        if (run > target) { sel = i; break; }
    }
    if (sel == m) {                              /* rounding: take the last token with p > 0 */
        sel = m - 1;
        while (sel > 0 && !(c[sel].p > 0.0f)) sel--;
    }
    *out_token = c[sel].id;
    return PYRT_OK;
}
