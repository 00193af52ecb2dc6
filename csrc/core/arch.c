/* arch.c — the architectures pyrt runs, as rows of traits (see arch.h). */
#include "arch.h"

static const pyrt_arch g_arch[] = {
    /*                      name      qk_norm q_prescale post_norms ffn_act       */
    [PYRT_ARCH_LLAMA]  = { "llama",  0,      0,         0,         PYRT_ACT_SILU },
    [PYRT_ARCH_GEMMA3] = { "gemma3", 1,      1,         1,         PYRT_ACT_GELU },
};

const pyrt_arch *pyrt_arch_get(int32_t arch) {
    if (arch < 0 || arch >= (int32_t)(sizeof g_arch / sizeof g_arch[0]) || !g_arch[arch].name) return 0;
    return &g_arch[arch];
}
