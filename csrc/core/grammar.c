/* core/grammar.c — GBNF grammar matching over bytes and over a vocabulary.
 *
 * The grammar is a pushdown recognizer run on all parses at once: the state
 * is a set of stacks, each stack a list of positions in the rule table (the
 * top is the next element to match). A stack whose top is a rule reference
 * is expanded into one stack per alternative of that rule until every top is
 * a character element; an empty stack means the text so far is complete.
 * Consuming a code point keeps the stacks whose top matches it, moved one
 * element on and expanded again. Sets are deduplicated, so ambiguous
 * grammars cost at most PYRT_GR_MAX_STACKS stacks per step.
 *
 * Text arrives as bytes: an incomplete UTF-8 sequence is kept as (value,
 * bytes still due) next to the set, and a prefix is only accepted if some
 * stack could match a code point starting with it.
 *
 * Masking the vocabulary walks the tokens in byte order (sorted once per
 * vocabulary, pyrt_gvocab): a token shares the states of its common prefix
 * with the token before it, and every token beyond a dead prefix is
 * rejected without looking at its bytes.
 *
 * Memory: one int32 arena per matcher holds the current set at offset 0 and
 * the sets being built above it; every code point is bounded by a work budget
 * (stack words written), the stack count and the stack depth, and fails with
 * UNSUPPORTED when a grammar exceeds them rather than running away.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define GR_WORK_BUDGET   (1 << 26)        /* stack words written per code point    */
#define GR_ARENA_MAX     (1ll << 26)      /* int32 words (256 MiB) per matcher    */
#define GR_HT_SIZE       (2 * PYRT_GR_MAX_STACKS)
#define GR_MAX_CP        0x10FFFF

struct pyrt_grammar {
    int32_t *w;          /* [n_w + 4]: the table, then REF root, END 0 (the start) */
    int32_t  n_w;
    int32_t *starts;     /* [n_rules] */
    int32_t  n_rules;
};

struct pyrt_gvocab {
    int32_t  n_vocab;
    uint8_t *bytes;      /* [off[n_vocab]] */
    int64_t *off;        /* [n_vocab + 1]  */
    uint8_t *flags;      /* [n_vocab]      */
    int32_t *order;      /* [n_order] tokens with bytes, not EOG, in byte order */
    int32_t *lcp;        /* [n_order] common prefix length with the one before   */
    int32_t  n_order;
    int32_t  max_len;
};

/* a set of stacks in the arena: [off, end), each stack [len, pos0 .. pos(len-1)] */
typedef struct {
    int64_t  off, end;
    int32_t  n;          /* stacks; 0: dead */
    int32_t  has_empty;
    uint32_t pval;       /* incomplete UTF-8: bits so far */
    int32_t  prem;       /*                   continuation bytes still due */
    int32_t  plen;       /*                   its whole length in bytes    */
} gset;

struct pyrt_gmatcher {
    const pyrt_grammar *g;
    const pyrt_gvocab  *v;
    int32_t *ar;  int64_t ar_cap;        /* arena                      */
    int32_t *wl;  int64_t wl_cap;        /* expansion worklist          */
    int32_t *cp;                         /* [PYRT_GR_MAX_DEPTH + 1]     */
    uint32_t *ht_stamp;                  /* [GR_HT_SIZE] dedup table    */
    int64_t  *ht_off;
    uint32_t stamp;
    gset     cur;
    gset    *depth;                      /* [max_len + 1] mask walk    */
    int64_t  work;
    /* the set being built */
    int64_t  b_off, b_end;
    int32_t  b_n, b_empty;
};

/* ---- table helpers ------------------------------------------------------- */

static inline int is_end(const int32_t *w, int32_t pos) {
    return w[pos] == PYRT_GR_END || w[pos] == PYRT_GR_ALT;
}

static inline int32_t next_pos(const int32_t *w, int32_t pos) {
    return w[pos] == PYRT_GR_REF ? pos + 2 : pos + 2 + 2 * w[pos + 1];
}

static inline int char_match(const int32_t *w, int32_t pos, uint32_t c) {
    int32_t n = w[pos + 1];
    const int32_t *r = w + pos + 2;
    int in = 0;
    /* ranges are sorted and disjoint: binary search */
    int32_t lo = 0, hi = n;
    while (lo < hi) {
        int32_t mid = (lo + hi) >> 1;
        if ((uint32_t)r[2 * mid + 1] < c) lo = mid + 1;
        else hi = mid;
    }
    if (lo < n && (uint32_t)r[2 * lo] <= c) in = 1;
    return w[pos] == PYRT_GR_CHARS ? in : !in;
}

/* could the element at pos match some code point in [lo, hi]? */
static int char_match_range(const int32_t *w, int32_t pos, uint32_t lo, uint32_t hi) {
    int32_t n = w[pos + 1];
    const int32_t *r = w + pos + 2;
    if (w[pos] == PYRT_GR_CHARS) {
        for (int32_t i = 0; i < n; i++)
            if ((uint32_t)r[2 * i] <= hi && (uint32_t)r[2 * i + 1] >= lo) return 1;
        return 0;
    }
    for (int32_t i = 0; i < n; i++)
        if ((uint32_t)r[2 * i] <= lo && (uint32_t)r[2 * i + 1] >= hi) return 0;
    return 1;
}

/* ---- grammar --------------------------------------------------------------- */

int pyrt_grammar_create(const int32_t *words, int32_t n_words, const int32_t *starts,
                        int32_t n_rules, int32_t root, pyrt_grammar **out) {
    if (!out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "grammar: out is NULL");
    *out = NULL;
    if (!words || !starts || n_words < 2 || n_rules < 1 || n_words > (1 << 28))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "grammar: empty or oversized table");
    if (root < 0 || root >= n_rules)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "grammar: root %d out of range", root);
    uint8_t *seen = calloc((size_t)n_words, 1);
    if (!seen) return pyrt_set_error(PYRT_ERR_OOM, "grammar: out of memory");
    for (int32_t r = 0; r < n_rules; r++) {
        int32_t pos = starts[r];
        if (pos < 0 || pos >= n_words) {
            free(seen);
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "grammar: rule %d starts outside the table", r);
        }
        for (;;) {
            if (pos + 1 >= n_words) goto bad;
            if (seen[pos]) break;           /* validated from here on already */
            seen[pos] = 1;
            int32_t t = words[pos];
            if (t == PYRT_GR_END) break;
            if (t == PYRT_GR_ALT) { pos += 2; continue; }
            if (t == PYRT_GR_REF) {
                if (words[pos + 1] < 0 || words[pos + 1] >= n_rules) goto bad;
                pos += 2;
                continue;
            }
            if (t != PYRT_GR_CHARS && t != PYRT_GR_NCHARS) goto bad;
            int32_t cnt = words[pos + 1];
            if (cnt < 0 || cnt > (n_words - pos - 2) / 2) goto bad;
            for (int32_t i = 0; i < cnt; i++) {
                int32_t lo = words[pos + 2 + 2 * i], hi = words[pos + 3 + 2 * i];
                if (lo < 0 || hi < lo || hi > GR_MAX_CP) goto bad;
                if (i > 0 && lo <= words[pos + 1 + 2 * i]) goto bad;   /* sorted, disjoint */
            }
            pos += 2 + 2 * cnt;
            continue;
        bad:
            free(seen);
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "grammar: malformed table at word %d (rule %d)",
                                  pos, r);
        }
    }
    free(seen);
    pyrt_grammar *g = calloc(1, sizeof *g);
    if (!g) return pyrt_set_error(PYRT_ERR_OOM, "grammar: out of memory");
    g->w = malloc(((size_t)n_words + 4) * sizeof(int32_t));
    g->starts = malloc((size_t)n_rules * sizeof(int32_t));
    if (!g->w || !g->starts) { pyrt_grammar_free(g); return pyrt_set_error(PYRT_ERR_OOM, "grammar: out of memory"); }
    memcpy(g->w, words, (size_t)n_words * sizeof(int32_t));
    g->w[n_words] = PYRT_GR_REF;
    g->w[n_words + 1] = root;
    g->w[n_words + 2] = PYRT_GR_END;
    g->w[n_words + 3] = 0;
    memcpy(g->starts, starts, (size_t)n_rules * sizeof(int32_t));
    g->n_w = n_words;
    g->n_rules = n_rules;
    *out = g;
    return PYRT_OK;
}

void pyrt_grammar_free(pyrt_grammar *g) {
    if (!g) return;
    free(g->w);
    free(g->starts);
    free(g);
}

/* ---- vocabulary ---------------------------------------------------------------- */

static int tok_cmp(const pyrt_gvocab *v, int32_t a, int32_t b) {
    int64_t la = v->off[a + 1] - v->off[a], lb = v->off[b + 1] - v->off[b];
    int64_t n = la < lb ? la : lb;
    int c = memcmp(v->bytes + v->off[a], v->bytes + v->off[b], (size_t)n);
    if (c) return c;
    if (la != lb) return la < lb ? -1 : 1;
    return a < b ? -1 : (a > b);
}

static void merge_sort(const pyrt_gvocab *v, int32_t *a, int32_t *tmp, int32_t n) {
    for (int32_t width = 1; width < n; width *= 2) {
        for (int32_t lo = 0; lo < n; lo += 2 * width) {
            int32_t mid = lo + width < n ? lo + width : n;
            int32_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            int32_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = tok_cmp(v, a[i], a[j]) <= 0 ? a[i++] : a[j++];
            while (i < mid) tmp[k++] = a[i++];
            while (j < hi) tmp[k++] = a[j++];
        }
        memcpy(a, tmp, (size_t)n * sizeof(int32_t));
    }
}

int pyrt_gvocab_create(const uint8_t *bytes, const int64_t *offsets, const uint8_t *flags,
                       int32_t n_vocab, pyrt_gvocab **out) {
    if (!out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gvocab: out is NULL");
    *out = NULL;
    if (!offsets || !flags || n_vocab < 1)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gvocab: empty vocabulary");
    if (offsets[0] != 0)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gvocab: offsets[0] must be 0");
    int32_t max_len = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        int64_t len = offsets[i + 1] - offsets[i];
        if (len < 0 || len > (1 << 20))
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gvocab: token %d has a bad length", i);
        if (len > max_len) max_len = (int32_t)len;
    }
    int64_t total = offsets[n_vocab];
    if (total > 0 && !bytes) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gvocab: bytes is NULL");
    pyrt_gvocab *v = calloc(1, sizeof *v);
    if (!v) return pyrt_set_error(PYRT_ERR_OOM, "gvocab: out of memory");
    v->n_vocab = n_vocab;
    v->max_len = max_len;
    v->bytes = malloc((size_t)total + 1);
    v->off = malloc(((size_t)n_vocab + 1) * sizeof(int64_t));
    v->flags = malloc((size_t)n_vocab);
    v->order = malloc((size_t)n_vocab * sizeof(int32_t));
    v->lcp = malloc((size_t)n_vocab * sizeof(int32_t));
    int32_t *tmp = malloc((size_t)n_vocab * sizeof(int32_t));
    if (!v->bytes || !v->off || !v->flags || !v->order || !v->lcp || !tmp) {
        free(tmp);
        pyrt_gvocab_free(v);
        return pyrt_set_error(PYRT_ERR_OOM, "gvocab: out of memory");
    }
    if (total) memcpy(v->bytes, bytes, (size_t)total);
    memcpy(v->off, offsets, ((size_t)n_vocab + 1) * sizeof(int64_t));
    memcpy(v->flags, flags, (size_t)n_vocab);
    int32_t n = 0;
    for (int32_t i = 0; i < n_vocab; i++)
        if (!(flags[i] & PYRT_GVOCAB_EOG) && offsets[i + 1] > offsets[i]) v->order[n++] = i;
    merge_sort(v, v->order, tmp, n);
    free(tmp);
    for (int32_t i = 0; i < n; i++) {
        int32_t l = 0;
        if (i > 0) {
            int32_t a = v->order[i - 1], b = v->order[i];
            int64_t la = v->off[a + 1] - v->off[a], lb = v->off[b + 1] - v->off[b];
            const uint8_t *pa = v->bytes + v->off[a], *pb = v->bytes + v->off[b];
            while (l < la && l < lb && pa[l] == pb[l]) l++;
        }
        v->lcp[i] = l;
    }
    v->n_order = n;
    *out = v;
    return PYRT_OK;
}

void pyrt_gvocab_free(pyrt_gvocab *v) {
    if (!v) return;
    free(v->bytes);
    free(v->off);
    free(v->flags);
    free(v->order);
    free(v->lcp);
    free(v);
}

/* ---- matcher: memory ------------------------------------------------------------ */

static int ar_reserve(pyrt_gmatcher *m, int64_t need) {
    if (need <= m->ar_cap) return PYRT_OK;
    if (need > GR_ARENA_MAX)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED,
                              "grammar too ambiguous: parse state exceeds %lld words",
                              (long long)GR_ARENA_MAX);
    int64_t cap = m->ar_cap ? m->ar_cap : 4096;
    while (cap < need) cap *= 2;
    if (cap > GR_ARENA_MAX) cap = GR_ARENA_MAX;
    int32_t *p = realloc(m->ar, (size_t)cap * sizeof(int32_t));
    if (!p) return pyrt_set_error(PYRT_ERR_OOM, "grammar: out of memory");
    m->ar = p;
    m->ar_cap = cap;
    return PYRT_OK;
}

static int wl_reserve(pyrt_gmatcher *m, int64_t need) {
    if (need <= m->wl_cap) return PYRT_OK;
    int64_t cap = m->wl_cap ? m->wl_cap : 4096;
    while (cap < need) cap *= 2;
    if (cap > GR_ARENA_MAX)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "grammar too ambiguous: expansion exceeds limits");
    int32_t *p = realloc(m->wl, (size_t)cap * sizeof(int32_t));
    if (!p) return pyrt_set_error(PYRT_ERR_OOM, "grammar: out of memory");
    m->wl = p;
    m->wl_cap = cap;
    return PYRT_OK;
}

/* ---- matcher: building a set ------------------------------------------------------ */

static void set_begin(pyrt_gmatcher *m, int64_t at) {
    m->b_off = m->b_end = at;
    m->b_n = 0;
    m->b_empty = 0;
    if (++m->stamp == 0) {
        memset(m->ht_stamp, 0, GR_HT_SIZE * sizeof(uint32_t));
        m->stamp = 1;
    }
}

static uint32_t stack_hash(const int32_t *e, int32_t len) {
    uint32_t h = 2166136261u ^ (uint32_t)len;
    for (int32_t i = 0; i < len; i++) h = (h ^ (uint32_t)e[i]) * 16777619u;
    return h;
}

/* add a finished stack (top is a character element, or empty) unless present */
static int set_add(pyrt_gmatcher *m, const int32_t *e, int32_t len) {
    uint32_t h = stack_hash(e, len);
    uint32_t mask = GR_HT_SIZE - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        if (m->ht_stamp[i] != m->stamp) {
            if (m->b_n >= PYRT_GR_MAX_STACKS)
                return pyrt_set_error(PYRT_ERR_UNSUPPORTED,
                                      "grammar too ambiguous: more than %d parse stacks at one point",
                                      PYRT_GR_MAX_STACKS);
            int st = ar_reserve(m, m->b_end + 1 + len);
            if (st) return st;
            int32_t *d = m->ar + m->b_end;
            d[0] = len;
            if (len) memcpy(d + 1, e, (size_t)len * sizeof(int32_t));
            m->ht_stamp[i] = m->stamp;
            m->ht_off[i] = m->b_end;
            m->b_end += 1 + len;
            m->b_n++;
            if (len == 0) m->b_empty = 1;
            return PYRT_OK;
        }
        const int32_t *o = m->ar + m->ht_off[i];
        if (o[0] == len && memcmp(o + 1, e, (size_t)len * sizeof(int32_t)) == 0) return PYRT_OK;
    }
}

/* expand every stack on the worklist (each stored as pos0..pos(len-1), len)
 * until its top is a character element, adding the results to the set */
static int expand(pyrt_gmatcher *m, int64_t top) {
    const int32_t *w = m->g->w;
    const int32_t *starts = m->g->starts;
    while (top > 0) {
        int32_t len = m->wl[top - 1];
        int32_t *e = m->wl + top - 1 - len;
        if (len == 0 || w[e[len - 1]] == PYRT_GR_CHARS || w[e[len - 1]] == PYRT_GR_NCHARS) {
            int st = set_add(m, e, len);
            if (st) return st;
            top -= 1 + len;
            continue;
        }
        /* top is a rule reference: pop it, push one stack per alternative */
        int32_t ref = e[len - 1];
        memcpy(m->cp, e, (size_t)(len - 1) * sizeof(int32_t));
        top -= 1 + len;
        int32_t base = len - 1;
        int32_t nxt = next_pos(w, ref);
        if (!is_end(w, nxt)) m->cp[base++] = nxt;
        int32_t pos = starts[w[ref + 1]];
        for (;;) {
            int32_t clen = base + (is_end(w, pos) ? 0 : 1);
            if (clen > PYRT_GR_MAX_DEPTH)
                return pyrt_set_error(PYRT_ERR_UNSUPPORTED,
                                      "grammar nesting too deep: a parse stack exceeds %d elements",
                                      PYRT_GR_MAX_DEPTH);
            m->work += clen + 1;
            if (m->work > GR_WORK_BUDGET)
                return pyrt_set_error(PYRT_ERR_UNSUPPORTED,
                                      "grammar too ambiguous: matching one character takes more than "
                                      "%d stack words (an explosive grammar)", GR_WORK_BUDGET);
            int st = wl_reserve(m, top + clen + 1);
            if (st) return st;
            memcpy(m->wl + top, m->cp, (size_t)base * sizeof(int32_t));
            if (clen > base) m->wl[top + base] = pos;
            m->wl[top + clen] = clen;
            top += clen + 1;
            while (!is_end(w, pos)) pos = next_pos(w, pos);
            if (w[pos] == PYRT_GR_END) break;
            pos += 2;
        }
    }
    return PYRT_OK;
}

static void set_finish(pyrt_gmatcher *m, gset *out) {
    out->off = m->b_off;
    out->end = m->b_end;
    out->n = m->b_n;
    out->has_empty = m->b_empty;
    out->pval = 0;
    out->prem = 0;
    out->plen = 0;
}

/* the set after consuming code point c from src, built at `at` (>= src->end) */
static int advance(pyrt_gmatcher *m, const gset *src, uint32_t c, int64_t at, gset *out) {
    const int32_t *w = m->g->w;
    m->work = 0;
    set_begin(m, at);
    int64_t p = src->off;
    for (int32_t s = 0; s < src->n; s++) {
        int32_t len = m->ar[p];
        int64_t here = p;
        p += 1 + len;
        if (len == 0) continue;
        int32_t t = m->ar[here + len];
        if (!char_match(w, t, c)) continue;
        int32_t nxt = next_pos(w, t);
        int32_t clen = len - 1 + (is_end(w, nxt) ? 0 : 1);
        int st = wl_reserve(m, clen + 1);
        if (st) return st;
        memcpy(m->wl, m->ar + here + 1, (size_t)(len - 1) * sizeof(int32_t));
        if (clen == len) m->wl[len - 1] = nxt;
        m->wl[clen] = clen;
        st = expand(m, clen + 1);
        if (st) return st;
    }
    set_finish(m, out);
    return PYRT_OK;
}

/* smallest code point a UTF-8 sequence of n bytes may encode (shorter
 * encodings are overlong and invalid) */
static const uint32_t utf8_min[5] = {0, 0, 0x80, 0x800, 0x10000};

static int partial_ok(const pyrt_gmatcher *m, const gset *s) {
    const int32_t *w = m->g->w;
    uint32_t lo = s->pval << (6 * s->prem);
    uint32_t hi = lo | ((1u << (6 * s->prem)) - 1);
    /* only valid UTF-8 can follow: not overlong, no surrogates, <= U+10FFFF */
    if (lo < utf8_min[s->plen]) lo = utf8_min[s->plen];
    if (hi > GR_MAX_CP) hi = GR_MAX_CP;
    if (lo >= 0xD800 && lo <= 0xDFFF) lo = 0xE000;
    if (hi >= 0xD800 && hi <= 0xDFFF) hi = 0xD7FF;
    if (lo > hi) return 0;
    int64_t p = s->off;
    for (int32_t i = 0; i < s->n; i++) {
        int32_t len = m->ar[p];
        if (len && char_match_range(w, m->ar[p + len], lo, hi)) return 1;
        p += 1 + len;
    }
    return 0;
}

/* one byte: out is src's successor (n == 0: dead); a new set goes at `at` */
static int step(pyrt_gmatcher *m, const gset *src, uint8_t b, int64_t at, gset *out) {
    uint32_t c;
    *out = *src;
    if (src->prem == 0) {
        if (b < 0x80) { c = b; goto full; }
        if ((b & 0xE0) == 0xC0) { out->pval = b & 0x1F; out->prem = 1; }
        else if ((b & 0xF0) == 0xE0) { out->pval = b & 0x0F; out->prem = 2; }
        else if ((b & 0xF8) == 0xF0) { out->pval = b & 0x07; out->prem = 3; }
        else { out->n = 0; return PYRT_OK; }
        out->plen = out->prem + 1;
        if (!partial_ok(m, out)) out->n = 0;
        return PYRT_OK;
    }
    if ((b & 0xC0) != 0x80) { out->n = 0; return PYRT_OK; }
    c = (src->pval << 6) | (b & 0x3F);
    if (src->prem > 1) {
        out->pval = c;
        out->prem = src->prem - 1;
        if (!partial_ok(m, out)) out->n = 0;
        return PYRT_OK;
    }
    if (c < utf8_min[src->plen] || (c >= 0xD800 && c <= 0xDFFF) || c > GR_MAX_CP) {
        out->n = 0;                 /* overlong, surrogate or beyond Unicode */
        return PYRT_OK;
    }
full:
    return advance(m, src, c, at, out);
}

/* ---- matcher: API ---------------------------------------------------------------- */

int pyrt_gmatcher_create(const pyrt_grammar *g, const pyrt_gvocab *v, pyrt_gmatcher **out) {
    if (!out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher: out is NULL");
    *out = NULL;
    if (!g) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher: grammar is NULL");
    pyrt_gmatcher *m = calloc(1, sizeof *m);
    if (!m) return pyrt_set_error(PYRT_ERR_OOM, "gmatcher: out of memory");
    m->g = g;
    m->v = v;
    m->cp = malloc((PYRT_GR_MAX_DEPTH + 1) * sizeof(int32_t));
    m->ht_stamp = calloc(GR_HT_SIZE, sizeof(uint32_t));
    m->ht_off = malloc(GR_HT_SIZE * sizeof(int64_t));
    m->depth = malloc(((size_t)(v ? v->max_len : 0) + 1) * sizeof(gset));
    if (!m->cp || !m->ht_stamp || !m->ht_off || !m->depth) {
        pyrt_gmatcher_free(m);
        return pyrt_set_error(PYRT_ERR_OOM, "gmatcher: out of memory");
    }
    int st = pyrt_gmatcher_reset(m);
    if (st) { pyrt_gmatcher_free(m); return st; }
    *out = m;
    return PYRT_OK;
}

void pyrt_gmatcher_free(pyrt_gmatcher *m) {
    if (!m) return;
    free(m->ar);
    free(m->wl);
    free(m->cp);
    free(m->ht_stamp);
    free(m->ht_off);
    free(m->depth);
    free(m);
}

int pyrt_gmatcher_reset(pyrt_gmatcher *m) {
    if (!m) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher: NULL");
    m->work = 0;
    set_begin(m, 0);
    int st = wl_reserve(m, 2);
    if (st) return st;
    m->wl[0] = m->g->n_w;          /* the start element: REF root */
    m->wl[1] = 1;
    st = expand(m, 2);
    if (st) return st;
    set_finish(m, &m->cur);
    return PYRT_OK;
}

int pyrt_gmatcher_accept_bytes(pyrt_gmatcher *m, const uint8_t *bytes, int64_t n, int32_t *ok) {
    if (!m || !ok || (n > 0 && !bytes) || n < 0)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher_accept_bytes: bad arguments");
    *ok = 0;
    m->work = 0;
    gset s = m->cur;
    int64_t base = m->cur.end;            /* work area above the current set */
    for (int64_t i = 0; i < n; i++) {
        gset t;
        int64_t at = s.end > base ? s.end : base;
        int st = step(m, &s, bytes[i], at, &t);
        if (st) return st;
        if (t.n == 0) return PYRT_OK;
        if (t.off != s.off && t.off > base) {  /* keep the work area compact */
            memmove(m->ar + base, m->ar + t.off, (size_t)(t.end - t.off) * sizeof(int32_t));
            t.end = base + (t.end - t.off);
            t.off = base;
        }
        s = t;
    }
    if (s.off != 0) {
        memmove(m->ar, m->ar + s.off, (size_t)(s.end - s.off) * sizeof(int32_t));
        s.end -= s.off;
        s.off = 0;
    }
    m->cur = s;
    *ok = 1;
    return PYRT_OK;
}

static int check_token(const pyrt_gmatcher *m, int32_t token) {
    if (!m->v) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher: created without a vocabulary");
    if (token < 0 || token >= m->v->n_vocab)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher: token %d out of range", token);
    return PYRT_OK;
}

int pyrt_gmatcher_accept_token(pyrt_gmatcher *m, int32_t token, int32_t *ok) {
    if (!m || !ok) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher_accept_token: NULL");
    int st = check_token(m, token);
    if (st) return st;
    const pyrt_gvocab *v = m->v;
    if (v->flags[token] & PYRT_GVOCAB_EOG) {
        *ok = m->cur.has_empty && m->cur.prem == 0;
        return PYRT_OK;
    }
    int64_t len = v->off[token + 1] - v->off[token];
    if (len == 0) { *ok = 0; return PYRT_OK; }
    return pyrt_gmatcher_accept_bytes(m, v->bytes + v->off[token], len, ok);
}

int pyrt_gmatcher_mask(pyrt_gmatcher *m, uint8_t *allowed, int32_t *n_allowed) {
    if (!m || !allowed) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher_mask: NULL");
    if (!m->v) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher: created without a vocabulary");
    const pyrt_gvocab *v = m->v;
    m->work = 0;
    memset(allowed, 0, (size_t)v->n_vocab);
    int32_t count = 0;
    int complete = m->cur.has_empty && m->cur.prem == 0;
    for (int32_t i = 0; i < v->n_vocab; i++)
        if ((v->flags[i] & PYRT_GVOCAB_EOG) && complete) { allowed[i] = 1; count++; }
    gset *d = m->depth;
    d[0] = m->cur;
    int32_t valid = 0;             /* d[0..valid] hold the current path's states */
    int32_t dead_at = 1 << 30;     /* the path is dead after this many bytes     */
    for (int32_t k = 0; k < v->n_order; k++) {
        int32_t tok = v->order[k];
        int32_t l = v->lcp[k];
        if (dead_at <= l) continue;
        if (valid > l) valid = l;
        dead_at = 1 << 30;
        int32_t len = (int32_t)(v->off[tok + 1] - v->off[tok]);
        const uint8_t *b = v->bytes + v->off[tok];
        while (valid < len) {
            /* ends only grow along the path: build above the deepest state */
            int st = step(m, &d[valid], b[valid], d[valid].end, &d[valid + 1]);
            if (st) return st;
            if (d[valid + 1].n == 0) { dead_at = valid + 1; break; }
            valid++;
        }
        if (valid == len && dead_at > len) { allowed[tok] = 1; count++; }
    }
    if (n_allowed) *n_allowed = count;
    return PYRT_OK;
}

int pyrt_gmatcher_state(const pyrt_gmatcher *m, int32_t *complete, int32_t *can_continue) {
    if (!m) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "gmatcher_state: NULL");
    if (complete) *complete = m->cur.has_empty && m->cur.prem == 0;
    if (can_continue) *can_continue = m->cur.prem > 0 || m->cur.n > (m->cur.has_empty ? 1 : 0);
    return PYRT_OK;
}
