/* status.c: status phrases and the per-thread detailed error message. */
#include "internal.h"

#include <stdarg.h>

static _Thread_local char last_error[1024];

const char *lca_status_string(lca_status status) {
    switch (status) {
    case LCA_OK: return "ok";
    case LCA_ERR_INVALID_ARGUMENT: return "invalid argument";
    case LCA_ERR_OUT_OF_MEMORY: return "out of memory";
    case LCA_ERR_IO: return "input/output error";
    case LCA_ERR_FORMAT: return "format error";
    case LCA_ERR_MISMATCH: return "mismatch";
    case LCA_ERR_UNSUPPORTED: return "unsupported";
    case LCA_ERR_NUMERIC: return "numeric error";
    case LCA_ERR_STATE: return "invalid state";
    }
    return "unknown status";
}

const char *lca_last_error(void) { return last_error; }

lca_status lca_fail(lca_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return status;
}
