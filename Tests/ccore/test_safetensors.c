/*
 * test_safetensors.c: the safetensors reader and writer (CCore/safetensors.c).
 *
 * Round-trips tensors of every dtype and of ranks 0 … 4 with metadata that
 * needs JSON escapes; checks the file layout byte by byte; has Python
 * (json + numpy, no safetensors package) read a file written here and write
 * one for the reader; runs a table of corrupt files that must give clear
 * errors with the file name and a byte offset; mutates a valid file at
 * random; makes writes fail midway (a file-size limit, a folder in the
 * way of path.tmp, a read-only folder) to check that the old file survives;
 * and checks the conversion of F16, BF16 (every bit pattern, against their
 * definition) and F64 to F32, and checkpoints as other tools write them
 * (no lca metadata, other dtypes, nn.Sequential names), built by hand.
 */
#include "internal.h"
#include "model.h" /* batch norm running statistics, for the conversion test */
#include "support.h"  /* the temporary folder and whole-file helpers */

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures, checks;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
        }                                                                    \
    } while (0)


static bool file_exists(const char *path) {
    struct stat info;
    return stat(path, &info) == 0;
}

static size_t dtype_size(const char *dtype) {
    if (!strcmp(dtype, "F64") || !strcmp(dtype, "I64") || !strcmp(dtype, "U64")) return 8;
    if (!strcmp(dtype, "F32") || !strcmp(dtype, "I32") || !strcmp(dtype, "U32")) return 4;
    if (!strcmp(dtype, "F16") || !strcmp(dtype, "BF16") || !strcmp(dtype, "I16") ||
        !strcmp(dtype, "U16"))
        return 2;
    return 1;
}

/* ------------------------------------------------------------ round trip */

/* Element i of every tensor below is value(i) converted to the dtype, so
 * Python can check the values with the same formula. */
static double value(size_t i) { return (double)(i % 7) * 1.5 - 3.0 + (double)i; }

typedef struct spec {
    const char *name, *dtype;
    int rank;
    int64_t shape[LCA_MAX_RANK];
} spec;

static const spec specs[] = {
    {"fc1.weight", "F32", 2, {3, 4}},
    {"fc1.bias", "F64", 1, {5}},
    {"odd.bytes", "U8", 1, {7}},      /* 7 bytes: the next tensor is unaligned */
    {"steps", "I32", 1, {3}},
    {"counts", "I64", 3, {2, 2, 2}},
    {"scalar", "F32", 0, {0}},
    {"empty", "U16", 2, {0, 3}},
    {"mask", "BOOL", 1, {3}},
    {"half", "F16", 4, {2, 1, 1, 3}},
    {"brain", "BF16", 1, {2}},
    {"small", "I8", 1, {4}},
    {"short", "I16", 4, {1, 1, 2, 2}},
    {"unsigned", "U32", 1, {2}},
    {"wide", "U64", 2, {1, 2}},
    {"héllo \"quoted\" \\ / \t ✓ 𝄞", "F32", 1, {2}},
};
enum { SPEC_COUNT = sizeof specs / sizeof specs[0] };

static void fill(const spec *s, void *out, size_t elements) {
    for (size_t i = 0; i < elements; i++) {
        double v = value(i);
        const char *d = s->dtype;
        if (!strcmp(d, "F32")) ((float *)out)[i] = (float)v;
        else if (!strcmp(d, "F64")) ((double *)out)[i] = v;
        else if (!strcmp(d, "U8")) ((uint8_t *)out)[i] = (uint8_t)(i * 37);
        else if (!strcmp(d, "I32")) ((int32_t *)out)[i] = (int32_t)(v * -1000);
        else if (!strcmp(d, "I64")) ((int64_t *)out)[i] = (int64_t)(v * 1e12);
        else if (!strcmp(d, "U16")) ((uint16_t *)out)[i] = (uint16_t)i;
        else if (!strcmp(d, "BOOL")) ((uint8_t *)out)[i] = (uint8_t)(i % 2);
        else if (!strcmp(d, "F16")) ((uint16_t *)out)[i] = (uint16_t)(0x3C00 + i); /* 1.0, … */
        else if (!strcmp(d, "BF16")) ((uint16_t *)out)[i] = (uint16_t)(0x3F80 + i);
        else if (!strcmp(d, "I8")) ((int8_t *)out)[i] = (int8_t)(-(int)i * 30);
        else if (!strcmp(d, "I16")) ((int16_t *)out)[i] = (int16_t)(-(int)i * 3000);
        else if (!strcmp(d, "U32")) ((uint32_t *)out)[i] = 4000000000u + (uint32_t)i;
        else if (!strcmp(d, "U64")) ((uint64_t *)out)[i] = 18000000000000000000u + i;
    }
}

static size_t elements_of(const spec *s) {
    size_t n = 1;
    for (int d = 0; d < s->rank; d++) n *= (size_t)s->shape[d];
    return n;
}

static const char *meta_keys[] = {"lca.model", "lca.iteration", "quote\"back\\slash",
                                  "control\x01\x1f", "unicode"};
static const char *meta_values[] = {"784-100-50-10", "1200", "line\nbreak\ttab\r\b\f",
                                    "", "é ✓ 𝄞"};
enum { META_COUNT = sizeof meta_keys / sizeof meta_keys[0] };

static void *tensor_data[SPEC_COUNT];

static lca_status write_sample(const char *path) {
    lca_st_tensor tensors[SPEC_COUNT];
    for (int t = 0; t < SPEC_COUNT; t++) {
        size_t n = elements_of(&specs[t]);
        size_t bytes = n * dtype_size(specs[t].dtype);
        if (!tensor_data[t]) {
            tensor_data[t] = calloc(1, bytes + 8);
            fill(&specs[t], tensor_data[t], n);
        }
        tensors[t] = (lca_st_tensor){specs[t].name, specs[t].dtype, specs[t].rank, {0},
                                     tensor_data[t], bytes};
        memcpy(tensors[t].shape, specs[t].shape, sizeof specs[t].shape);
    }
    return lca_safetensors_write(path, tensors, SPEC_COUNT, meta_keys, meta_values, META_COUNT);
}

static void test_round_trip(void) {
    const char *path = test_temp_path("sample.safetensors");
    lca_status status = write_sample(path);
    CHECK(status == LCA_OK, "write: %s", lca_last_error());
    CHECK(!file_exists(test_temp_path("sample.safetensors.tmp")), "temporary file left behind");

    /* Layout: header length, padding to 8, data packed in order. */
    size_t n = 0;
    uint8_t *raw = test_read_bytes(path, &n);
    uint64_t header = 0;
    for (int i = 0; i < 8; i++) header |= (uint64_t)raw[i] << (8 * i);
    size_t data_bytes = 0;
    for (int t = 0; t < SPEC_COUNT; t++)
        data_bytes += elements_of(&specs[t]) * dtype_size(specs[t].dtype);
    CHECK((8 + header) % 8 == 0, "data area starts at %llu", (unsigned long long)(8 + header));
    CHECK(n == 8 + header + data_bytes, "file size %zu, expected 8 + %llu + %zu", n,
          (unsigned long long)header, data_bytes);
    CHECK(raw[8] == '{' && (raw[8 + header - 1] == ' ' || raw[8 + header - 1] == '}'),
          "header does not look like padded JSON");
    size_t at = 8 + (size_t)header;
    int misplaced = 0;
    for (int t = 0; t < SPEC_COUNT; t++) {
        size_t bytes = elements_of(&specs[t]) * dtype_size(specs[t].dtype);
        if (memcmp(raw + at, tensor_data[t], bytes) != 0) misplaced++;
        at += bytes;
    }
    CHECK(misplaced == 0, "%d tensors not packed in order", misplaced);
    free(raw);

    lca_safetensors *file = NULL;
    status = lca_safetensors_read(&file, path);
    CHECK(status == LCA_OK, "read: %s", lca_last_error());
    if (status != LCA_OK) return;
    CHECK(lca_safetensors_count(file) == SPEC_COUNT, "count %zu", lca_safetensors_count(file));
    CHECK(strcmp(lca_safetensors_path(file), path) == 0, "path %s", lca_safetensors_path(file));
    int wrong = 0;
    for (int t = 0; t < SPEC_COUNT && t < (int)lca_safetensors_count(file); t++) {
        const lca_st_tensor *x = lca_safetensors_tensor(file, (size_t)t);
        const spec *s = &specs[t];
        size_t bytes = elements_of(s) * dtype_size(s->dtype);
        bool same = strcmp(x->name, s->name) == 0 && strcmp(x->dtype, s->dtype) == 0 &&
                    x->rank == s->rank && x->bytes == bytes &&
                    (bytes == 0 || memcmp(x->data, tensor_data[t], bytes) == 0);
        for (int d = 0; d < s->rank; d++) same = same && x->shape[d] == s->shape[d];
        if (bytes) same = same && (uintptr_t)x->data % dtype_size(s->dtype) == 0;
        same = same && lca_safetensors_find(file, s->name) == x;
        if (!same) {
            wrong++;
            printf("tensor %d \"%s\" differs after the round trip\n", t, s->name);
        }
    }
    CHECK(wrong == 0, "%d tensors differ", wrong);
    for (int m = 0; m < META_COUNT; m++) {
        const char *v = lca_safetensors_metadata(file, meta_keys[m]);
        CHECK(v && strcmp(v, meta_values[m]) == 0, "metadata %s = %s", meta_keys[m],
              v ? v : "(missing)");
    }
    CHECK(lca_safetensors_find(file, "nope") == NULL, "found a tensor that is not there");
    CHECK(lca_safetensors_metadata(file, "nope") == NULL, "found metadata that is not there");
    CHECK(lca_safetensors_tensor(file, SPEC_COUNT) == NULL, "index past the end");
    lca_safetensors_free(file);
    printf("round trip: %d tensors (ranks 0-4; F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 "
           "BOOL; empty; unaligned offsets realigned) and %d escaped metadata entries\n",
           SPEC_COUNT, META_COUNT);

    /* Empty files and files without metadata. */
    CHECK(lca_safetensors_write(test_temp_path("empty.safetensors"), NULL, 0, NULL, NULL, 0) ==
              LCA_OK, "write empty: %s", lca_last_error());
    CHECK(lca_safetensors_read(&file, test_temp_path("empty.safetensors")) == LCA_OK &&
              lca_safetensors_count(file) == 0, "read empty: %s", lca_last_error());
    lca_safetensors_free(file);

    /* Invalid writes: nothing is created. */
    float one = 1;
    lca_st_tensor dup[2] = {{"a", "F32", 1, {1}, &one, 4}, {"a", "F32", 1, {1}, &one, 4}};
    const char *bad_path = test_temp_path("invalid.safetensors");
    CHECK(lca_safetensors_write(bad_path, dup, 2, NULL, NULL, 0) == LCA_ERR_INVALID_ARGUMENT,
          "duplicate names accepted");
    dup[1].name = "b";
    dup[1].bytes = 8;
    CHECK(lca_safetensors_write(bad_path, dup, 2, NULL, NULL, 0) == LCA_ERR_INVALID_ARGUMENT,
          "shape × dtype ≠ bytes accepted");
    dup[1].bytes = 4;
    dup[1].dtype = "F31";
    CHECK(lca_safetensors_write(bad_path, dup, 2, NULL, NULL, 0) == LCA_ERR_INVALID_ARGUMENT,
          "unknown dtype accepted");
    dup[1].dtype = "F32";
    dup[1].name = "__metadata__";
    CHECK(lca_safetensors_write(bad_path, dup, 2, NULL, NULL, 0) == LCA_ERR_INVALID_ARGUMENT,
          "tensor named __metadata__ accepted");
    dup[1].name = "\xff\xfe";
    CHECK(lca_safetensors_write(bad_path, dup, 2, NULL, NULL, 0) == LCA_ERR_INVALID_ARGUMENT,
          "invalid UTF-8 name accepted");
    const char *same_keys[2] = {"k", "k"}, *two_values[2] = {"1", "2"};
    CHECK(lca_safetensors_write(bad_path, dup, 1, same_keys, two_values, 2) ==
              LCA_ERR_INVALID_ARGUMENT, "duplicate metadata keys accepted");
    CHECK(!file_exists(bad_path) && !file_exists(test_temp_path("invalid.safetensors.tmp")),
          "an invalid write created a file");
}

/* ------------------------------------------------------------------ Python */

static const char python_reader[] =
    "import json, sys\n"
    "import numpy as np\n"
    "raw = open(sys.argv[1], 'rb').read()\n"
    "n = int.from_bytes(raw[:8], 'little')\n"
    "assert (8 + n) % 8 == 0, 'data area not 8-aligned'\n"
    "header = json.loads(raw[8:8 + n].decode('utf-8'))\n"
    "data = raw[8 + n:]\n"
    "meta = header.pop('__metadata__')\n"
    "assert meta['lca.model'] == '784-100-50-10', meta\n"
    "assert meta['unicode'] == '\\u00e9 \\u2713 \\U0001d11e', meta['unicode']\n"
    "assert meta['quote\"back\\\\slash'] == 'line\\nbreak\\ttab\\r\\b\\f'\n"
    "assert meta['control\\x01\\x1f'] == ''\n"
    "types = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'BF16': '<u2', 'I64': '<i8',\n"
    "         'I32': '<i4', 'I16': '<i2', 'I8': 'i1', 'U64': '<u8', 'U32': '<u4',\n"
    "         'U16': '<u2', 'U8': 'u1', 'BOOL': '?'}\n"
    "order = sorted(header, key=lambda k: header[k]['data_offsets'][0])\n"
    "end = 0\n"
    "for name in order:\n"
    "    t = header[name]\n"
    "    b, e = t['data_offsets']\n"
    "    assert b == end, (name, b, end)\n"
    "    end = e\n"
    "    a = np.frombuffer(data[b:e], dtype=types[t['dtype']]).reshape(t['shape'])\n"
    "    i = np.arange(a.size)\n"
    "    v = (i % 7) * 1.5 - 3.0 + i\n"
    "    if t['dtype'] in ('F32', 'F64'): assert np.array_equal(a.ravel(), v.astype(a.dtype)), name\n"
    "    if t['dtype'] == 'I64': assert np.array_equal(a.ravel(), (v * 1e12).astype(np.int64)), name\n"
    "    if t['dtype'] == 'I32': assert np.array_equal(a.ravel(), (v * -1000).astype(np.int32)), name\n"
    "    if t['dtype'] == 'U64': assert int(a.ravel()[1]) == 18000000000000000001, name\n"
    "    if t['dtype'] == 'F16': assert a.ravel()[0] == 1.0, name\n"
    "    if t['dtype'] == 'BOOL': assert a.tolist() == [False, True, False], name\n"
    "assert end == len(data), (end, len(data))\n"
    "assert 'h\\u00e9llo \"quoted\" \\\\ / \\t \\u2713 \\U0001d11e' in header, list(header)\n"
    "assert header['fc1.weight']['shape'] == [3, 4] and header['scalar']['shape'] == []\n"
    "print('python: read', len(header), 'tensors and', len(meta), 'metadata entries')\n";

/* Written by Python the way other tools do it: no padding, tensors not in
 * offset order, an unaligned F32, non-ASCII escaped as \\uXXXX, a gap. */
static const char python_writer[] =
    "import json, sys\n"
    "import numpy as np\n"
    "w = np.arange(6, dtype='<f4').reshape(2, 3) / 4\n"
    "b = np.array([1, 2, 3], dtype='u1')\n"
    "d = np.array([-1.5, 2.25], dtype='<f8')\n"
    "data = b.tobytes() + w.tobytes() + b'\\0' + d.tobytes()\n"
    "header = {'weight': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [3, 27]},\n"
    "          'bytes': {'dtype': 'U8', 'shape': [3], 'data_offsets': [0, 3]},\n"
    "          'caf\\u00e9': {'dtype': 'F64', 'shape': [2], 'data_offsets': [28, 44]},\n"
    "          '__metadata__': {'format': 'pt', 'note': 'snow \\u2603'}}\n"
    "h = json.dumps(header, ensure_ascii=True).encode()\n"
    "open(sys.argv[1], 'wb').write(len(h).to_bytes(8, 'little') + h + data)\n";

static void test_python(void) {
    if (system("python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
        printf("SKIP python interoperability: python3 with numpy is not available\n");
        return;
    }
    const char *script = test_temp_path("reader.py");
    test_write_bytes(script, python_reader, sizeof python_reader - 1);
    char command[2048];
    snprintf(command, sizeof command, "python3 %s %s", script, test_temp_path("sample.safetensors"));
    int rc = system(command);
    CHECK(rc == 0, "python could not read the file written here (exit %d)", rc);
    remove(script);

    script = test_temp_path("writer.py");
    test_write_bytes(script, python_writer, sizeof python_writer - 1);
    const char *path = test_temp_path("python.safetensors");
    snprintf(command, sizeof command, "python3 %s %s", script, path);
    rc = system(command);
    CHECK(rc == 0, "python writer failed (exit %d)", rc);
    remove(script);
    lca_safetensors *file = NULL;
    lca_status status = lca_safetensors_read(&file, path);
    CHECK(status == LCA_OK, "reading python's file: %s", lca_last_error());
    if (status == LCA_OK) {
        const lca_st_tensor *w = lca_safetensors_find(file, "weight");
        const lca_st_tensor *d = lca_safetensors_find(file, "caf\xc3\xa9");
        const lca_st_tensor *b = lca_safetensors_find(file, "bytes");
        CHECK(w && w->rank == 2 && w->shape[0] == 2 && w->shape[1] == 3 && w->bytes == 24 &&
                  (uintptr_t)w->data % 4 == 0 && ((const float *)w->data)[5] == 1.25f,
              "python's F32 tensor");
        CHECK(d && ((const double *)d->data)[0] == -1.5 && ((const double *)d->data)[1] == 2.25,
              "python's F64 tensor under an escaped name");
        CHECK(b && ((const uint8_t *)b->data)[2] == 3, "python's U8 tensor");
        const char *note = lca_safetensors_metadata(file, "note");
        CHECK(note && strcmp(note, "snow \xe2\x98\x83") == 0, "metadata \\u2603: %s",
              note ? note : "(missing)");
        CHECK(lca_safetensors_count(file) == 3 &&
                  strcmp(lca_safetensors_tensor(file, 0)->name, "weight") == 0,
              "header order not kept");
        lca_safetensors_free(file);
    }
    remove(path);
    printf("python: numpy reads our file; we read python's (unpadded, unaligned, \\u escapes, "
           "a gap)\n");
}

/* ---------------------------------------------------------- corrupt files */

/* A file: 8-byte length (or forced_length if not 0), header text, data
 * zero bytes. */
static void write_st(const char *path, const char *header, size_t data, uint64_t forced_length) {
    size_t h = strlen(header);
    uint64_t length = forced_length ? forced_length : h;
    uint8_t *bytes = calloc(1, 8 + h + data);
    for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)(length >> (8 * i));
    memcpy(bytes + 8, header, h);
    test_write_bytes(path, bytes, 8 + h + data);
    free(bytes);
}

typedef struct st_case {
    const char *what;
    const char *header;
    size_t data;
    uint64_t forced_length;
    lca_status expect;
} st_case;

#define T(dtype, shape, b, e) \
    "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_corrupt(void) {
    static const st_case cases[] = {
        {"header length past the end", "{}", 0, 400, LCA_ERR_FORMAT},
        {"header length over 100 MB", "{}", 0, 200000000, LCA_ERR_FORMAT},
        {"not an object", "[]", 0, 0, LCA_ERR_FORMAT},
        {"missing closing brace", "{\"a\":" T("U8", "[1]", 0, 1), 1, 0, LCA_ERR_FORMAT},
        {"trailing comma", "{\"a\":" T("U8", "[1]", 0, 1) ",}", 1, 0, LCA_ERR_FORMAT},
        {"trailing garbage", "{} x", 0, 0, LCA_ERR_FORMAT},
        {"two objects", "{}{}", 0, 0, LCA_ERR_FORMAT},
        {"NUL padding", "{}\0\0", 0, 4, LCA_ERR_FORMAT},
        {"unterminated string", "{\"a", 0, 0, LCA_ERR_FORMAT},
        {"bad escape", "{\"a\\q\":" T("U8", "[1]", 0, 1) "}", 1, 0, LCA_ERR_FORMAT},
        {"short \\u escape", "{\"a\\u12\":{}}", 0, 0, LCA_ERR_FORMAT},
        {"lone low surrogate", "{\"\\udc00\":{}}", 0, 0, LCA_ERR_FORMAT},
        {"high surrogate alone", "{\"\\ud800x\":{}}", 0, 0, LCA_ERR_FORMAT},
        {"\\u0000 in a name", "{\"a\\u0000\":" T("U8", "[1]", 0, 1) "}", 1, 0,
         LCA_ERR_UNSUPPORTED},
        {"raw control character", "{\"a\tb\":" T("U8", "[1]", 0, 1) "}", 1, 0, LCA_ERR_FORMAT},
        {"invalid UTF-8", "{\"\xc3\x28\":" T("U8", "[1]", 0, 1) "}", 1, 0, LCA_ERR_FORMAT},
        {"overlong UTF-8", "{\"\xc0\xaf\":" T("U8", "[1]", 0, 1) "}", 1, 0, LCA_ERR_FORMAT},
        {"UTF-8 surrogate", "{\"\xed\xa0\x80\":" T("U8", "[1]", 0, 1) "}", 1, 0,
         LCA_ERR_FORMAT},
        {"leading zero", "{\"a\":" T("U8", "[01]", 0, 1) "}", 1, 0, LCA_ERR_FORMAT},
        {"fractional offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}",
         1, 0, LCA_ERR_FORMAT},
        {"negative dimension", "{\"a\":" T("U8", "[-1]", 0, 1) "}", 1, 0, LCA_ERR_FORMAT},
        {"offset above 2^64", "{\"a\":" T("U8", "[1]", 0, 18446744073709551616) "}", 1, 0,
         LCA_ERR_FORMAT},
        {"three data_offsets",
         "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1, 0,
         LCA_ERR_FORMAT},
        {"tensor entry not an object", "{\"a\":[1]}", 0, 0, LCA_ERR_FORMAT},
        {"unknown dtype", "{\"a\":" T("F31", "[1]", 0, 4) "}", 4, 0, LCA_ERR_FORMAT},
        {"dtype not a string", "{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}",
         4, 0, LCA_ERR_FORMAT},
        {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, 0,
         LCA_ERR_FORMAT},
        {"empty tensor entry", "{\"a\":{}}", 0, 0, LCA_ERR_FORMAT},
        {"key twice in an entry",
         "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         0, LCA_ERR_FORMAT},
        {"duplicate tensor names",
         "{\"a\":" T("U8", "[1]", 0, 1) ",\"b\":" T("U8", "[1]", 1, 2) ",\"a\":"
         T("U8", "[1]", 2, 3) "}", 3, 0, LCA_ERR_FORMAT},
        {"two __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, LCA_ERR_FORMAT},
        {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, 0,
         LCA_ERR_FORMAT},
        {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, 0, LCA_ERR_FORMAT},
        {"offsets past the data", "{\"a\":" T("F32", "[2]", 0, 8) "}", 4, 0, LCA_ERR_FORMAT},
        {"begin after end", "{\"a\":" T("U8", "[0]", 3, 2) "}", 4, 0, LCA_ERR_FORMAT},
        {"overlapping tensors",
         "{\"a\":" T("F32", "[2]", 0, 8) ",\"b\":" T("F32", "[2]", 4, 12) "}", 12, 0,
         LCA_ERR_FORMAT},
        {"identical ranges",
         "{\"a\":" T("U8", "[4]", 0, 4) ",\"b\":" T("U8", "[4]", 0, 4) "}", 4, 0,
         LCA_ERR_FORMAT},
        {"wrong byte length", "{\"a\":" T("F32", "[3]", 0, 8) "}", 8, 0, LCA_ERR_FORMAT},
        {"shape overflows",
         "{\"a\":" T("F64", "[4294967296,4294967296]", 0, 0) "}", 0, 0, LCA_ERR_FORMAT},
        {"rank 5", "{\"a\":" T("U8", "[1,1,1,1,1]", 0, 1) "}", 1, 0, LCA_ERR_UNSUPPORTED},
        {"nesting too deep",
         "{\"a\":{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
         "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
         ",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 0, LCA_ERR_FORMAT},
        {"bad literal", "{\"a\":{\"x\":nul,\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
         1, 0, LCA_ERR_FORMAT},
        {"bad number", "{\"a\":{\"x\":1.e5,\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
         1, 0, LCA_ERR_FORMAT},
    };
    const char *path = test_temp_path("corrupt.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const st_case *c = &cases[i];
        /* "NUL padding" carries its NULs in forced_length: write by hand. */
        if (strcmp(c->what, "NUL padding") == 0) {
            uint8_t bytes[12] = {4, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0};
            test_write_bytes(path, bytes, sizeof bytes);
        } else {
            write_st(path, c->header, c->data, c->forced_length);
        }
        lca_safetensors *file = NULL;
        lca_status status = lca_safetensors_read(&file, path);
        const char *message = lca_last_error();
        CHECK(status == c->expect && file == NULL && strstr(message, path) &&
                  strstr(message, "byte "),
              "%s: status %d (%s), message \"%s\"", c->what, status, lca_status_string(status),
              message);
        printf("corrupt: %-30s → %s\n", c->what, strstr(message, "byte ") ? strstr(message, "byte ")
                                                                           : message);
        lca_safetensors_free(file);
    }

    /* Short files. */
    for (size_t n = 0; n < 8; n++) {
        uint8_t bytes[8] = {2, 0, 0, 0, 0, 0, 0, 0};
        test_write_bytes(path, bytes, n);
        lca_safetensors *file = NULL;
        lca_status status = lca_safetensors_read(&file, path);
        CHECK(status == LCA_ERR_FORMAT && strstr(lca_last_error(), "byte "),
              "%zu-byte file: %d %s", n, status, lca_last_error());
    }
    printf("corrupt: files of 0-7 bytes → %s\n", lca_last_error());
    lca_safetensors *file = NULL;
    CHECK(lca_safetensors_read(&file, test_temp_path("missing.safetensors")) == LCA_ERR_IO,
          "missing file: %s", lca_last_error());
    CHECK(lca_safetensors_read(&file, test_temp_dir()) == LCA_ERR_IO, "folder: %s", lca_last_error());

    /* Valid oddities: whitespace, an unknown key, a gap, an empty tensor
     * inside another's range, an empty header. */
    static const char *valid[] = {
        " \t\r\n{ \"a\" : { \"shape\" : [ 2 ] , \"x\" : {\"y\": [true, false, null, -0.5e+3, "
        "\"s\"]}, \"data_offsets\" : [ 8 , 10 ], \"dtype\" : \"U8\" } , \"e\": "
        T("F32", "[0]", 9, 9) " }   ",
        "{}",
        "{\"__metadata__\":{}}",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        write_st(path, valid[i], 10, 0);
        lca_status status = lca_safetensors_read(&file, path);
        CHECK(status == LCA_OK, "valid header %zu rejected: %s", i, lca_last_error());
        if (status == LCA_OK && i == 0) {
            const lca_st_tensor *a = lca_safetensors_find(file, "a");
            CHECK(a && a->bytes == 2 && lca_safetensors_count(file) == 2, "valid header 0");
        }
        lca_safetensors_free(file);
        file = NULL;
    }
    printf("valid oddities (whitespace, unknown keys, gaps, empty tensors, empty header) "
           "are read\n");
}

/* Random mutations of the sample file: only OK, a format or an
 * unsupported error may come back, never a crash (run under ASan). */
static void test_mutations(void) {
    size_t n = 0;
    uint8_t *original = test_read_bytes(test_temp_path("sample.safetensors"), &n);
    if (!original) return;
    uint8_t *bytes = malloc(n + 16);
    const char *path = test_temp_path("mutant.safetensors");
    uint64_t state = 0x243F6A8885A308D3u;
    int ok = 0, format = 0, other = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(bytes, original, n);
        size_t m = n;
        state = state * 6364136223846793005u + 1442695040888963407u;
        int flips = 1 + (int)(state >> 61);
        for (int f = 0; f < flips; f++) {
            state = state * 6364136223846793005u + 1442695040888963407u;
            /* mostly the header, where the parser is */
            size_t limit = iter % 3 ? (n < 1200 ? n : 1200) : n;
            size_t at = (state >> 33) % limit;
            if (iter % 4 == 0) bytes[at] = (uint8_t)"{}[]\",:0123456789\\u eE.-"[(state >> 8) % 25];
            else bytes[at] ^= (uint8_t)(1u << ((state >> 20) % 8));
        }
        if (iter % 9 == 0) m = (size_t)(state >> 30) % n;
        test_write_bytes(path, bytes, m);
        lca_safetensors *file = NULL;
        lca_status status = lca_safetensors_read(&file, path);
        if (status == LCA_OK) {
            ok++;
            /* Touch every byte the reader handed out. */
            unsigned sum = 0;
            for (size_t t = 0; t < lca_safetensors_count(file); t++) {
                const lca_st_tensor *x = lca_safetensors_tensor(file, t);
                for (size_t b = 0; b < x->bytes; b++) sum += ((const uint8_t *)x->data)[b];
                sum += (unsigned)strlen(x->name);
            }
            (void)sum;
        } else if ((status == LCA_ERR_FORMAT || status == LCA_ERR_UNSUPPORTED) &&
                   strstr(lca_last_error(), "byte ")) {
            format++;
        } else {
            other++;
            printf("mutant %d: status %d: %s\n", iter, status, lca_last_error());
        }
        lca_safetensors_free(file);
    }
    CHECK(other == 0, "%d mutants gave an unexpected status", other);
    printf("mutations: 3000 mutated files: %d read, %d clear format errors, %d other\n", ok,
           format, other);
    remove(path);
    free(bytes);
    free(original);
}

/* ---------------------------------------------------------- atomic writes */

static bool same_file(const char *path, const uint8_t *bytes, size_t n) {
    size_t m = 0;
    uint8_t *now = test_read_bytes(path, &m);
    bool same = now && m == n && memcmp(now, bytes, n) == 0;
    free(now);
    return same;
}

static void test_atomic(void) {
    const char *path = test_temp_path("keep.safetensors");
    const char *tmp = test_temp_path("keep.safetensors.tmp");
    CHECK(write_sample(path) == LCA_OK, "%s", lca_last_error());
    size_t old_n = 0;
    uint8_t *old = test_read_bytes(path, &old_n);

    /* A big file that cannot be written completely. */
    size_t big_n = 1 << 20;
    float *big = calloc(big_n, sizeof(float));
    lca_st_tensor tensor = {"big", "F32", 1, {(int64_t)big_n}, big, big_n * sizeof(float)};

    /* 1. The write fails midway: a file-size limit (EFBIG) hits after
     * 64 KiB of the 4 MiB. */
    struct rlimit saved, limit;
    getrlimit(RLIMIT_FSIZE, &saved);
    limit = saved;
    limit.rlim_cur = 64 * 1024;
    void (*previous)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &limit) == 0) {
        lca_status status = lca_safetensors_write(path, &tensor, 1, NULL, NULL, 0);
        setrlimit(RLIMIT_FSIZE, &saved);
        CHECK(status == LCA_ERR_IO, "write over the size limit: status %d", status);
        CHECK(same_file(path, old, old_n), "old file changed by a write that failed midway");
        CHECK(!file_exists(tmp), "temporary file left behind after a failed write");
        printf("atomic: write failing midway (file-size limit) → %s\n", lca_last_error());
    } else {
        printf("SKIP atomic (file-size limit): setrlimit failed: %s\n", strerror(errno));
    }
    signal(SIGXFSZ, previous);

    /* 2. path.tmp cannot be created (a folder is in its way). */
    mkdir(tmp, 0755);
    lca_status status = lca_safetensors_write(path, &tensor, 1, NULL, NULL, 0);
    CHECK(status == LCA_ERR_IO, "write with a folder at path.tmp: status %d", status);
    CHECK(same_file(path, old, old_n), "old file changed");
    rmdir(tmp);
    printf("atomic: temporary file cannot be created → %s\n", lca_last_error());

    /* 3. The destination is a folder: the rename fails after a complete
     * write; the temporary file is removed. */
    const char *folder_path = test_temp_path("a-folder");
    mkdir(folder_path, 0755);
    status = lca_safetensors_write(folder_path, &tensor, 1, NULL, NULL, 0);
    CHECK(status == LCA_ERR_IO, "write over a folder: status %d", status);
    char folder_tmp[600];
    snprintf(folder_tmp, sizeof folder_tmp, "%s.tmp", folder_path);
    CHECK(!file_exists(folder_tmp), "temporary file left behind after a failed rename");
    rmdir(folder_path);
    printf("atomic: rename fails → %s\n", lca_last_error());

    /* 4. A read-only folder (root ignores permissions: skipped then). */
    const char *ro = test_temp_path("read-only");
    mkdir(ro, 0755);
    char ro_file[600];
    snprintf(ro_file, sizeof ro_file, "%s/keep.safetensors", ro);
    test_write_bytes(ro_file, old, old_n);
    chmod(ro, 0555);
    if (geteuid() == 0) {
        printf("SKIP atomic (read-only folder): running as root, which may write anyway\n");
    } else {
        status = lca_safetensors_write(ro_file, &tensor, 1, NULL, NULL, 0);
        CHECK(status == LCA_ERR_IO, "write into a read-only folder: status %d", status);
        CHECK(same_file(ro_file, old, old_n), "old file in the read-only folder changed");
        printf("atomic: read-only folder → %s\n", lca_last_error());
    }
    chmod(ro, 0755);
    remove(ro_file);
    rmdir(ro);

    /* And the successful overwrite replaces the file completely. */
    CHECK(lca_safetensors_write(path, &tensor, 1, NULL, NULL, 0) == LCA_OK, "%s",
          lca_last_error());
    lca_safetensors *file = NULL;
    CHECK(lca_safetensors_read(&file, path) == LCA_OK && lca_safetensors_count(file) == 1 &&
              lca_safetensors_find(file, "big")->bytes == big_n * 4,
          "overwrite: %s", lca_last_error());
    lca_safetensors_free(file);
    remove(path);
    free(big);
    free(old);
}

/* ------------------------------------------- conversion to F32 on load */

/* A file: 8-byte length, header text, then the n data bytes. */
static void write_st_data(const char *path, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    uint8_t *bytes = calloc(1, 8 + h + n);
    for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(bytes + 8, header, h);
    if (n) memcpy(bytes + 8 + h, data, n);
    test_write_bytes(path, bytes, 8 + h + n);
    free(bytes);
}

static uint32_t float_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* binary16 and bfloat16 by their definition, in double arithmetic (not by
 * moving bits as the core does): (−1)^s × 2^(e − bias) × (1 + m / 2^p), or
 * × 2^(1 − bias) × (m / 2^p) for e = 0. Exact: every value fits a double. */
static double reference_half(uint16_t h, bool bf16) {
    int mantissa_bits = bf16 ? 7 : 10, bias = bf16 ? 127 : 15;
    int e = (h >> mantissa_bits) & (bf16 ? 0xFF : 0x1F);
    double m = (double)(h & ((1u << mantissa_bits) - 1)) / (double)(1u << mantissa_bits);
    double v = e == 0 ? ldexp(m, 1 - bias) : ldexp(1.0 + m, e - bias);
    return (h & 0x8000) ? -v : v;
}

/* Every finite F16 and BF16 bit pattern converts exactly (±0 keep their
 * sign, subnormals included); every Inf and NaN pattern fails. */
static void test_half_exhaustive(void) {
    for (int bf = 0; bf < 2; bf++) {
        const char *dtype = bf ? "BF16" : "F16";
        static uint16_t patterns[65536];
        static float out[65536];
        size_t finite = 0;
        for (uint32_t h = 0; h < 65536; h++) {
            bool special = bf ? (h & 0x7F80) == 0x7F80 : (h & 0x7C00) == 0x7C00;
            if (!special) patterns[finite++] = (uint16_t)h;
        }
        lca_st_tensor t = {.name = "all", .dtype = dtype, .rank = 1, .shape = {(int64_t)finite},
                           .data = patterns, .bytes = 2 * finite};
        size_t rounded = 99;
        lca_status status = lca_safetensors_to_f32(NULL, &t, out, &rounded);
        CHECK(status == LCA_OK && rounded == 0, "%s: status %d, rounded %zu: %s", dtype, status,
              rounded, lca_last_error());
        size_t wrong = 0, subnormal = 0;
        for (size_t i = 0; status == LCA_OK && i < finite; i++) {
            double want = reference_half(patterns[i], bf);
            bool same = (double)out[i] == want && signbit(out[i]) == ((patterns[i] & 0x8000) != 0);
            if (!same && wrong++ < 3)
                printf("  %s 0x%04x: got %a, expected %a\n", dtype, patterns[i], out[i], want);
            if (want != 0 && fabs(want) < (bf ? 0x1p-126 : 0x1p-14)) subnormal++;
        }
        CHECK(wrong == 0, "%s: %zu of %zu values differ from the definition", dtype, wrong, finite);
        printf("conversion: %zu finite %s patterns (%zu subnormal, ±0) exact; worst difference 0\n",
               finite, dtype, subnormal);
        /* each Inf / NaN pattern, alone and after finite values, fails naming the element */
        const uint16_t specials[][2] = {{0x7C00, 0xFC00}, {0x7F80, 0xFF80}};
        const uint16_t nans[] = {bf ? 0x7FC0 : 0x7E00, bf ? 0xFF81 : 0xFC01};
        uint16_t bad[3] = {0x3C00, 0, 0};
        for (int k = 0; k < 4; k++) {
            bad[2] = k < 2 ? specials[bf][k] : nans[k - 2];
            lca_st_tensor b = {.name = "w", .dtype = dtype, .rank = 1, .shape = {3}, .data = bad,
                               .bytes = 6};
            status = lca_safetensors_to_f32(NULL, &b, out, NULL);
            const char *want = k == 0 ? "+Inf" : k == 1 ? "-Inf" : "NaN";
            CHECK(status == LCA_ERR_NUMERIC && strstr(lca_last_error(), "\"w\"") &&
                      strstr(lca_last_error(), "element 2") && strstr(lca_last_error(), want),
                  "%s 0x%04x: status %d: %s", dtype, bad[2], status, lca_last_error());
        }
        printf("conversion: %s Inf/NaN → %s\n", dtype, lca_last_error());
    }
}

/* F64 → F32: round to nearest, ties to even, the count of changed values;
 * out of range and non-finite fail. Expected values written as hex floats. */
static void test_f64(void) {
    const double in[] = {0.0, -0.0, 0.5, -3.0, 0.1, 1.0 + 0x1p-24, 1.0 + 3 * 0x1p-24,
                         0x1.fffffep127, 0x1.ffffffp127 - 0x1p75, 0x1p-149, 0x1p-150 * 3, 1e-50,
                         -1e-50};
    const float want[] = {0.0f, -0.0f, 0.5f, -3.0f, 0x1.99999ap-4f, 1.0f, 1.0f + 0x1p-22f,
                          0x1.fffffep127f, 0x1.fffffep127f, 0x1p-149f, 0x1p-148f, 0.0f, -0.0f};
    enum { N = sizeof in / sizeof in[0] };
    /* changed: 0.1, the two ties... 1+2^-24 (tie → even 1), 1+3·2^-24 (tie → even),
     * just below the overflow threshold, 3·2^-150 (tie → 2^-148), ±1e-50 */
    const size_t want_rounded = 7;
    float out[N];
    lca_st_tensor t = {.name = "w", .dtype = "F64", .rank = 1, .shape = {N}, .data = in,
                       .bytes = sizeof in};
    size_t rounded = 0;
    lca_status status = lca_safetensors_to_f32(NULL, &t, out, &rounded);
    CHECK(status == LCA_OK, "F64: %s", lca_last_error());
    size_t wrong = 0;
    for (int i = 0; status == LCA_OK && i < N; i++)
        if (float_bits(out[i]) != float_bits(want[i])) {
            wrong++;
            printf("  F64 %a: got %a, expected %a\n", in[i], out[i], want[i]);
        }
    CHECK(wrong == 0 && rounded == want_rounded, "F64: %zu wrong, %zu rounded (expected %zu)",
          wrong, rounded, want_rounded);
    printf("conversion: %d F64 values (ties, subnormal and FLT_MAX edges) as expected, %zu "
           "rounded\n", N, rounded);
    const double bad[] = {0x1.ffffffp127, -0x1.ffffffp127, 1e300, INFINITY, -INFINITY, NAN};
    const char *says[] = {"outside F32", "outside F32", "outside F32", "+Inf", "-Inf", "NaN"};
    for (int k = 0; k < 6; k++) {
        double values[2] = {1.0, bad[k]};
        lca_st_tensor b = {.name = "fc2.bias", .dtype = "F64", .rank = 1, .shape = {2},
                           .data = values, .bytes = sizeof values};
        status = lca_safetensors_to_f32(NULL, &b, out, NULL);
        CHECK(status == LCA_ERR_NUMERIC && strstr(lca_last_error(), "\"fc2.bias\"") &&
                  strstr(lca_last_error(), "element 1") && strstr(lca_last_error(), says[k]),
              "F64 %a: status %d: %s", bad[k], status, lca_last_error());
        if (k == 0) printf("conversion: F64 out of range → %s\n", lca_last_error());
    }
    lca_st_tensor i32 = {.name = "w", .dtype = "I32", .rank = 1, .shape = {1}, .data = out,
                         .bytes = 4};
    status = lca_safetensors_to_f32(NULL, &i32, out, NULL);
    CHECK(status == LCA_ERR_MISMATCH && strstr(lca_last_error(), "I32"), "I32: %s",
          lca_last_error());
}

static bool contains(const char *text, const char *part) { return strstr(text, part) != NULL; }

/* Checkpoints as PyTorch writes them: no lca metadata, F16 / BF16 / F64
 * tensors, other names. Files are built by hand here. Model "4-3-2":
 * fc1.weight (3, 4), fc1.bias (3), fc2.weight (2, 3), fc2.bias (2). */
static void test_foreign_checkpoints(void) {
    lca_model *model = NULL;
    CHECK(lca_model_new(&model, "4-3-2", LCA_LOSS_SOFTMAX_CROSS_ENTROPY) == LCA_OK, "%s",
          lca_last_error());
    if (!model) return;
    const size_t K = lca_model_parameter_count(model);
    float *params = lca_model_parameters(model);
    const char *path = test_temp_path("foreign.safetensors");

    /* F16 weights (with a subnormal and −0), BF16 bias, F64 second layer, no metadata */
    const uint16_t w1[12] = {0x3C00, 0x8000, 0x0001, 0x03FF, 0x0400, 0xC000,
                             0x7BFF, 0x3555, 0x0000, 0xBC00, 0x3800, 0x1234};
    const uint16_t b1[3] = {0x3F80, 0xBF80, 0x0001};               /* 1, −1, 2^-133 */
    const double w2[6] = {0.1, -0.25, 1.0 + 0x1p-24, 3.0, -0.0, 1e-3};
    const double b2[2] = {0.5, 0x1p-30};
    uint8_t data[24 + 6 + 48 + 16];
    memcpy(data, w1, 24);
    memcpy(data + 24, b1, 6);
    memcpy(data + 30, w2, 48);   /* unaligned: the reader realigns */
    memcpy(data + 78, b2, 16);
    const char *header =
        "{\"fc1.weight\":" T("F16", "[3,4]", 0, 24) ",\"fc1.bias\":" T("BF16", "[3]", 24, 30)
        ",\"fc2.weight\":" T("F64", "[2,3]", 30, 78) ",\"fc2.bias\":" T("F64", "[2]", 78, 94)
        "}";
    write_st_data(path, header, data, sizeof data);

    /* no lca.model: the requested spec is used; without one, a clear error */
    char spec[256];
    lca_loss_kind loss = LCA_LOSS_MEAN_SQUARED_ERROR;
    lca_status status = lca_checkpoint_model_spec(path, NULL, spec, sizeof spec, &loss);
    CHECK(status == LCA_ERR_FORMAT && contains(lca_last_error(), "lca.model") &&
              contains(lca_last_error(), "--model"),
          "no metadata, no spec: status %d: %s", status, lca_last_error());
    printf("foreign: no metadata, no spec → %s\n", lca_last_error());
    status = lca_checkpoint_model_spec(path, "4-3-2", spec, sizeof spec, &loss);
    CHECK(status == LCA_OK && strcmp(spec, "4-3-2") == 0 &&
              loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY,
          "no metadata, spec given: status %d, spec %s: %s", status, spec, lca_last_error());
    status = lca_checkpoint_read_spec(path, spec, sizeof spec, NULL);
    CHECK(status == LCA_ERR_FORMAT, "read_spec without metadata: status %d", status);

    for (size_t i = 0; i < K; i++) params[i] = 42.0f;
    lca_checkpoint_report report;
    memset(&report, 0xFF, sizeof report);
    status = lca_checkpoint_load_report(path, model, &report);
    CHECK(status == LCA_OK, "load F16/BF16/F64: %s", lca_last_error());
    /* the model's order: fc1.weight, fc1.bias, fc2.weight, fc2.bias */
    float want[23];
    for (int i = 0; i < 12; i++) want[i] = (float)reference_half(w1[i], false);
    for (int i = 0; i < 3; i++) want[12 + i] = (float)reference_half(b1[i], true);
    for (int i = 0; i < 6; i++) want[15 + i] = (float)w2[i];
    for (int i = 0; i < 2; i++) want[21 + i] = (float)b2[i];
    CHECK(K == 23, "model 4-3-2 has %zu parameters", K);
    size_t wrong = 0;
    for (size_t i = 0; status == LCA_OK && i < K && i < 23; i++)
        if (float_bits(params[i]) != float_bits(want[i])) {
            wrong++;
            printf("  parameter %zu: got %a, expected %a\n", i, params[i], want[i]);
        }
    CHECK(wrong == 0, "foreign load: %zu parameters differ", wrong);
    CHECK(status == LCA_OK && report.iteration == 0 && report.f16_tensors == 1 &&
              report.bf16_tensors == 1 && report.f64_tensors == 2 && report.f64_values == 8 &&
              report.f64_rounded == 3,
          "report: iteration %llu, F16 %zu, BF16 %zu, F64 %zu (%zu values, %zu rounded)",
          (unsigned long long)report.iteration, report.f16_tensors, report.bf16_tensors,
          report.f64_tensors, report.f64_values, report.f64_rounded);
    printf("foreign: loaded F16 + BF16 + F64 bit-exactly as defined; report F16 %zu, BF16 %zu, "
           "F64 %zu (%zu of %zu values rounded)\n", report.f16_tensors, report.bf16_tensors,
           report.f64_tensors, report.f64_rounded, report.f64_values);

    /* a NaN in the last tensor: error naming it, model unchanged */
    float *before = malloc(K * sizeof *before);
    memcpy(before, params, K * sizeof *before);
    const double nan_bias[2] = {0.5, NAN};
    memcpy(data + 78, nan_bias, 16);
    write_st_data(path, header, data, sizeof data);
    status = lca_checkpoint_load(path, model, NULL);
    CHECK(status == LCA_ERR_NUMERIC && contains(lca_last_error(), "\"fc2.bias\"") &&
              contains(lca_last_error(), "NaN") && memcmp(before, params, K * 4) == 0,
          "NaN: status %d: %s", status, lca_last_error());
    printf("foreign: NaN → %s\n", lca_last_error());

    /* nn.Sequential names: an error with the expected and found names and a rename hint */
    const char *sequential =
        "{\"0.weight\":" T("F16", "[3,4]", 0, 24) ",\"0.bias\":" T("BF16", "[3]", 24, 30)
        ",\"2.weight\":" T("F64", "[2,3]", 30, 78) ",\"2.bias\":" T("F64", "[2]", 78, 94) "}";
    memcpy(data + 78, b2, 16);
    write_st_data(path, sequential, data, sizeof data);
    status = lca_checkpoint_load(path, model, NULL);
    const char *m = lca_last_error();
    CHECK(status == LCA_ERR_MISMATCH && contains(m, "fc1.weight (3, 4)") &&
              contains(m, "fc2.bias (2)") && contains(m, "4 tensors") &&
              contains(m, "0.weight (3, 4)") && contains(m, "2.bias (2)") &&
              contains(m, "{\"0.weight\": \"fc1.weight\"") && contains(m, "docs/checkpoints.md") &&
              memcmp(before, params, K * 4) == 0,
          "sequential names: status %d: %s", status, m);
    printf("foreign: nn.Sequential names → %s\n", m);

    /* an lca.model that does not parse is reported with the file and the key */
    const char *bad_meta =
        "{\"__metadata__\":{\"lca.model\":\"4-x-2\"},\"fc1.weight\":" T("F16", "[3,4]", 0, 24) "}";
    write_st_data(path, bad_meta, data, 24);
    status = lca_checkpoint_read_spec(path, spec, sizeof spec, NULL);
    CHECK(status != LCA_OK && contains(lca_last_error(), "foreign.safetensors: metadata lca.model: "),
          "unparsable lca.model: status %d: %s", status, lca_last_error());
    printf("foreign: unparsable lca.model → %s\n", lca_last_error());
    status = lca_checkpoint_model_spec(path, "4-3-2", spec, sizeof spec, NULL);
    CHECK(status != LCA_OK && contains(lca_last_error(), "metadata lca.model"),
          "unparsable lca.model with a requested spec: status %d: %s", status, lca_last_error());

    /* one name wrong: the example pair in the hint is that tensor's */
    const char *one_wrong =
        "{\"fc1.weight\":" T("F16", "[3,4]", 0, 24) ",\"fc1.bias\":" T("BF16", "[3]", 24, 30)
        ",\"fc2.weight\":" T("F64", "[2,3]", 30, 78) ",\"head.bias\":" T("F64", "[2]", 78, 94) "}";
    write_st_data(path, one_wrong, data, sizeof data);
    status = lca_checkpoint_load(path, model, NULL);
    CHECK(status == LCA_ERR_MISMATCH && contains(lca_last_error(), "has no tensor \"fc2.bias\"") &&
              contains(lca_last_error(), "{\"head.bias\": \"fc2.bias\""),
          "one wrong name: %s", lca_last_error());

    /* a wrong shape and an unconvertible dtype are named */
    const char *shaped =
        "{\"fc1.weight\":" T("F16", "[4,3]", 0, 24) ",\"fc1.bias\":" T("BF16", "[3]", 24, 30)
        ",\"fc2.weight\":" T("F64", "[2,3]", 30, 78) ",\"fc2.bias\":" T("F64", "[2]", 78, 94) "}";
    write_st_data(path, shaped, data, sizeof data);
    status = lca_checkpoint_load(path, model, NULL);
    CHECK(status == LCA_ERR_MISMATCH && contains(lca_last_error(), "(4, 3), expected (3, 4)"),
          "shape: %s", lca_last_error());
    const char *ints =
        "{\"fc1.weight\":" T("I16", "[3,4]", 0, 24) ",\"fc1.bias\":" T("BF16", "[3]", 24, 30)
        ",\"fc2.weight\":" T("F64", "[2,3]", 30, 78) ",\"fc2.bias\":" T("F64", "[2]", 78, 94) "}";
    write_st_data(path, ints, data, sizeof data);
    status = lca_checkpoint_load(path, model, NULL);
    CHECK(status == LCA_ERR_MISMATCH && contains(lca_last_error(), "I16"), "I16: %s",
          lca_last_error());
    CHECK(memcmp(before, params, K * 4) == 0, "failed loads changed the model");

    /* lca's own checkpoint: metadata and a requested spec must agree */
    lca_model_initialize(model, 7);
    memcpy(before, params, K * sizeof *before);
    CHECK(lca_checkpoint_save(path, model, 12) == LCA_OK, "%s", lca_last_error());
    status = lca_checkpoint_model_spec(path, "4-5-2", spec, sizeof spec, NULL);
    CHECK(status == LCA_ERR_MISMATCH && contains(lca_last_error(), "\"4-5-2\"") &&
              contains(lca_last_error(), "\"4-3-2\""),
          "disagreeing spec: status %d: %s", status, lca_last_error());
    printf("foreign: spec disagrees with metadata → %s\n", lca_last_error());
    status = lca_checkpoint_model_spec(path, NULL, spec, sizeof spec, NULL);
    CHECK(status == LCA_OK && strcmp(spec, "4-3-2") == 0, "metadata spec: %s", spec);
    status = lca_checkpoint_model_spec(path, "4-3-2", spec, sizeof spec, NULL);
    CHECK(status == LCA_OK && strcmp(spec, "4-3-2") == 0, "agreeing spec: %s", lca_last_error());
    lca_model *fc = NULL;
    CHECK(lca_model_new(&fc, "fc", LCA_LOSS_SOFTMAX_CROSS_ENTROPY) == LCA_OK, "fc");
    const char *fc_path = test_temp_path("fc.safetensors");
    CHECK(lca_checkpoint_save(fc_path, fc, 0) == LCA_OK, "%s", lca_last_error());
    status = lca_checkpoint_model_spec(fc_path, "784-100-50-10", spec, sizeof spec, NULL);
    CHECK(status == LCA_OK && strcmp(spec, lca_model_spec(fc)) == 0,
          "canonical forms compare equal: status %d, %s: %s", status, spec, lca_last_error());
    lca_model_free(fc);
    remove(fc_path);
    /* F32 files load bit for bit, and report no conversion */
    for (size_t i = 0; i < K; i++) params[i] = 0;
    status = lca_checkpoint_load_report(path, model, &report);
    CHECK(status == LCA_OK && memcmp(before, params, K * 4) == 0 && report.iteration == 12 &&
              report.f16_tensors + report.bf16_tensors + report.f64_tensors == 0,
          "own checkpoint: status %d: %s", status, lca_last_error());
    free(before);
    remove(path);
    lca_model_free(model);
}

/* Batch norm's running statistics convert too, extra tensors (PyTorch's
 * num_batches_tracked) are ignored, and a bad statistic leaves the model
 * as it was. The file: an lca checkpoint rewritten as F64 without metadata. */
static void test_foreign_batchnorm(void) {
    const char *spec = "input(1,4,4) conv(2,3) bn relu gap dense(2)";
    lca_model *model = NULL, *loaded = NULL;
    CHECK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY) == LCA_OK &&
              lca_model_new(&loaded, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY) == LCA_OK,
          "%s", lca_last_error());
    if (!model || !loaded) return;
    lca_model_initialize(model, 3);
    lca_layer *bn = NULL;
    for (size_t l = 0; l < model->layer_count; l++)
        if (model->layers[l].kind == LCA_LAYER_BATCHNORM) bn = &model->layers[l];
    CHECK(bn && bn->out_c == 2, "the model has a batch norm of 2 channels");
    if (!bn) return;
    bn->running_mean[0] = 0.1f, bn->running_mean[1] = -0.7f;
    bn->running_var[0] = 1.3f, bn->running_var[1] = 0.01f;
    const char *path = test_temp_path("bn.safetensors"), *f64_path = test_temp_path("bn64.safetensors");
    CHECK(lca_checkpoint_save(path, model, 5) == LCA_OK, "%s", lca_last_error());
    lca_safetensors *file = NULL;
    CHECK(lca_safetensors_read(&file, path) == LCA_OK, "%s", lca_last_error());
    if (!file) return;
    size_t n = lca_safetensors_count(file);
    lca_st_tensor *tensors = calloc(n + 1, sizeof *tensors);
    double *values[16] = {0};
    for (size_t i = 0; i < n && i < 16; i++) {
        tensors[i] = *lca_safetensors_tensor(file, i);
        size_t count = tensors[i].bytes / 4;
        values[i] = malloc(count * sizeof(double) + 1);
        for (size_t k = 0; k < count; k++) values[i][k] = ((const float *)tensors[i].data)[k];
        tensors[i].dtype = "F64";
        tensors[i].data = values[i];
        tensors[i].bytes = count * sizeof(double);
    }
    const int64_t tracked = 17;
    tensors[n] = (lca_st_tensor){.name = "bn1.num_batches_tracked", .dtype = "I64", .rank = 0,
                                 .data = &tracked, .bytes = 8};
    CHECK(lca_safetensors_write(f64_path, tensors, n + 1, NULL, NULL, 0) == LCA_OK, "%s",
          lca_last_error());
    lca_checkpoint_report report;
    lca_status status = lca_checkpoint_load_report(f64_path, loaded, &report);
    lca_layer *bn2 = NULL;
    for (size_t l = 0; l < loaded->layer_count; l++)
        if (loaded->layers[l].kind == LCA_LAYER_BATCHNORM) bn2 = &loaded->layers[l];
    size_t K = lca_model_parameter_count(model);
    CHECK(status == LCA_OK && memcmp(lca_model_parameters(model), lca_model_parameters(loaded),
                                     K * 4) == 0 &&
              memcmp(bn->running_mean, bn2->running_mean, 8) == 0 &&
              memcmp(bn->running_var, bn2->running_var, 8) == 0,
          "F64 batch-norm checkpoint: status %d: %s", status, lca_last_error());
    CHECK(status == LCA_OK && report.f64_tensors == n && report.f64_rounded == 0 &&
              report.iteration == 0,
          "F64 batch-norm report: %zu F64 tensors of %zu, %zu rounded", report.f64_tensors, n,
          report.f64_rounded);
    printf("foreign: batch norm (%zu tensors, running statistics included) as F64 plus an I64 "
           "num_batches_tracked: loaded bit for bit\n", n);
    /* running_var of the wrong shape: an error, and nothing changed */
    for (size_t i = 0; i < n; i++)
        if (strcmp(tensors[i].name, "bn1.running_var") == 0) {
            tensors[i].shape[0] = 1;
            tensors[i].bytes = 8;
        }
    CHECK(lca_safetensors_write(f64_path, tensors, n + 1, NULL, NULL, 0) == LCA_OK, "%s",
          lca_last_error());
    lca_model_initialize(loaded, 9);
    bn2->running_mean[0] = 5.0f;
    float *before = malloc(K * sizeof *before);
    memcpy(before, lca_model_parameters(loaded), K * 4);
    status = lca_checkpoint_load(f64_path, loaded, NULL);
    CHECK(status == LCA_ERR_MISMATCH && contains(lca_last_error(), "bn1.running_var") &&
              memcmp(before, lca_model_parameters(loaded), K * 4) == 0 &&
              bn2->running_mean[0] == 5.0f,
          "bad running_var: status %d, model unchanged: %s", status, lca_last_error());
    free(before);
    for (size_t i = 0; i < 16; i++) free(values[i]);
    free(tensors);
    lca_safetensors_free(file);
    remove(path);
    remove(f64_path);
    lca_model_free(model);
    lca_model_free(loaded);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep order with the python output */
    test_temp_dir_make("test-st");
    test_round_trip();
    test_python();
    test_corrupt();
    test_mutations();
    test_atomic();
    test_half_exhaustive();
    test_f64();
    test_foreign_checkpoints();
    test_foreign_batchnorm();

    const char *leftovers[] = {"sample.safetensors", "empty.safetensors",
                               "corrupt.safetensors", "invalid.safetensors"};
    for (size_t i = 0; i < sizeof leftovers / sizeof leftovers[0]; i++)
        remove(test_temp_path(leftovers[i]));
    for (int t = 0; t < SPEC_COUNT; t++) free(tensor_data[t]);
    if (rmdir(test_temp_dir()) != 0) printf("note: %s not empty: %s\n", test_temp_dir(), strerror(errno));
    printf("test_safetensors: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
