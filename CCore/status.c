/* status.c: status phrases and the per-thread detailed error message. */
#include "internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The message of the last failure on this thread. A fixed buffer holds the
 * usual message; a longer one (a long model spec quoted, a long path) goes
 * to a heap buffer of its length, so that the reason at the end of a
 * message is never cut. If that allocation fails, the fixed buffer keeps
 * the message cut, ending in "…" — never an empty message. A message is
 * formatted into a new buffer before the old one is replaced, so that an
 * argument may be lca_last_error() itself ("%s: %s", path, lca_last_error()).
 * The heap buffer is freed when its thread exits (a pthread key). */
static _Thread_local char fixed_error[1024];
static _Thread_local char *grown_error; /* heap, or NULL */
static _Thread_local bool use_grown;
static pthread_key_t grown_key;
static pthread_once_t grown_once = PTHREAD_ONCE_INIT;
static bool grown_key_made;

static void make_grown_key(void) { grown_key_made = pthread_key_create(&grown_key, free) == 0; }

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

const char *lca_last_error(void) { return use_grown ? grown_error : fixed_error; }

lca_status lca_fail(lca_status status, const char *format, ...) {
    char first[sizeof fixed_error];
    va_list args, again;
    va_start(args, format);
    va_copy(again, args);
    int length = vsnprintf(first, sizeof first, format, args);
    va_end(args);
    char *grown = NULL;
    if (length >= (int)sizeof first) {
        pthread_once(&grown_once, make_grown_key);
        grown = grown_key_made ? malloc((size_t)length + 1) : NULL;
        if (grown) vsnprintf(grown, (size_t)length + 1, format, again);
        else memcpy(first + sizeof first - 4, "\xe2\x80\xa6", 4); /* cut: say so */
    }
    va_end(again);
    if (length < 0) snprintf(first, sizeof first, "%s (the message could not be formatted)",
                             lca_status_string(status));
    if (grown) {
        free(grown_error);
        grown_error = grown;
        pthread_setspecific(grown_key, grown);
        use_grown = true;
    } else {
        memcpy(fixed_error, first, sizeof first);
        use_grown = false;
    }
    return status;
}
