/* arch.c — the architectures pyrt runs, as rows of traits (see arch.h). */
#include "arch.h"

static const pyrt_arch g_arch[] = {
    /*                      name      qk_norm q_prescale post_norms ffn_act        gate_up_fused */
    [PYRT_ARCH_LLAMA]  = { "llama",  0,      0,         0,         PYRT_ACT_SILU },
    [PYRT_ARCH_GEMMA3] = { "gemma3", 1,      1,         1,         PYRT_ACT_GELU },
    [PYRT_ARCH_QWEN2]  = { "qwen2",  0,      0,         0,         PYRT_ACT_SILU },
    [PYRT_ARCH_QWEN3]  = { "qwen3",  1,      0,         0,         PYRT_ACT_SILU },
    [PYRT_ARCH_GEMMA2] = { "gemma2", 0,      1,         1,         PYRT_ACT_GELU },
    [PYRT_ARCH_QWEN3MOE] = { "qwen3moe", 1,    0,         0,         PYRT_ACT_SILU },
    [PYRT_ARCH_PHI3]   = { "phi3",   0,      1,         0,         PYRT_ACT_SILU, 1 },
};

const pyrt_arch *pyrt_arch_get(int32_t arch) {
    if (arch < 0 || arch >= (int32_t)(sizeof g_arch / sizeof g_arch[0]) || !g_arch[arch].name) return 0;
    return &g_arch[arch];
}
