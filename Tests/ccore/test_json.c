/*
 * test_json: lca_json_write_string (json.c), the one JSON string escaper of
 * the log header and the safetensors headers, against literal expected
 * texts written from RFC 8259 section 7: quotes and backslashes escaped,
 * every control character below 0x20 as \u00XX (lower-case hex), DEL and
 * UTF-8 bytes as they are; the text arrives through the sink in pieces,
 * and the pieces joined are the whole literal.
 */
#include "internal.h"
#include "support.h"

#include <stdio.h>
#include <string.h>

typedef struct buffer {
    char bytes[512];
    size_t length;
    size_t calls;
} buffer;

static void sink(void *context, const char *bytes, size_t length) {
    buffer *b = context;
    if (b->length + length < sizeof b->bytes) memcpy(b->bytes + b->length, bytes, length);
    b->length += length;
    b->calls++;
}

static void expect(const char *input, const char *expected, const char *what) {
    buffer b = {{0}, 0, 0};
    lca_json_write_string(sink, &b, input);
    bool same = b.length == strlen(expected) && memcmp(b.bytes, expected, b.length) == 0;
    check_true(same, what, "got %.*s (%zu bytes), expected %s", (int)b.length, b.bytes,
               b.length, expected);
}

int main(void) {
    test_begin("test_json");
    expect("", "\"\"", "the empty string is two quotes");
    expect("fc1.weight", "\"fc1.weight\"", "plain ASCII passes unchanged");
    expect("a\"b\\c", "\"a\\\"b\\\\c\"", "quote and backslash get a backslash");
    expect("tab\there\nnew\rline\b\f", "\"tab\\u0009here\\u000anew\\u000dline\\u0008\\u000c\"",
           "control characters become \\u00XX, short forms not used");
    expect("\x01\x1f", "\"\\u0001\\u001f\"", "the ends of the control range");
    expect(" \x7f", "\" \x7f\"", "space and DEL are not escaped");
    expect("runs/\xc3\xa9t\xc3\xa9 \xe2\x86\x92 \xf0\x9f\x93\x88",
           "\"runs/\xc3\xa9t\xc3\xa9 \xe2\x86\x92 \xf0\x9f\x93\x88\"",
           "UTF-8 (2, 3 and 4 bytes) passes unchanged");
    char all[32];
    for (int c = 1; c < 32; c++) all[c - 1] = (char)c;
    all[31] = '\0';
    buffer b = {{0}, 0, 0};
    lca_json_write_string(sink, &b, all);
    char expected[512];
    size_t at = 0;
    expected[at++] = '"';
    for (int c = 1; c < 32; c++) at += (size_t)snprintf(expected + at, 8, "\\u%04x", c);
    expected[at++] = '"';
    check_true(b.length == at && memcmp(b.bytes, expected, at) == 0,
               "every control character 1 … 31, one after another", "%zu bytes, expected %zu",
               b.length, at);
    return test_finish();
}
