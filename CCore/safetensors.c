/*
 * safetensors.c: the safetensors format (Hugging Face), read and written.
 *
 *     offset 0   u64 N, little-endian      length of the JSON header
 *     offset 8   N bytes of UTF-8 JSON     {"__metadata__": {"k": "v", …},
 *                                           "name": {"dtype": "F32",
 *                                                    "shape": [100, 784],
 *                                                    "data_offsets": [b, e]}, …}
 *     offset 8+N the data area             tensor bytes, little-endian, packed;
 *                                          data_offsets count from here
 *
 * The writer pads the header with spaces so that the data area starts at a
 * multiple of 8, writes the tensors in the order given, back to back, and
 * replaces the destination atomically (path.tmp, fsync, rename).
 *
 * The reader loads the whole file and validates everything before handing
 * out pointers into it: a strict JSON parser (RFC 8259: no trailing commas,
 * no leading zeros, no raw control characters, valid UTF-8), known dtypes,
 * shape × dtype size = byte range, ranges inside the data area and not
 * overlapping, unique names. Gaps between tensors are allowed. The file is
 * placed in memory so that every tensor's data is aligned for its dtype
 * (a tensor stored at an unaligned offset is copied), so callers may cast
 * `data` to float * etc. Error messages give file offsets.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_LIMIT 100000000u /* bytes; the limit of the reference implementation */
#define JSON_MAX_DEPTH 64

typedef struct dtype_info {
    const char *name;
    size_t size; /* bytes per element */
} dtype_info;

static const dtype_info dtypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
    {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
    {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1},
};
#define DTYPE_LIST "F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL"

static const dtype_info *find_dtype(const char *name) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, name) == 0) return &dtypes[i];
    return NULL;
}

static bool host_is_little_endian(void) {
    const uint16_t probe = 1;
    return *(const uint8_t *)&probe == 1;
}

/* Number of bytes of the UTF-8 sequence starting at s (at most n bytes
 * available), or 0 if it is not valid UTF-8: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static size_t utf8_sequence(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

static bool utf8_valid(const char *text) {
    const uint8_t *s = (const uint8_t *)text;
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence(s + i, n - i);
        if (!len) return false;
        i += len;
    }
    return true;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ================================================================ writing */

typedef struct text_buffer {
    char *bytes;
    size_t length, capacity;
    bool failed; /* out of memory: later appends are ignored */
} text_buffer;

static void append(text_buffer *t, const char *s, size_t n) {
    if (t->failed) return;
    if (n > t->capacity - t->length) {
        size_t need = t->length + n;
        size_t capacity = t->capacity ? t->capacity : 256;
        while (capacity < need && capacity <= SIZE_MAX / 2) capacity *= 2;
        char *bigger = capacity >= need ? realloc(t->bytes, capacity) : NULL;
        if (!bigger || need < t->length) {
            t->failed = true;
            return;
        }
        t->bytes = bigger;
        t->capacity = capacity;
    }
    memcpy(t->bytes + t->length, s, n);
    t->length += n;
}

static void append_cstr(text_buffer *t, const char *s) { append(t, s, strlen(s)); }

/* for lca_json_write_string (json.c) */
static void append_sink(void *t, const char *s, size_t n) { append(t, s, n); }

static void append_u64(text_buffer *t, uint64_t value) {
    char number[24];
    int n = snprintf(number, sizeof number, "%" PRIu64, value);
    append(t, number, (size_t)n);
}

/* Check what the caller passed; the message names path and tensor. */
static lca_status check_tensor(const char *path, const lca_st_tensor *tensor, size_t index) {
    if (!tensor->name || !tensor->dtype)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "%s: tensor %zu has no name or dtype", path,
                        index);
    const char *name = tensor->name;
    if (!utf8_valid(name))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "%s: tensor %zu: name is not valid UTF-8",
                        path, index);
    if (strcmp(name, "__metadata__") == 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "%s: \"__metadata__\" is reserved and cannot name a tensor", path);
    const dtype_info *dtype = find_dtype(tensor->dtype);
    if (!dtype)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "%s: tensor \"%s\": unknown dtype \"%s\" (expected one of " DTYPE_LIST ")",
                        path, name, tensor->dtype);
    if (tensor->rank < 0 || tensor->rank > LCA_MAX_RANK)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "%s: tensor \"%s\": rank %d, expected 0 … %d", path, name, tensor->rank,
                        LCA_MAX_RANK);
    size_t elements = 1;
    for (int d = 0; d < tensor->rank; d++) {
        int64_t dim = tensor->shape[d];
        if (dim < 0)
            return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                            "%s: tensor \"%s\": dimension %d is %" PRId64 ", expected ≥ 0", path,
                            name, d, dim);
        if (dim > 0 && elements > SIZE_MAX / (uint64_t)dim)
            return lca_fail(LCA_ERR_INVALID_ARGUMENT, "%s: tensor \"%s\": shape overflows",
                            path, name);
        elements *= (size_t)dim;
    }
    if (elements > SIZE_MAX / dtype->size || elements * dtype->size != tensor->bytes)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "%s: tensor \"%s\": shape × %s size = %zu elements × %zu bytes, but "
                        "bytes = %zu", path, name, dtype->name, elements, dtype->size,
                        tensor->bytes);
    if (tensor->bytes && !tensor->data)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "%s: tensor \"%s\" has no data", path, name);
    return LCA_OK;
}

/* Fail if two of the strings are equal; what names them in the message. */
static lca_status check_unique(const char *path, const char *const *strings, size_t count,
                               const char *what) {
    if (count < 2) return LCA_OK;
    const char **sorted = malloc(count * sizeof *sorted);
    if (!sorted) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    memcpy(sorted, strings, count * sizeof *sorted);
    qsort(sorted, count, sizeof *sorted, compare_strings);
    lca_status status = LCA_OK;
    for (size_t i = 1; i < count; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            status = lca_fail(LCA_ERR_INVALID_ARGUMENT, "%s: two %s are named \"%s\"", path,
                              what, sorted[i]);
            break;
        }
    free(sorted);
    return status;
}

/* The JSON header, padded with spaces so that 8 + its length is a multiple
 * of 8. */
static lca_status build_header(const char *path, text_buffer *header,
                               const lca_st_tensor *tensors, size_t count,
                               const char *const *keys, const char *const *values,
                               size_t metadata_count, uint64_t *data_bytes) {
    append(header, "{", 1);
    if (metadata_count) {
        append_cstr(header, "\"__metadata__\":{");
        for (size_t i = 0; i < metadata_count; i++) {
            if (i) append(header, ",", 1);
            lca_json_write_string(append_sink, header, keys[i]);
            append(header, ":", 1);
            lca_json_write_string(append_sink, header, values[i]);
        }
        append(header, "}", 1);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        const lca_st_tensor *tensor = &tensors[i];
        if (i || metadata_count) append(header, ",", 1);
        lca_json_write_string(append_sink, header, tensor->name);
        append_cstr(header, ":{\"dtype\":");
        lca_json_write_string(append_sink, header, find_dtype(tensor->dtype)->name);
        append_cstr(header, ",\"shape\":[");
        for (int d = 0; d < tensor->rank; d++) {
            if (d) append(header, ",", 1);
            append_u64(header, (uint64_t)tensor->shape[d]);
        }
        append_cstr(header, "],\"data_offsets\":[");
        append_u64(header, offset);
        append(header, ",", 1);
        if (tensor->bytes > UINT64_MAX - offset)
            return lca_fail(LCA_ERR_INVALID_ARGUMENT, "%s: total data size overflows", path);
        offset += tensor->bytes;
        append_u64(header, offset);
        append_cstr(header, "]}");
    }
    append(header, "}", 1);
    while (!header->failed && (8 + header->length) % 8 != 0) append(header, " ", 1);
    if (header->failed)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory building the header", path);
    if (header->length > HEADER_LIMIT)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "%s: header of %zu bytes exceeds the %u-byte limit of the format",
                        path, header->length, HEADER_LIMIT);
    *data_bytes = offset;
    return LCA_OK;
}

/* Make a completed rename durable; a failure here loses nothing that is
 * not already on disk, so it is not reported. */
static void sync_parent_folder(const char *path) {
    const char *slash = strrchr(path, '/');
    char *folder;
    if (!slash) {
        folder = malloc(2);
        if (folder) strcpy(folder, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        folder = malloc(n + 1);
        if (folder) {
            memcpy(folder, path, n);
            folder[n] = '\0';
        }
    }
    if (!folder) return;
    int fd = open(folder, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(folder);
}

lca_status lca_safetensors_write(const char *path, const lca_st_tensor *tensors, size_t count,
                                 const char *const *metadata_keys,
                                 const char *const *metadata_values, size_t metadata_count) {
    if (!path || (count && !tensors) || (metadata_count && (!metadata_keys || !metadata_values)))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_safetensors_write: NULL argument");
    if (!host_is_little_endian())
        return lca_fail(LCA_ERR_UNSUPPORTED, "%s: safetensors writing needs a little-endian "
                        "host", path);
    for (size_t i = 0; i < count; i++) {
        lca_status status = check_tensor(path, &tensors[i], i);
        if (status != LCA_OK) return status;
    }
    for (size_t i = 0; i < metadata_count; i++) {
        if (!metadata_keys[i] || !metadata_values[i])
            return lca_fail(LCA_ERR_INVALID_ARGUMENT, "%s: metadata entry %zu is NULL", path, i);
        if (!utf8_valid(metadata_keys[i]) || !utf8_valid(metadata_values[i]))
            return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                            "%s: metadata entry %zu is not valid UTF-8", path, i);
    }
    lca_status status = check_unique(path, metadata_keys, metadata_count, "metadata keys");
    if (status != LCA_OK) return status;
    if (count > 1) {
        const char **names = malloc(count * sizeof *names);
        if (!names) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        for (size_t i = 0; i < count; i++) names[i] = tensors[i].name;
        status = check_unique(path, names, count, "tensors");
        free(names);
        if (status != LCA_OK) return status;
    }

    text_buffer header = {0};
    uint64_t data_bytes = 0;
    status = build_header(path, &header, tensors, count, metadata_keys, metadata_values,
                          metadata_count, &data_bytes);
    size_t path_length = strlen(path);
    char *tmp = status == LCA_OK ? malloc(path_length + 5) : NULL;
    if (status == LCA_OK && !tmp)
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    if (status != LCA_OK) {
        free(header.bytes);
        return status;
    }
    memcpy(tmp, path, path_length);
    memcpy(tmp + path_length, ".tmp", 5);

    FILE *file = fopen(tmp, "wb");
    if (!file) {
        status = lca_fail(LCA_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        free(header.bytes);
        return status;
    }
    uint8_t length_bytes[8];
    for (int i = 0; i < 8; i++) length_bytes[i] = (uint8_t)((uint64_t)header.length >> (8 * i));
    const char *step = "write";
    bool ok = fwrite(length_bytes, 1, 8, file) == 8 &&
              fwrite(header.bytes, 1, header.length, file) == header.length;
    for (size_t i = 0; ok && i < count; i++)
        if (tensors[i].bytes) ok = fwrite(tensors[i].data, 1, tensors[i].bytes, file) ==
                                   tensors[i].bytes;
    if (ok && fflush(file) != 0) ok = false;
    if (ok && fsync(fileno(file)) != 0) {
        ok = false;
        step = "fsync";
    }
    int error = errno;
    if (fclose(file) != 0 && ok) {
        ok = false;
        error = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        error = errno;
        step = "rename the temporary file over";
    }
    if (ok) {
        sync_parent_folder(path);
    } else {
        remove(tmp);
        status = lca_fail(LCA_ERR_IO, "%s: cannot %s it (%zu-byte header + %" PRIu64
                          " data bytes, via %s): %s; the previous file, if any, is unchanged",
                          path, step, header.length, data_bytes, tmp, strerror(error));
    }
    free(tmp);
    free(header.bytes);
    return status;
}

/* ================================================================ reading */

typedef struct metadata_entry {
    const char *key, *value; /* decoded in place in the header */
    size_t offset;           /* file offset of the key */
} metadata_entry;

typedef struct tensor_entry {
    size_t key_offset;     /* file offsets, for messages */
    size_t entry_offset;
    size_t offsets_offset;
    uint64_t begin, end;   /* data_offsets */
} tensor_entry;

struct lca_safetensors {
    char *path;
    uint8_t *storage;             /* the file, placed so its data area is 8-aligned */
    uint8_t *realigned;           /* copies of tensors stored at unaligned offsets */
    lca_st_tensor *tensors;       /* count, in header order */
    const lca_st_tensor **by_name; /* count, sorted by name */
    size_t count;
    metadata_entry *metadata;
    size_t metadata_count;
};

/* Parser state. Strings are decoded in place: the decoded form is never
 * longer than the quoted one, and the closing quote leaves room for NUL. */
typedef struct json_cursor {
    const char *file;
    uint8_t *text;        /* the header */
    size_t length;
    size_t pos;
    size_t base;          /* file offset of text[0] */
    uint64_t data_length; /* bytes in the data area */
    lca_safetensors *out;
    tensor_entry *entries;
    size_t capacity, metadata_capacity;
    bool seen_metadata;
} json_cursor;

static void describe(const json_cursor *c, size_t at, char *buffer, size_t capacity) {
    if (at >= c->length) {
        snprintf(buffer, capacity, "the end of the header");
    } else {
        uint8_t ch = c->text[at];
        if (ch > 0x20 && ch < 0x7f) snprintf(buffer, capacity, "'%c'", ch);
        else snprintf(buffer, capacity, "byte 0x%02x", ch);
    }
}

/* "file: byte N: expected what, found 'x'" at text position at. */
static lca_status expected_at(const json_cursor *c, size_t at, const char *what) {
    char found[32];
    describe(c, at, found, sizeof found);
    return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: expected %s, found %s", c->file, c->base + at,
                    what, found);
}

static lca_status expected(const json_cursor *c, const char *what) {
    return expected_at(c, c->pos, what);
}

static void skip_space(json_cursor *c) {
    while (c->pos < c->length) {
        uint8_t ch = c->text[c->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') break;
        c->pos++;
    }
}

static bool peek(const json_cursor *c, char ch) {
    return c->pos < c->length && c->text[c->pos] == (uint8_t)ch;
}

static lca_status expect_char(json_cursor *c, char ch, const char *what) {
    skip_space(c);
    if (!peek(c, ch)) return expected(c, what);
    c->pos++;
    return LCA_OK;
}

static int hex_value(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Four hex digits at text[at]; -1 if they are not there. */
static long hex4(const json_cursor *c, size_t at) {
    if (c->length - at < 4) return -1;
    long value = 0;
    for (size_t i = 0; i < 4; i++) {
        int digit = hex_value(c->text[at + i]);
        if (digit < 0) return -1;
        value = value * 16 + digit;
    }
    return value;
}

/* A string at the cursor; *out points to its decoded, NUL-terminated form
 * inside the header. \u0000 is refused: names are C strings. */
static lca_status parse_string(json_cursor *c, const char **out) {
    skip_space(c);
    if (!peek(c, '"')) return expected(c, "a string");
    c->pos++;
    uint8_t *w = c->text + c->pos; /* write position, never ahead of pos */
    uint8_t *start = w;
    for (;;) {
        if (c->pos >= c->length) return expected(c, "'\"' closing the string");
        uint8_t ch = c->text[c->pos];
        if (ch == '"') {
            *w = '\0';
            c->pos++;
            *out = (const char *)start;
            return LCA_OK;
        }
        if (ch < 0x20)
            return expected(c, "a printable character or an escape in the string");
        if (ch >= 0x80) {
            size_t len = utf8_sequence(c->text + c->pos, c->length - c->pos);
            if (!len) return expected(c, "valid UTF-8 in the string");
            memmove(w, c->text + c->pos, len);
            w += len;
            c->pos += len;
            continue;
        }
        if (ch != '\\') {
            *w++ = ch;
            c->pos++;
            continue;
        }
        size_t escape_at = c->pos;
        if (c->pos + 1 >= c->length) return expected_at(c, c->pos + 1, "an escape character");
        uint8_t kind = c->text[c->pos + 1];
        c->pos += 2;
        switch (kind) {
        case '"': *w++ = '"'; continue;
        case '\\': *w++ = '\\'; continue;
        case '/': *w++ = '/'; continue;
        case 'b': *w++ = '\b'; continue;
        case 'f': *w++ = '\f'; continue;
        case 'n': *w++ = '\n'; continue;
        case 'r': *w++ = '\r'; continue;
        case 't': *w++ = '\t'; continue;
        case 'u': break;
        default:
            return expected_at(c, escape_at + 1, "one of \" \\ / b f n r t u after '\\'");
        }
        long unit = hex4(c, c->pos);
        if (unit < 0) return expected(c, "4 hex digits after \\u");
        c->pos += 4;
        uint32_t code = (uint32_t)unit;
        if (code >= 0xDC00 && code <= 0xDFFF)
            return expected_at(c, escape_at, "a high surrogate before a low surrogate \\u escape");
        if (code >= 0xD800 && code <= 0xDBFF) {
            long low = -1;
            if (c->length - c->pos >= 6 && c->text[c->pos] == '\\' && c->text[c->pos + 1] == 'u')
                low = hex4(c, c->pos + 2);
            if (low < 0xDC00 || low > 0xDFFF)
                return expected(c, "a \\uDC00-\\uDFFF low surrogate after a high surrogate");
            c->pos += 6;
            code = 0x10000 + ((code - 0xD800) << 10) + ((uint32_t)low - 0xDC00);
        }
        if (code == 0)
            return lca_fail(LCA_ERR_UNSUPPORTED,
                            "%s: byte %zu: \\u0000 (NUL) in a string is not supported", c->file,
                            c->base + escape_at);
        if (code < 0x80) {
            *w++ = (uint8_t)code;
        } else if (code < 0x800) {
            *w++ = (uint8_t)(0xC0 | code >> 6);
            *w++ = (uint8_t)(0x80 | (code & 0x3F));
        } else if (code < 0x10000) {
            *w++ = (uint8_t)(0xE0 | code >> 12);
            *w++ = (uint8_t)(0x80 | (code >> 6 & 0x3F));
            *w++ = (uint8_t)(0x80 | (code & 0x3F));
        } else {
            *w++ = (uint8_t)(0xF0 | code >> 18);
            *w++ = (uint8_t)(0x80 | (code >> 12 & 0x3F));
            *w++ = (uint8_t)(0x80 | (code >> 6 & 0x3F));
            *w++ = (uint8_t)(0x80 | (code & 0x3F));
        }
    }
}

static bool is_digit(const json_cursor *c, size_t at) {
    return at < c->length && c->text[at] >= '0' && c->text[at] <= '9';
}

/* A JSON number of any form (validated, value unused). */
static lca_status skip_number(json_cursor *c) {
    if (peek(c, '-')) c->pos++;
    if (!is_digit(c, c->pos)) return expected(c, "a digit");
    if (c->text[c->pos] == '0') {
        c->pos++;
    } else {
        while (is_digit(c, c->pos)) c->pos++;
    }
    if (peek(c, '.')) {
        c->pos++;
        if (!is_digit(c, c->pos)) return expected(c, "a digit after '.'");
        while (is_digit(c, c->pos)) c->pos++;
    }
    if (peek(c, 'e') || peek(c, 'E')) {
        c->pos++;
        if (peek(c, '+') || peek(c, '-')) c->pos++;
        if (!is_digit(c, c->pos)) return expected(c, "a digit in the exponent");
        while (is_digit(c, c->pos)) c->pos++;
    }
    return LCA_OK;
}

/* A non-negative integer no larger than limit; what names it. */
static lca_status parse_uint(json_cursor *c, uint64_t limit, const char *what, uint64_t *out) {
    skip_space(c);
    size_t start = c->pos;
    if (!is_digit(c, c->pos)) return expected(c, what);
    uint64_t value = 0;
    if (c->text[c->pos] == '0') {
        c->pos++;
        if (is_digit(c, c->pos)) return expected(c, "no leading zeros in an integer");
    } else {
        while (is_digit(c, c->pos)) {
            unsigned digit = c->text[c->pos] - '0';
            if (value > (limit - digit) / 10) {
                return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: expected %s no larger than %"
                                PRIu64 ", found a larger number", c->file, c->base + start, what,
                                limit);
            }
            value = value * 10 + digit;
            c->pos++;
        }
    }
    if (peek(c, '.') || peek(c, 'e') || peek(c, 'E'))
        return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: expected %s, found a number with a "
                        "fraction or an exponent", c->file, c->base + start, what);
    *out = value;
    return LCA_OK;
}

/* Any JSON value, validated and ignored. */
static lca_status skip_value(json_cursor *c, int depth) {
    skip_space(c);
    if (depth > JSON_MAX_DEPTH)
        return expected(c, "JSON nested at most 64 levels deep");
    if (c->pos >= c->length) return expected(c, "a JSON value");
    const char *ignored;
    lca_status status;
    switch (c->text[c->pos]) {
    case '"':
        return parse_string(c, &ignored);
    case '{':
        c->pos++;
        skip_space(c);
        if (peek(c, '}')) {
            c->pos++;
            return LCA_OK;
        }
        for (;;) {
            if ((status = parse_string(c, &ignored)) != LCA_OK) return status;
            if ((status = expect_char(c, ':', "':' after a key")) != LCA_OK) return status;
            if ((status = skip_value(c, depth + 1)) != LCA_OK) return status;
            skip_space(c);
            if (peek(c, '}')) {
                c->pos++;
                return LCA_OK;
            }
            if ((status = expect_char(c, ',', "',' or '}' in an object")) != LCA_OK)
                return status;
        }
    case '[':
        c->pos++;
        skip_space(c);
        if (peek(c, ']')) {
            c->pos++;
            return LCA_OK;
        }
        for (;;) {
            if ((status = skip_value(c, depth + 1)) != LCA_OK) return status;
            skip_space(c);
            if (peek(c, ']')) {
                c->pos++;
                return LCA_OK;
            }
            if ((status = expect_char(c, ',', "',' or ']' in an array")) != LCA_OK)
                return status;
        }
    case 't':
    case 'f':
    case 'n': {
        static const char *const words[] = {"true", "false", "null"};
        for (int i = 0; i < 3; i++) {
            size_t n = strlen(words[i]);
            if (c->length - c->pos >= n && memcmp(c->text + c->pos, words[i], n) == 0) {
                c->pos += n;
                return LCA_OK;
            }
        }
        return expected(c, "a JSON value (true, false or null)");
    }
    default:
        if (c->text[c->pos] == '-' || is_digit(c, c->pos)) return skip_number(c);
        return expected(c, "a JSON value");
    }
}

static lca_status parse_metadata(json_cursor *c) {
    lca_status status = expect_char(c, '{', "'{' opening \"__metadata__\"");
    if (status != LCA_OK) return status;
    skip_space(c);
    if (peek(c, '}')) {
        c->pos++;
        return LCA_OK;
    }
    lca_safetensors *out = c->out;
    for (;;) {
        if (out->metadata_count == c->metadata_capacity) {
            size_t capacity = c->metadata_capacity ? 2 * c->metadata_capacity : 8;
            metadata_entry *bigger = realloc(out->metadata, capacity * sizeof *bigger);
            if (!bigger) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
            out->metadata = bigger;
            c->metadata_capacity = capacity;
        }
        metadata_entry *entry = &out->metadata[out->metadata_count];
        skip_space(c);
        entry->offset = c->base + c->pos;
        if (!peek(c, '"')) return expected(c, "a metadata key (a string)");
        if ((status = parse_string(c, &entry->key)) != LCA_OK) return status;
        if ((status = expect_char(c, ':', "':' after a metadata key")) != LCA_OK) return status;
        skip_space(c);
        if (!peek(c, '"')) return expected(c, "a string as metadata value");
        if ((status = parse_string(c, &entry->value)) != LCA_OK) return status;
        out->metadata_count++;
        skip_space(c);
        if (peek(c, '}')) {
            c->pos++;
            return LCA_OK;
        }
        if ((status = expect_char(c, ',', "',' or '}' in \"__metadata__\"")) != LCA_OK)
            return status;
    }
}

/* Field bits of a tensor entry. */
enum { FIELD_DTYPE = 1, FIELD_SHAPE = 2, FIELD_OFFSETS = 4 };

static lca_status parse_shape(json_cursor *c, lca_st_tensor *tensor) {
    lca_status status = expect_char(c, '[', "'[' opening the shape");
    if (status != LCA_OK) return status;
    skip_space(c);
    if (peek(c, ']')) {
        c->pos++;
        return LCA_OK; /* a scalar */
    }
    for (;;) {
        skip_space(c);
        if (tensor->rank == LCA_MAX_RANK)
            return lca_fail(LCA_ERR_UNSUPPORTED,
                            "%s: byte %zu: tensor \"%s\" has more than %d dimensions", c->file,
                            c->base + c->pos, tensor->name, LCA_MAX_RANK);
        uint64_t dim;
        if ((status = parse_uint(c, INT64_MAX, "a non-negative integer dimension", &dim)) !=
            LCA_OK)
            return status;
        tensor->shape[tensor->rank++] = (int64_t)dim;
        skip_space(c);
        if (peek(c, ']')) {
            c->pos++;
            return LCA_OK;
        }
        if ((status = expect_char(c, ',', "',' or ']' in the shape")) != LCA_OK) return status;
    }
}

static lca_status parse_offsets(json_cursor *c, tensor_entry *entry) {
    skip_space(c);
    entry->offsets_offset = c->base + c->pos;
    lca_status status = expect_char(c, '[', "'[' opening data_offsets");
    if (status == LCA_OK)
        status = parse_uint(c, UINT64_MAX, "a non-negative integer offset", &entry->begin);
    if (status == LCA_OK)
        status = expect_char(c, ',', "',' between the 2 data_offsets");
    if (status == LCA_OK)
        status = parse_uint(c, UINT64_MAX, "a non-negative integer offset", &entry->end);
    if (status == LCA_OK)
        status = expect_char(c, ']', "']' after the 2 data_offsets");
    return status;
}

/* Shape × dtype size against the byte range, and the range against the
 * data area. */
static lca_status check_entry(json_cursor *c, const lca_st_tensor *tensor,
                              const tensor_entry *entry, const dtype_info *dtype) {
    const char *name = tensor->name;
    if (entry->begin > entry->end)
        return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": expected data_offsets "
                        "[begin, end] with begin ≤ end, found [%" PRIu64 ", %" PRIu64 "]",
                        c->file, entry->offsets_offset, name, entry->begin, entry->end);
    if (entry->end > c->data_length)
        return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": data_offsets end at %"
                        PRIu64 ", past the end of the data area (%" PRIu64 " bytes; truncated "
                        "file?)", c->file, entry->offsets_offset, name, entry->end,
                        c->data_length);
    uint64_t elements = 1;
    bool overflow = false;
    for (int d = 0; d < tensor->rank; d++) {
        uint64_t dim = (uint64_t)tensor->shape[d];
        if (dim && elements > UINT64_MAX / dim) overflow = true;
        else elements *= dim;
    }
    if (!overflow && elements > UINT64_MAX / dtype->size) overflow = true;
    uint64_t range = entry->end - entry->begin;
    if (overflow || elements * dtype->size != range) {
        char shape[128];
        size_t n = (size_t)snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < tensor->rank && n < sizeof shape; d++)
            n += (size_t)snprintf(shape + n, sizeof shape - n, d ? ", %" PRId64 : "%" PRId64,
                                  tensor->shape[d]);
        if (n < sizeof shape) snprintf(shape + n, sizeof shape - n, "]");
        if (overflow)
            return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": shape %s overflows",
                            c->file, entry->entry_offset, name, shape);
        return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": expected %" PRIu64
                        " bytes (shape %s × %zu bytes of %s), data_offsets [%" PRIu64 ", %"
                        PRIu64 "] give %" PRIu64, c->file, entry->offsets_offset, name,
                        elements * dtype->size, shape, dtype->size, dtype->name, entry->begin,
                        entry->end, range);
    }
    return LCA_OK;
}

static lca_status parse_tensor(json_cursor *c, const char *name, size_t key_offset) {
    lca_safetensors *out = c->out;
    if (out->count == c->capacity) {
        size_t capacity = c->capacity ? 2 * c->capacity : 16;
        lca_st_tensor *tensors = realloc(out->tensors, capacity * sizeof *tensors);
        if (tensors) out->tensors = tensors;
        tensor_entry *entries = tensors ? realloc(c->entries, capacity * sizeof *entries) : NULL;
        if (!entries) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
        c->entries = entries;
        c->capacity = capacity;
    }
    lca_st_tensor *tensor = &out->tensors[out->count];
    tensor_entry *entry = &c->entries[out->count];
    memset(tensor, 0, sizeof *tensor);
    memset(entry, 0, sizeof *entry);
    tensor->name = name;
    entry->key_offset = key_offset;
    skip_space(c);
    entry->entry_offset = c->base + c->pos;
    if (!peek(c, '{')) return expected(c, "'{' opening a tensor entry");
    c->pos++;

    const dtype_info *dtype = NULL;
    unsigned seen = 0;
    lca_status status;
    skip_space(c);
    if (peek(c, '}')) {
        c->pos++;
    } else {
        for (;;) {
            skip_space(c);
            size_t field_at = c->pos;
            const char *field;
            if ((status = parse_string(c, &field)) != LCA_OK) return status;
            if ((status = expect_char(c, ':', "':' after a key")) != LCA_OK) return status;
            unsigned bit = strcmp(field, "dtype") == 0 ? FIELD_DTYPE
                           : strcmp(field, "shape") == 0 ? FIELD_SHAPE
                           : strcmp(field, "data_offsets") == 0 ? FIELD_OFFSETS : 0;
            if (bit & seen)
                return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": expected each "
                                "key once, found a second \"%s\"", c->file, c->base + field_at,
                                name, field);
            seen |= bit;
            if (bit == FIELD_DTYPE) {
                skip_space(c);
                size_t dtype_at = c->pos;
                const char *dtype_name;
                if ((status = parse_string(c, &dtype_name)) != LCA_OK) return status;
                dtype = find_dtype(dtype_name);
                if (!dtype)
                    return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": unknown dtype "
                                    "\"%s\" (expected one of " DTYPE_LIST ")", c->file,
                                    c->base + dtype_at, name, dtype_name);
                tensor->dtype = dtype->name;
            } else if (bit == FIELD_SHAPE) {
                if ((status = parse_shape(c, tensor)) != LCA_OK) return status;
            } else if (bit == FIELD_OFFSETS) {
                if ((status = parse_offsets(c, entry)) != LCA_OK) return status;
            } else {
                if ((status = skip_value(c, 2)) != LCA_OK) return status;
            }
            skip_space(c);
            if (peek(c, '}')) {
                c->pos++;
                break;
            }
            if ((status = expect_char(c, ',', "',' or '}' in a tensor entry")) != LCA_OK)
                return status;
        }
    }
    if (seen != (FIELD_DTYPE | FIELD_SHAPE | FIELD_OFFSETS))
        return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": expected \"dtype\", "
                        "\"shape\" and \"data_offsets\", \"%s\" is missing", c->file,
                        entry->entry_offset, name,
                        !(seen & FIELD_DTYPE) ? "dtype"
                        : !(seen & FIELD_SHAPE) ? "shape" : "data_offsets");
    if ((status = check_entry(c, tensor, entry, dtype)) != LCA_OK) return status;
    out->count++;
    return LCA_OK;
}

static lca_status parse_header(json_cursor *c) {
    lca_status status = expect_char(c, '{', "'{' opening the JSON header");
    if (status != LCA_OK) return status;
    skip_space(c);
    if (peek(c, '}')) {
        c->pos++;
    } else {
        for (;;) {
            skip_space(c);
            size_t key_at = c->pos;
            const char *key;
            if (!peek(c, '"')) return expected(c, "a tensor name (a string)");
            if ((status = parse_string(c, &key)) != LCA_OK) return status;
            if ((status = expect_char(c, ':', "':' after a tensor name")) != LCA_OK)
                return status;
            if (strcmp(key, "__metadata__") == 0) {
                if (c->seen_metadata)
                    return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: expected one "
                                    "\"__metadata__\", found a second", c->file,
                                    c->base + key_at);
                c->seen_metadata = true;
                status = parse_metadata(c);
            } else {
                status = parse_tensor(c, key, c->base + key_at);
            }
            if (status != LCA_OK) return status;
            skip_space(c);
            if (peek(c, '}')) {
                c->pos++;
                break;
            }
            if ((status = expect_char(c, ',', "',' or '}' after a header entry")) != LCA_OK)
                return status;
        }
    }
    skip_space(c);
    if (c->pos != c->length)
        return expected(c, "the end of the header (only spaces may follow the JSON object)");
    return LCA_OK;
}

static int compare_tensor_names(const void *a, const void *b) {
    const lca_st_tensor *x = *(const lca_st_tensor *const *)a;
    const lca_st_tensor *y = *(const lca_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int compare_metadata_keys(const void *a, const void *b) {
    const metadata_entry *x = *(const metadata_entry *const *)a;
    const metadata_entry *y = *(const metadata_entry *const *)b;
    return strcmp(x->key, y->key);
}

static int compare_ranges(const void *a, const void *b) {
    const tensor_entry *x = *(const tensor_entry *const *)a;
    const tensor_entry *y = *(const tensor_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Names and metadata keys unique, byte ranges disjoint: O(n log n), so a
 * header with millions of entries cannot stall the reader. */
static lca_status check_whole_header(json_cursor *c) {
    lca_safetensors *out = c->out;
    size_t n = out->count;
    lca_status status = LCA_OK;
    if (n) {
        out->by_name = malloc(n * sizeof *out->by_name);
        if (!out->by_name) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
        for (size_t i = 0; i < n; i++) out->by_name[i] = &out->tensors[i];
        qsort(out->by_name, n, sizeof *out->by_name, compare_tensor_names);
        for (size_t i = 1; i < n; i++) {
            if (strcmp(out->by_name[i - 1]->name, out->by_name[i]->name) != 0) continue;
            size_t a = (size_t)(out->by_name[i - 1] - out->tensors);
            size_t b = (size_t)(out->by_name[i] - out->tensors);
            size_t later = c->entries[a].key_offset > c->entries[b].key_offset
                               ? c->entries[a].key_offset : c->entries[b].key_offset;
            return lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: expected unique tensor names, "
                            "found a second \"%s\"", c->file, later, out->by_name[i]->name);
        }
    }
    if (out->metadata_count > 1) {
        size_t m = out->metadata_count;
        const metadata_entry **sorted = malloc(m * sizeof *sorted);
        if (!sorted) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
        for (size_t i = 0; i < m; i++) sorted[i] = &out->metadata[i];
        qsort(sorted, m, sizeof *sorted, compare_metadata_keys);
        for (size_t i = 1; i < m && status == LCA_OK; i++)
            if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0)
                status = lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: expected unique metadata "
                                  "keys, found a second \"%s\"", c->file,
                                  sorted[i - 1]->offset > sorted[i]->offset
                                      ? sorted[i - 1]->offset : sorted[i]->offset,
                                  sorted[i]->key);
        free(sorted);
        if (status != LCA_OK) return status;
    }
    if (n > 1) {
        const tensor_entry **ranges = malloc(n * sizeof *ranges);
        if (!ranges) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
        for (size_t i = 0; i < n; i++) ranges[i] = &c->entries[i];
        qsort(ranges, n, sizeof *ranges, compare_ranges);
        const tensor_entry *previous = NULL; /* the last non-empty range */
        for (size_t i = 0; i < n && status == LCA_OK; i++) {
            const tensor_entry *r = ranges[i];
            if (r->begin == r->end) continue; /* empty: overlaps nothing */
            if (previous && r->begin < previous->end)
                status = lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: tensor \"%s\": data_offsets "
                                  "[%" PRIu64 ", %" PRIu64 "] overlap those of \"%s\" [%" PRIu64
                                  ", %" PRIu64 "]; expected disjoint ranges", c->file,
                                  r->offsets_offset, out->tensors[r - c->entries].name,
                                  r->begin, r->end, out->tensors[previous - c->entries].name,
                                  previous->begin, previous->end);
            if (!previous || r->end > previous->end) previous = r;
        }
        free(ranges);
    }
    return status;
}

/* Point each tensor at its bytes; copy those whose offset is not a
 * multiple of their element size into one aligned block. */
static lca_status place_data(lca_safetensors *out, const tensor_entry *entries,
                             const uint8_t *data_area) {
    size_t extra = 0;
    for (size_t i = 0; i < out->count; i++) {
        lca_st_tensor *t = &out->tensors[i];
        t->bytes = (size_t)(entries[i].end - entries[i].begin);
        t->data = data_area + entries[i].begin;
        size_t size = find_dtype(t->dtype)->size;
        if (t->bytes && (uintptr_t)t->data % size != 0) extra += (t->bytes + 7) & ~(size_t)7;
    }
    if (!extra) return LCA_OK;
    out->realigned = malloc(extra);
    if (!out->realigned)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", out->path);
    size_t at = 0;
    for (size_t i = 0; i < out->count; i++) {
        lca_st_tensor *t = &out->tensors[i];
        size_t size = find_dtype(t->dtype)->size;
        if (!t->bytes || (uintptr_t)t->data % size == 0) continue;
        memcpy(out->realigned + at, t->data, t->bytes);
        t->data = out->realigned + at;
        at += (t->bytes + 7) & ~(size_t)7;
    }
    return LCA_OK;
}

lca_status lca_safetensors_read(lca_safetensors **out, const char *path) {
    if (!out || !path) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_safetensors_read: NULL "
                                       "argument");
    *out = NULL;
    if (!host_is_little_endian())
        return lca_fail(LCA_ERR_UNSUPPORTED, "%s: safetensors reading needs a little-endian "
                        "host", path);
    lca_safetensors *file = calloc(1, sizeof *file);
    size_t path_length = strlen(path);
    if (file) file->path = malloc(path_length + 1);
    if (!file || !file->path) {
        lca_safetensors_free(file);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    memcpy(file->path, path, path_length + 1);

    size_t length = 0;
    lca_status status = lca_read_file_raw(path, 8, &file->storage, &length);
    if (status != LCA_OK) {
        lca_safetensors_free(file);
        return status;
    }
    json_cursor c = {0};
    c.file = path;
    c.out = file;
    uint64_t header_length = 0;
    if (length < 8) {
        status = lca_fail(LCA_ERR_FORMAT, "%s: byte %zu: expected an 8-byte header length, "
                          "the file has only %zu bytes", path, length, length);
    } else {
        for (int i = 0; i < 8; i++) header_length |= (uint64_t)file->storage[i] << (8 * i);
        if (header_length > HEADER_LIMIT)
            status = lca_fail(LCA_ERR_FORMAT, "%s: byte 0: header length %" PRIu64 " exceeds "
                              "the %u-byte limit (not a safetensors file?)", path, header_length,
                              HEADER_LIMIT);
        else if (header_length > length - 8)
            status = lca_fail(LCA_ERR_FORMAT, "%s: byte 0: header length %" PRIu64 " runs past "
                              "the end of the file (%zu bytes follow the length; truncated "
                              "file?)", path, header_length, length - 8);
    }
    if (status == LCA_OK) {
        /* Slide the file so that its data area starts 8-aligned. */
        size_t shift = (8 - (size_t)(header_length % 8)) % 8;
        memmove(file->storage + shift, file->storage, length);
        uint8_t *bytes = file->storage + shift;
        c.text = bytes + 8;
        c.length = (size_t)header_length;
        c.base = 8;
        c.data_length = length - 8 - (size_t)header_length;
        status = parse_header(&c);
        if (status == LCA_OK) status = check_whole_header(&c);
        if (status == LCA_OK) status = place_data(file, c.entries, c.text + c.length);
    }
    free(c.entries);
    if (status != LCA_OK) {
        lca_safetensors_free(file);
        return status;
    }
    *out = file;
    return LCA_OK;
}

void lca_safetensors_free(lca_safetensors *file) {
    if (!file) return;
    free(file->path);
    free(file->storage);
    free(file->realigned);
    free(file->tensors);
    free(file->by_name);
    free(file->metadata);
    free(file);
}

size_t lca_safetensors_count(const lca_safetensors *file) { return file->count; }

const lca_st_tensor *lca_safetensors_tensor(const lca_safetensors *file, size_t index) {
    return index < file->count ? &file->tensors[index] : NULL;
}

const lca_st_tensor *lca_safetensors_find(const lca_safetensors *file, const char *name) {
    size_t lo = 0, hi = file->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int order = strcmp(file->by_name[mid]->name, name);
        if (order == 0) return file->by_name[mid];
        if (order < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *lca_safetensors_metadata(const lca_safetensors *file, const char *key) {
    for (size_t i = 0; i < file->metadata_count; i++)
        if (strcmp(file->metadata[i].key, key) == 0) return file->metadata[i].value;
    return NULL;
}

const char *lca_safetensors_path(const lca_safetensors *file) { return file->path; }

/* ============================================================ conversion */

/* F16 (IEEE binary16) to float, exactly: every binary16 value, subnormals
 * included, is a binary32 value. Exponent 31 (Inf, NaN) is the caller's. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign; /* ±0 */
        } else {
            /* subnormal: mantissa × 2^-24; normalise into binary32 */
            int shift = 0;
            while (!(mantissa & 0x400)) {
                mantissa <<= 1;
                shift++;
            }
            bits = sign | (uint32_t)(127 - 15 + 1 - shift) << 23 | (mantissa & 0x3FF) << 13;
        }
    } else {
        bits = sign | (exponent - 15 + 127) << 23 | mantissa << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Values of F64 at or beyond this magnitude round (to nearest) past
 * FLT_MAX to infinity: the midpoint between FLT_MAX and 2^128. */
#define F32_OVERFLOW_THRESHOLD 0x1.ffffffp127

lca_status lca_safetensors_to_f32(const lca_safetensors *file, const lca_st_tensor *tensor,
                                  float *out, size_t *rounded) {
    const char *path = file ? file->path : "(memory)";
    const dtype_info *dtype = find_dtype(tensor->dtype);
    size_t count = dtype ? tensor->bytes / dtype->size : 0;
    const uint8_t *bytes = tensor->data;
    size_t changed = 0;
    if (!dtype || !(strcmp(dtype->name, "F32") == 0 || strcmp(dtype->name, "F16") == 0 ||
                    strcmp(dtype->name, "BF16") == 0 || strcmp(dtype->name, "F64") == 0))
        return lca_fail(LCA_ERR_MISMATCH, "%s: tensor \"%s\" has dtype %s; expected F32, or F16, "
                        "BF16 or F64 (converted to F32)", path, tensor->name, tensor->dtype);
    if (strcmp(dtype->name, "F32") == 0) {
        if (count) memcpy(out, bytes, count * sizeof(float)); /* bit for bit, as always */
    } else if (strcmp(dtype->name, "F64") == 0) {
        for (size_t i = 0; i < count; i++) {
            double x;
            memcpy(&x, bytes + 8 * i, sizeof x);
            if (x != x || x - x != 0)
                return lca_fail(LCA_ERR_NUMERIC, "%s: tensor \"%s\" (F64): element %zu is %s; "
                                "only finite values convert to F32", path, tensor->name, i,
                                x != x ? "NaN" : x > 0 ? "+Inf" : "-Inf");
            if (x >= F32_OVERFLOW_THRESHOLD || x <= -F32_OVERFLOW_THRESHOLD)
                return lca_fail(LCA_ERR_NUMERIC, "%s: tensor \"%s\" (F64): element %zu is %.17g, "
                                "outside F32's range (|x| < 3.4028235e38)", path, tensor->name, i,
                                x);
            out[i] = (float)x; /* the current rounding mode: round to nearest, ties to even */
            changed += (double)out[i] != x;
        }
    } else {
        bool bf16 = strcmp(dtype->name, "BF16") == 0;
        for (size_t i = 0; i < count; i++) {
            uint16_t h = (uint16_t)(bytes[2 * i] | bytes[2 * i + 1] << 8);
            bool special = bf16 ? (h & 0x7F80) == 0x7F80 : (h & 0x7C00) == 0x7C00;
            if (special) {
                bool nan = bf16 ? (h & 0x7F) != 0 : (h & 0x3FF) != 0;
                return lca_fail(LCA_ERR_NUMERIC, "%s: tensor \"%s\" (%s): element %zu is %s; "
                                "only finite values convert to F32", path, tensor->name,
                                dtype->name, i, nan ? "NaN" : h & 0x8000 ? "-Inf" : "+Inf");
            }
            if (bf16) {
                uint32_t bits = (uint32_t)h << 16; /* BF16 is binary32's upper half */
                memcpy(&out[i], &bits, sizeof bits);
            } else {
                out[i] = f16_to_f32(h);
            }
        }
    }
    if (rounded) *rounded = changed;
    return LCA_OK;
}
