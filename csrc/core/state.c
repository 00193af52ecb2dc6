/* state.c — save and restore the filled part of a context's KV cache. */
#include <string.h>

#include "model.h"

typedef struct {
    char magic[8];            /* "PYRTKV1\0" */
    int32_t n_layer, n_past;
    int64_t kv_dim;
} state_header;

int64_t pyrt_ctx_state_size(const pyrt_ctx *c) {
    if (!c) return 0;
    return (int64_t)sizeof(state_header) +
           2 * (int64_t)c->m->hp.n_layer * c->n_past[0] * c->kv_dim * (int64_t)sizeof(pyrt_fp16);
}

int pyrt_ctx_state_get(const pyrt_ctx *c, void *buf, int64_t len) {
    if (!c || !buf) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_get: NULL argument");
    if (len < pyrt_ctx_state_size(c)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_get: buffer too small");
    state_header h = { "PYRTKV1", c->m->hp.n_layer, c->n_past[0], c->kv_dim };
    char *p = buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    const size_t layer_bytes = (size_t)c->n_past[0] * c->kv_dim * sizeof(pyrt_fp16);
    for (int il = 0; il < c->m->hp.n_layer; il++) {
        if (c->cuda) {
            const int st = pyrt_cuda_kv_read(c->cuda, il, c->n_past[0], (uint16_t *)p, (uint16_t *)(p + layer_bytes));
            if (st) return st;
            p += 2 * layer_bytes;
            continue;
        }
        const size_t off = (size_t)il * c->n_seq * c->n_ctx * c->kv_dim;   /* sequence 0 */
        memcpy(p, c->kc + off, layer_bytes); p += layer_bytes;
        memcpy(p, c->vc + off, layer_bytes); p += layer_bytes;
    }
    return PYRT_OK;
}

int pyrt_ctx_state_set(pyrt_ctx *c, const void *buf, int64_t len) {
    if (!c || !buf) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: NULL argument");
    state_header h;
    if (len < (int64_t)sizeof h) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: buffer too small");
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, "PYRTKV1", 8) != 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: bad magic");
    if (h.n_layer != c->m->hp.n_layer || h.kv_dim != c->kv_dim)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: state is for another model");
    if (h.n_past < 0 || h.n_past > c->n_ctx)
        return pyrt_set_error(PYRT_ERR_CONTEXT_FULL, "state_set: %d positions do not fit n_ctx %d", h.n_past, c->n_ctx);
    const size_t layer_bytes = (size_t)h.n_past * c->kv_dim * sizeof(pyrt_fp16);
    if ((uint64_t)len != sizeof h + 2 * (uint64_t)h.n_layer * layer_bytes)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: length %lld does not match header", (long long)len);
    const char *p = (const char *)buf + sizeof h;
    for (int il = 0; il < h.n_layer; il++) {
        if (c->cuda) {
            const int st = pyrt_cuda_kv_write(c->cuda, il, h.n_past, (const uint16_t *)p, (const uint16_t *)(p + layer_bytes));
            if (st) { c->n_past[0] = 0; return st; }   /* partially written: nothing is valid */
            p += 2 * layer_bytes;
            continue;
        }
        const size_t off = (size_t)il * c->n_seq * c->n_ctx * c->kv_dim;   /* sequence 0 */
        memcpy(c->kc + off, p, layer_bytes); p += layer_bytes;
        memcpy(c->vc + off, p, layer_bytes); p += layer_bytes;
    }
    c->n_past[0] = h.n_past;
    return PYRT_OK;
}
