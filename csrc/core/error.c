/* core/error.c — status strings and the thread-local "last error" message. */
#include <stdarg.h>
#include <stdio.h>
#include "kernels.h"

static _Thread_local char g_last_error[512];

const char *pyrt_status_string(int status) {
    switch (status) {
    case PYRT_OK: return "ok";
    case PYRT_ERR_INVALID_ARG: return "invalid argument";
    case PYRT_ERR_OOM: return "out of memory";
    case PYRT_ERR_UNSUPPORTED: return "unsupported";
    case PYRT_ERR_CONTEXT_FULL: return "context full";
    case PYRT_ERR_ABORTED: return "aborted";
    case PYRT_ERR_INTERNAL: return "internal error";
    default: return "unknown status";
    }
}

const char *pyrt_last_error(void) { return g_last_error; }

const char *pyrt_version(void) { return "0.1.0"; }

int pyrt_set_error(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return status;
}
