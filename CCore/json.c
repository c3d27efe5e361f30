/* json.c: JSON text the core writes (the log header, safetensors headers):
 * one function for the one rule of escaping a string, so that every file
 * the core writes quotes its names and paths the same way. Readers of JSON
 * stay beside their formats (safetensors.c parses its header). */
#include "internal.h"

#include <stdio.h>

void lca_json_write_string(lca_json_sink write, void *sink, const char *s) {
    static const char hex[] = "0123456789abcdef";
    write(sink, "\"", 1);
    const char *run = s; /* bytes that go out as they are, up to s */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c != '"' && c != '\\' && c >= 0x20) continue;
        if (s > run) write(sink, run, (size_t)(s - run));
        if (c == '"' || c == '\\') {
            char escape[2] = {'\\', (char)c};
            write(sink, escape, 2);
        } else {
            char escape[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            write(sink, escape, 6);
        }
        run = s + 1;
    }
    if (s > run) write(sink, run, (size_t)(s - run));
    write(sink, "\"", 1);
}
