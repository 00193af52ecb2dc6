/* arch.h — what each model architecture changes in the shared decoder block.
 *
 * Every architecture runs the same block (core/forward.c):
 *   x = embed(tok) [* embd_scale]
 *   per layer: x += [post_norm] Wo . attn(rope([qk_norm] (Wq.n(x) [+ bq])), rope([qk_norm] (Wk.n(x) [+ bk])),
 *                                         Wv.n(x) [+ bv])
 *              x += [post_norm] Wdown . (act(Wgate.n(x)) * Wup.n(x))
 *   out = Woutput . n(x) [+ b]
 * Optional tensors any architecture may carry (as llama.cpp loads them): q/k/v
 * biases, a fused attn_qkv in place of q/k/v (bound as row views of it),
 * rope_freqs (Llama 3 rope scaling: theta_i / f_i) and output.bias.
 * An architecture is one row of traits in core/arch.c; a per-layer tensor
 * belongs to the trait that reads it (the tensor table in core/model.c), so
 * adding an architecture that only recombines existing traits is one row, and
 * a new operation is one trait, its tensors and its lines in the forward pass.
 * Hyper-parameters that are plain numbers (embedding and attention scales,
 * sliding window and its rope base) live in pyrt_hparams, set from GGUF
 * metadata on the Python side (pyrt/model.py). */
#ifndef PYRT_ARCH_H
#define PYRT_ARCH_H

#include <stdint.h>
#include "pyrt.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { PYRT_ACT_SILU = 0, PYRT_ACT_GELU = 1 };   /* FFN gate activation */

typedef struct {
    const char *name;        /* llama.cpp's general.architecture             */
    uint8_t qk_norm;         /* RMSNorm per q and k head before rope (attn_q_norm, attn_k_norm) */
    uint8_t q_prescale;      /* q *= attn_scale in f32 after rope, attention scale 1
                              * (else the attention kernel scales q.k)        */
    uint8_t post_norms;      /* RMSNorm on the attention and FFN outputs before each
                              * residual add (post_attention_norm, post_ffw_norm) */
    uint8_t ffn_act;         /* PYRT_ACT_*                                    */
    uint8_t gate_up_fused;   /* ffn_up holds [gate; up] (2*n_ff rows), no ffn_gate (phi3) */
} pyrt_arch;

/* The traits of arch id PYRT_ARCH_*, or NULL for an unknown id. */
const pyrt_arch *pyrt_arch_get(int32_t arch);

#ifdef __cplusplus
}
#endif

#endif
