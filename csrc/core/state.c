/* state.c — save and restore the filled part of a context's KV cache
 * (sequence 0). The header names the cache types, so a state made with one
 * KV type is refused by a context of another (the rows would not parse). */
#include <string.h>

#include "model.h"

typedef struct {
    char magic[8];            /* "PYRTKV2\0" ("PYRTKV1": the F16 format before cache types) */
    int32_t n_layer, n_past;
    int64_t kv_dim;
    int32_t type_k, type_v;   /* PYRT_TYPE_* of the rows that follow (PYRTKV2 only) */
} state_header;

#define V1_HEADER_BYTES 24    /* magic, n_layer, n_past, kv_dim */
static_assert(sizeof(state_header) == 32, "state header layout");

int64_t pyrt_ctx_state_size(const pyrt_ctx *c) {
    if (!c) return 0;
    return (int64_t)sizeof(state_header) +
           (int64_t)c->m->hp.n_layer * c->n_past[0] * (c->k_row_bytes + c->v_row_bytes);
}

int pyrt_ctx_state_get(const pyrt_ctx *c, void *buf, int64_t len) {
    if (!c || !buf) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_get: NULL argument");
    if (len < pyrt_ctx_state_size(c)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_get: buffer too small");
    state_header h = { "PYRTKV2", c->m->hp.n_layer, c->n_past[0], c->kv_dim, c->type_k, c->type_v };
    char *p = buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    const size_t kbytes = (size_t)c->n_past[0] * (size_t)c->k_row_bytes;
    const size_t vbytes = (size_t)c->n_past[0] * (size_t)c->v_row_bytes;
    for (int il = 0; il < c->m->hp.n_layer; il++) {
        if (c->cuda) {
            const int st = pyrt_cuda_kv_read(c->cuda, il, c->n_past[0], (uint16_t *)p, (uint16_t *)(p + kbytes));
            if (st) return st;
            p += kbytes + vbytes;
            continue;
        }
        const size_t layer = (size_t)il * c->n_seq * c->n_ctx;    /* rows before this layer; sequence 0 */
        memcpy(p, c->kc + layer * (size_t)c->k_row_bytes, kbytes); p += kbytes;
        memcpy(p, c->vc + layer * (size_t)c->v_row_bytes, vbytes); p += vbytes;
    }
    return PYRT_OK;
}

static const char *type_name(int32_t t) {
    return t >= 0 && t < PYRT_TYPE_COUNT && pyrt_type_traits_table[t].name ? pyrt_type_traits_table[t].name : "?";
}

int pyrt_ctx_state_set(pyrt_ctx *c, const void *buf, int64_t len) {
    if (!c || !buf) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: NULL argument");
    state_header h;
    int64_t hbytes;
    if (len >= V1_HEADER_BYTES && memcmp(buf, "PYRTKV1", 8) == 0) {
        memcpy(&h, buf, V1_HEADER_BYTES);
        h.type_k = h.type_v = PYRT_TYPE_F16;
        hbytes = V1_HEADER_BYTES;
    } else {
        if (len < (int64_t)sizeof h) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: buffer too small");
        memcpy(&h, buf, sizeof h);
        if (memcmp(h.magic, "PYRTKV2", 8) != 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: bad magic");
        hbytes = (int64_t)sizeof h;
    }
    if (h.n_layer != c->m->hp.n_layer || h.kv_dim != c->kv_dim)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: state is for another model");
    if (h.type_k != c->type_k || h.type_v != c->type_v)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG,
                              "state_set: state has a %s/%s KV cache (type_k/type_v), this context %s/%s",
                              type_name(h.type_k), type_name(h.type_v), type_name(c->type_k), type_name(c->type_v));
    if (h.n_past < 0 || h.n_past > c->n_ctx)
        return pyrt_set_error(PYRT_ERR_CONTEXT_FULL, "state_set: %d positions do not fit n_ctx %d", h.n_past, c->n_ctx);
    const size_t kbytes = (size_t)h.n_past * (size_t)c->k_row_bytes;
    const size_t vbytes = (size_t)h.n_past * (size_t)c->v_row_bytes;
    if ((uint64_t)len != (uint64_t)hbytes + (uint64_t)h.n_layer * (kbytes + vbytes))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: length %lld does not match header", (long long)len);
    const char *p = (const char *)buf + hbytes;
    for (int il = 0; il < h.n_layer; il++) {
        if (c->cuda) {
            const int st = pyrt_cuda_kv_write(c->cuda, il, h.n_past, (const uint16_t *)p, (const uint16_t *)(p + kbytes));
            if (st) { c->n_past[0] = 0; return st; }   /* partially written: nothing is valid */
            p += kbytes + vbytes;
            continue;
        }
        const size_t layer = (size_t)il * c->n_seq * c->n_ctx;
        memcpy(c->kc + layer * (size_t)c->k_row_bytes, p, kbytes); p += kbytes;
        memcpy(c->vc + layer * (size_t)c->v_row_bytes, p, vbytes); p += vbytes;
    }
    c->n_past[0] = h.n_past;
    return PYRT_OK;
}
