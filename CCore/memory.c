/* memory.c: the memory limit a model or trainer is checked against before
 * it allocates (internal.h). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The first number after key in a file like /proc/meminfo, times scale; 0
 * when absent. */
static size_t number_in_file(const char *path, const char *key, size_t scale) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    size_t value = 0, key_length = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, key_length) != 0) continue;
        char *end;
        unsigned long long v = strtoull(line + key_length, &end, 10);
        if (end != line + key_length && !lca_size_mul((size_t)v, scale, &value)) value = 0;
        break;
    }
    fclose(f);
    return value;
}

/* tests: a limit in place of the machine's (0: none); not thread-safe */
static size_t limit_override;

void lca_memory_set_limit(size_t bytes) { limit_override = bytes; }

size_t lca_memory_limit(void) {
    if (limit_override) return limit_override;
    size_t limit = SIZE_MAX;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t physical;
    if (pages > 0 && page > 0 && lca_size_mul((size_t)pages, (size_t)page, &physical))
        limit = physical;
    /* Linux: what can be had without swapping (free memory and the page
     * cache the kernel can drop), and a container's cgroup v2 limit */
    size_t available = number_in_file("/proc/meminfo", "MemAvailable:", 1024);
    if (available > 0 && available < limit) limit = available;
    size_t cgroup = number_in_file("/sys/fs/cgroup/memory.max", "", 1);
    if (cgroup > 0 && cgroup < limit) limit = cgroup;
    return limit;
}

lca_status lca_memory_check(size_t bytes, const char *what, const char *hint) {
    if (!limit_override && bytes <= (size_t)1 << 28) return LCA_OK; /* 256 MiB: not worth asking */
    size_t limit = lca_memory_limit();
    if (bytes == SIZE_MAX)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY,
                        "%s would need more than 2^64 bytes of memory; %zu bytes (%.1f GB) are "
                        "available%s%s",
                        what, limit, (double)limit / 1e9, hint ? ": " : "", hint ? hint : "");
    if (bytes > limit)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY,
                        "%s would need %zu bytes (%.1f GB) of memory but %zu bytes (%.1f GB) are "
                        "available%s%s",
                        what, bytes, (double)bytes / 1e9, limit, (double)limit / 1e9,
                        hint ? ": " : "", hint ? hint : "");
    return LCA_OK;
}
