/* Token blocks assembled straight from the mapped shards into the batch's arrays, the GIL released.
 *
 * stoke.TokenBlocks describes every block as a range [start, stop) of its token stream: the documents'
 * token records, in order, each followed by an optional eos id. One call of gather() fills many rows of
 * a batch: for each row it finds the first document the range overlaps (a binary search of the
 * documents' cumulative ends), then walks the documents, widening each one's stored ids (any integer
 * width, unaligned, little-endian) into the row, or copying them where the row holds the stored type
 * itself, and writing the row's document ids, the positions
 * inside each document, the padding flags and the block-diagonal attention mask as it goes.
 *
 * Why by hand: what a row costs in Python (a dozen numpy calls over a few documents, then the batch
 * copy) is fifty times what copying its ids costs; no library gathers variable-length spans from many
 * buffers into fixed rows with this bookkeeping. pipeline/blocks.py holds a numpy fallback that gives
 * the same arrays, and the tests check one against the other.
 *
 * Each row's first document is found by a binary search of the cumulative ends, or taken from `firsts`
 * where the caller passes it (TokenBlocks keeps every block's, worked out once: a search's last steps
 * miss the cache, since the copies evict the ends); a hint that does not hold is searched for instead.
 *
 * maps is a list of each shard's mapping (any buffer), by shard number, or None: the call first finds
 * the shards the rows read and holds their buffers; for one that maps lacks it returns -2 - s, and the
 * caller maps shard s and calls again. The shards it read are written to `used` (int32, -1 after the
 * last), for the caller to check that none was truncated while it copied.
 *
 * Everything that comes from the files is checked before it is used: every document's record must lie
 * inside its shard's mapping, and a variable-length record's 16-byte header must say (1, 0, count).
 * A document that fails is returned (its number) and nothing is promised about the rows; the caller
 * then reads row by row, so that the error names the document and only its blocks fail.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    Py_buffer view;
    int held;
} Buffer;

static int get(PyObject *object, Buffer *buffer, int writable, const char *name) {
    buffer->held = 0;
    if (object == Py_None) return 0;
    if (PyObject_GetBuffer(object, &buffer->view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "gather: %s must be a contiguous%s buffer", name, writable ? " writable" : "");
        return -1;
    }
    buffer->held = 1;
    return 0;
}

static void put(Buffer *buffer) {
    if (buffer->held) PyBuffer_Release(&buffer->view);
    buffer->held = 0;
}

static int64_t load_id(const uint8_t *p, char code) {
    switch (code) {
        case 'B': return p[0];
        case 'b': return (int8_t)p[0];
        case 'H': { uint16_t v; memcpy(&v, p, 2); return v; }
        case 'h': { int16_t v; memcpy(&v, p, 2); return v; }
        case 'I': { uint32_t v; memcpy(&v, p, 4); return v; }
        case 'i': { int32_t v; memcpy(&v, p, 4); return v; }
        case 'Q': { uint64_t v; memcpy(&v, p, 8); return (int64_t)v; }
        default: { int64_t v; memcpy(&v, p, 8); return v; }
    }
}

/* The bytes of one stored id of type `code`. */
static int id_size(char code) {
    return (code == 'B' || code == 'b') ? 1 : (code == 'H' || code == 'h') ? 2 : (code == 'I' || code == 'i') ? 4 : 8;
}

/* The loops that touch every token, compiled for AVX2 and for the baseline, one picked at load time
 * (GCC's target_clones; a compiler without it gets the baseline). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

CLONES static void widen_u16(int64_t *restrict out, const uint16_t *restrict in, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = in[i];
}

CLONES static void widen_u16_32(int32_t *restrict out, const uint16_t *restrict in, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = in[i];
}

CLONES static void fill64(int64_t *restrict out, int64_t value, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = value;
}

CLONES static void count64(int64_t *restrict out, int64_t first, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = first + i;
}

/* Widen n ids of type `code` at src into dst, elements of out_size (8: int64, 4: int32) bytes, or copy
 * them as they are where out_size is the stored size (the caller's buffer is then of the stored dtype:
 * ids delivered at their stored width, a quarter of int64's bytes for uint16). uint16 ids (a vocabulary
 * under 65,536: GPT-2's) get loops the compiler vectorises; a record's ids start at any byte, so an
 * unaligned start is copied to an aligned stack buffer first in pieces. */
static void widen(uint8_t *dst, int out_size, const uint8_t *src, char code, int64_t n) {
    if (out_size == id_size(code)) {
        memcpy(dst, src, (size_t)n * (size_t)out_size);
        return;
    }
    if (code == 'H') {
        uint16_t piece[1024];
        for (int64_t done = 0; done < n; done += 1024) {
            int64_t m = n - done < 1024 ? n - done : 1024;
            const uint16_t *in = piece;
            if (((uintptr_t)(src + 2 * done) & 1) == 0) in = (const uint16_t *)(src + 2 * done);
            else memcpy(piece, src + 2 * done, (size_t)m * 2);
            if (out_size == 8) widen_u16((int64_t *)dst + done, in, m);
            else widen_u16_32((int32_t *)dst + done, in, m);
        }
        return;
    }
    int in_size = id_size(code);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = load_id(src + (size_t)in_size * (size_t)i, code);
        if (out_size == 8) ((int64_t *)dst)[i] = v;
        else ((int32_t *)dst)[i] = (int32_t)v;
    }
}

/* n elements of out_size bytes (8, 4, or a narrow stored width: 2, 1) set to value; the caller has
 * checked that value fits. */
static void fill_value(uint8_t *dst, int out_size, int64_t value, int64_t n) {
    if (out_size == 8) {
        fill64((int64_t *)dst, value, n);
    } else if (out_size == 4) {
        int32_t *out = (int32_t *)dst;
        for (int64_t i = 0; i < n; i++) out[i] = (int32_t)value;
    } else if (out_size == 2) {
        uint16_t v = (uint16_t)value;
        for (int64_t i = 0; i < n; i++) memcpy(dst + 2 * i, &v, 2);
    } else {
        memset(dst, (int)(uint8_t)value, (size_t)n);
    }
}

static void fill_count(uint8_t *dst, int out_size, int64_t first, int64_t n) {
    if (out_size == 8) {
        count64((int64_t *)dst, first, n);
    } else {
        int32_t *out = (int32_t *)dst;
        for (int64_t i = 0; i < n; i++) out[i] = (int32_t)(first + i);
    }
}

/* The first document whose end is past `offset`: ends is sorted (cumulative), d is its length. */
static int64_t first_past(const int64_t *ends, int64_t d, int64_t offset) {
    int64_t low = 0, high = d;
    while (low < high) {
        int64_t middle = low + (int64_t)((uint64_t)(high - low) >> 1);  /* a shift: GCC divides a signed /2 */
        if (ends[middle] > offset) high = middle;
        else low = middle + 1;
    }
    return low;
}

/* The slot of shard s among the used ones, looked for from `hint` (the last one found: a row's documents
 * are mostly in one shard) then from the start; num_used if it is not there. */
static inline int64_t slot_of(const int32_t *used, int64_t num_used, int64_t hint, int32_t s) {
    if (hint < num_used && used[hint] == s) return hint;
    int64_t slot = 0;
    while (slot < num_used && used[slot] != s) slot++;
    return slot;
}

/* Rows are in random order, so each row's first ids are a cache (and TLB) miss, and so is its layout
 * (the copies of the rows before evict it): the row AHEAD rows on is asked for early, its record header
 * and first ids, while this one is copied, and the layout of the row 2 * AHEAD on. Hints only:
 * prefetches never fault, and a row is skipped where its layout looks wrong (the copy checks it all). */
#define AHEAD 4
#if defined(__GNUC__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif
static void prefetch_row(int64_t d, int64_t start, const int64_t *ends, const int64_t *counts,
                         const int64_t *payload, const int32_t *shard, int64_t num_docs, const int32_t *used,
                         const Buffer *shard_maps, int64_t num_used, int in_size, int has_eos) {
    if (d >= num_docs || counts[d] <= 0) return;
    int64_t slot = slot_of(used, num_used, 0, shard[d]);
    if (slot == num_used) return;
    int64_t low = start - (ends[d] - counts[d] - has_eos), size = (int64_t)shard_maps[slot].view.len;
    int64_t at = payload[d] + (low > 0 && low < counts[d] ? low : 0) * in_size;
    if (payload[d] < 16 || at < 0 || at >= size) return;
    const uint8_t *base = shard_maps[slot].view.buf;
    PREFETCH(base + payload[d] - 16);
    for (int64_t line = 0; line < 256 && at + line < size; line += 64) PREFETCH(base + at + line);
}

static int element_size(Buffer *buffer, int64_t block, int64_t rows_needed, int64_t per_row, const char *name) {
    /* 8 or 4 (ids), 2 (ids at a stored width) or 1 (flags, or ids at a stored width): the buffer's element
     * size, its length checked against the rows it must hold. */
    if (!buffer->held) return 0;
    int64_t length = (int64_t)buffer->view.len;
    int64_t size = buffer->view.itemsize > 0 ? buffer->view.itemsize : 1;
    if (size != 8 && size != 4 && size != 2 && size != 1) {
        PyErr_Format(PyExc_ValueError, "gather: %s has %lld-byte elements", name, (long long)size);
        return -1;
    }
    if (length < rows_needed * per_row * size) {
        PyErr_Format(PyExc_ValueError, "gather: %s holds fewer than %lld rows of %lld", name, (long long)rows_needed,
                     (long long)block);
        return -1;
    }
    return (int)size;
}

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *o_tokens, *o_document, *o_position, *o_padding, *o_mask;
    PyObject *o_rows, *o_starts, *o_stops, *o_ends, *o_counts, *o_payload, *o_shard, *o_ids, *maps;
    int code_int, headers;
    PyObject *o_used, *o_firsts = Py_None;
    long long eos, pad, block;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOCpLLLO|O", &o_tokens, &o_document, &o_position, &o_padding, &o_mask,
                          &o_rows, &o_starts, &o_stops, &o_ends, &o_counts, &o_payload, &o_shard, &o_ids, &maps,
                          &code_int, &headers, &eos, &pad, &block, &o_used, &o_firsts))
        return NULL;
    char code = (char)code_int;
    if (code == 0 || !strchr("BbHhIiQq", code) || block < 1 || !PyList_Check(maps)) {
        PyErr_SetString(PyExc_ValueError, "gather: bad id code, block size or maps");
        return NULL;
    }
    enum { TOKENS, DOCUMENT, POSITION, PADDING, MASK, ROWS, STARTS, STOPS, ENDS, COUNTS, PAYLOAD, SHARD, IDS, N };
    PyObject *objects[N] = {o_tokens, o_document, o_position, o_padding, o_mask, o_rows, o_starts,
                            o_stops, o_ends, o_counts, o_payload, o_shard, o_ids};
    const char *names[N] = {"tokens", "document", "position", "padding", "mask", "rows", "starts",
                            "stops", "ends", "counts", "payload", "shard", "ids"};
    Buffer b[N];
    Py_ssize_t num_maps = PyList_GET_SIZE(maps);
    int32_t *used = NULL;  /* the distinct shards the rows read, and their mappings */
    Buffer *shard_maps = NULL;
    int64_t num_used = 0, capacity = 0, *first = NULL;
    PyObject *result = NULL;
    int i;
    for (i = 0; i < N; i++) b[i].held = 0;
    for (i = 0; i < N; i++)
        if (get(objects[i], &b[i], i <= MASK, names[i]) < 0) goto done;
    if (!b[TOKENS].held || !b[ROWS].held || !b[STARTS].held || !b[STOPS].held || !b[ENDS].held || !b[COUNTS].held ||
        !b[PAYLOAD].held || !b[SHARD].held) {
        PyErr_SetString(PyExc_ValueError, "gather: tokens and the layout arrays are required");
        goto done;
    }
    int64_t num_rows = b[ROWS].view.len / 8, num_docs = b[ENDS].view.len / 8;
    if (b[STARTS].view.len / 8 != num_rows || b[STOPS].view.len / 8 != num_rows || b[COUNTS].view.len / 8 != num_docs ||
        b[PAYLOAD].view.len / 8 != num_docs || b[SHARD].view.len / 4 != num_docs ||
        (b[IDS].held && b[IDS].view.len / 8 != num_docs)) {
        PyErr_SetString(PyExc_ValueError, "gather: the layout arrays disagree in length");
        goto done;
    }
    const int64_t *rows = b[ROWS].view.buf, *starts = b[STARTS].view.buf, *stops = b[STOPS].view.buf;
    const int64_t *ends = b[ENDS].view.buf, *counts = b[COUNTS].view.buf, *payload = b[PAYLOAD].view.buf;
    const int32_t *shard = b[SHARD].view.buf;
    const int64_t *ids = b[IDS].held ? b[IDS].view.buf : NULL;
    int64_t rows_needed = 0, total = num_docs ? ends[num_docs - 1] : 0;
    for (int64_t r = 0; r < num_rows; r++) {
        if (rows[r] < 0 || starts[r] < 0 || stops[r] < starts[r] || stops[r] - starts[r] > block || stops[r] > total) {
            PyErr_Format(PyExc_ValueError, "gather: row %lld asks for tokens [%lld, %lld) of a %lld-token stream",
                         (long long)rows[r], (long long)starts[r], (long long)stops[r], (long long)total);
            goto done;
        }
        if (rows[r] + 1 > rows_needed) rows_needed = rows[r] + 1;
    }
    int tok_size = element_size(&b[TOKENS], block, rows_needed, block, "tokens");
    int doc_size = element_size(&b[DOCUMENT], block, rows_needed, block, "document");
    int pos_size = element_size(&b[POSITION], block, rows_needed, block, "position");
    int pad_size = element_size(&b[PADDING], block, rows_needed, block, "padding");
    int mask_size = element_size(&b[MASK], block, rows_needed, block * block, "mask");
    if (tok_size < 0 || doc_size < 0 || pos_size < 0 || pad_size < 0 || mask_size < 0) goto done;
    if ((tok_size < 4 && tok_size != id_size(code)) || doc_size == 1 || doc_size == 2 || pos_size == 1 ||
        pos_size == 2 || pad_size > 1 || mask_size > 1) {
        PyErr_SetString(PyExc_ValueError, "gather: ids are int64, int32 or the stored type; flags are bool");
        goto done;
    }
    /* Each row's first document (one binary search a row, reused below), and the shards the rows read:
     * each one's mapping is held (a buffer export) while the GIL is released. A shard whose mapping
     * maps[s] does not hold yet (None, or closed since) is asked for: -2 - s. */
    first = PyMem_Malloc((size_t)(num_rows > 0 ? num_rows : 1) * sizeof(int64_t));
    capacity = num_maps < 16 ? (num_maps > 0 ? num_maps : 1) : 16;  /* grows to at most num_maps */
    used = PyMem_Malloc((size_t)capacity * sizeof(int32_t));
    shard_maps = PyMem_Calloc((size_t)capacity, sizeof(Buffer));
    if (first == NULL || used == NULL || shard_maps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (o_firsts != Py_None) {  /* each row's first document, as the caller worked it out: checked here */
        Buffer given = {0};
        if (get(o_firsts, &given, 0, "firsts") < 0) goto done;
        const int64_t *hints = given.view.buf;
        int64_t hinted = given.view.len / 8 < num_rows ? given.view.len / 8 : num_rows;
        for (int64_t r = 0; r < num_rows; r++) {
            int64_t d = r < hinted ? hints[r] : -1;
            int fits = d >= 0 && d < num_docs && ends[d] > starts[r] && (d == 0 || ends[d - 1] <= starts[r]);
            first[r] = fits ? d : first_past(ends, num_docs, starts[r]);
        }
        put(&given);
    }
    for (int64_t r = 0; r < num_rows; r++) {
        if (o_firsts == Py_None) first[r] = first_past(ends, num_docs, starts[r]);
        int64_t last = 0;  /* the slot of the last shard seen: a row's documents are mostly in one shard */
        for (int64_t d = first[r]; d < num_docs && ends[d] - counts[d] - (eos >= 0) < stops[r]; d++) {
            int32_t s = shard[d];
            if (counts[d] <= 0 || (num_used > 0 && used[last] == s)) continue;
            int64_t u = 0;
            while (u < num_used && used[u] != s) u++;
            if (u < num_used) { last = u; continue; }
            if (s < 0 || s >= num_maps) {
                result = PyLong_FromLongLong(d);  /* a document outside every shard: damaged layout */
                goto done;
            }
            if (num_used == capacity) {  /* num_used < num_maps: a new distinct shard */
                int64_t grown = capacity * 2 < num_maps ? capacity * 2 : num_maps;
                int32_t *more_used = PyMem_Realloc(used, (size_t)grown * sizeof(int32_t));
                if (more_used == NULL) { PyErr_NoMemory(); goto done; }
                used = more_used;
                Buffer *more_maps = PyMem_Realloc(shard_maps, (size_t)grown * sizeof(Buffer));
                if (more_maps == NULL) { PyErr_NoMemory(); goto done; }
                shard_maps = more_maps;
                memset(shard_maps + capacity, 0, (size_t)(grown - capacity) * sizeof(Buffer));
                capacity = grown;
            }
            PyObject *map = PyList_GET_ITEM(maps, s);
            if (map == Py_None || PyObject_GetBuffer(map, &shard_maps[num_used].view, PyBUF_SIMPLE) < 0) {
                PyErr_Clear();
                result = PyLong_FromLongLong(-2 - (long long)s);
                goto done;
            }
            shard_maps[num_used].held = 1;
            last = num_used;
            used[num_used++] = s;
        }
    }
    int in_size = id_size(code);
    int has_eos = eos >= 0;
    int64_t bad = -1;

    Py_BEGIN_ALLOW_THREADS
    uint8_t *tokens = b[TOKENS].view.buf;
    uint8_t *document = b[DOCUMENT].held ? b[DOCUMENT].view.buf : NULL;
    uint8_t *position = b[POSITION].held ? b[POSITION].view.buf : NULL;
    uint8_t *padding = b[PADDING].held ? b[PADDING].view.buf : NULL;
    uint8_t *mask = b[MASK].held ? b[MASK].view.buf : NULL;
    for (int64_t r = 0; r < num_rows && bad < 0; r++) {
        int64_t row = rows[r], start = starts[r], stop = stops[r], filled = stop - start, k = 0;
        uint8_t *tok_row = tokens + (size_t)row * block * tok_size;
        uint8_t *mask_row = mask ? mask + (size_t)row * block * block : NULL;
        if (mask_row) memset(mask_row, 0, (size_t)block * block);
        if (r + 2 * AHEAD < num_rows) {  /* the layout of the row after: evicted by the copies since */
            int64_t later = first[r + 2 * AHEAD] < num_docs ? first[r + 2 * AHEAD] : 0;
            PREFETCH(ends + later);
            PREFETCH(counts + later);
            PREFETCH(payload + later);
            PREFETCH(shard + later);
        }
        if (r + AHEAD < num_rows) prefetch_row(first[r + AHEAD], starts[r + AHEAD], ends, counts, payload, shard,
                                               num_docs, used, shard_maps, num_used, in_size, has_eos);
        int64_t d = first[r], slot = 0;
        while (k < filled) {
            if (d >= num_docs) { bad = num_docs - 1; break; }
            int64_t count = counts[d], length = count + has_eos, doc_start = ends[d] - length;
            int64_t low = start + k - doc_start, high = (stop < ends[d] ? stop : ends[d]) - doc_start;
            int64_t n = high - low, body_high = high < count ? high : count;
            if (count < 0 || low < 0 || n < 0) { bad = d; break; }
            if (body_high > low) {
                slot = slot_of(used, num_used, slot, shard[d]);
                if (slot == num_used) { bad = d; break; }
                const uint8_t *base = shard_maps[slot].view.buf;
                int64_t size = (int64_t)shard_maps[slot].view.len, at = payload[d];
                /* count ids from at inside the mapping: no division (count < 2^61 first, so no overflow) */
                if (at < (headers ? 16 : 0) || at > size || count > (INT64_MAX >> 3) || count * in_size > size - at) {
                    bad = d;
                    break;
                }
                if (headers) {
                    uint32_t ndim, zero;
                    uint64_t stored;
                    memcpy(&ndim, base + at - 16, 4);
                    memcpy(&zero, base + at - 12, 4);
                    memcpy(&stored, base + at - 8, 8);
                    if (ndim != 1 || zero != 0 || stored != (uint64_t)count) { bad = d; break; }
                }
                widen(tok_row + (size_t)k * tok_size, tok_size, base + at + (size_t)low * in_size, code, body_high - low);
            }
            if (high > count && n > 0)  /* the eos after the document's body */
                fill_value(tok_row + (size_t)(k + count - low) * tok_size, tok_size, eos, 1);
            if (document)
                fill_value(document + (size_t)(row * block + k) * doc_size, doc_size, ids ? ids[d] : d, n);
            if (position) fill_count(position + (size_t)(row * block + k) * pos_size, pos_size, low, n);
            if (mask_row)
                for (int64_t t = k; t < k + n; t++) memset(mask_row + (size_t)t * block + k, 1, (size_t)n);
            k += n;
            d++;
        }
        if (bad >= 0) break;
        fill_value(tok_row + (size_t)filled * tok_size, tok_size, pad, block - filled);
        if (document) fill_value(document + (size_t)(row * block + filled) * doc_size, doc_size, -1, block - filled);
        if (position) fill_value(position + (size_t)(row * block + filled) * pos_size, pos_size, 0, block - filled);
        if (padding) {
            memset(padding + (size_t)row * block, 0, (size_t)filled);
            memset(padding + (size_t)row * block + filled, 1, (size_t)(block - filled));
        }
    }
    Py_END_ALLOW_THREADS

    /* The shards read, for the caller's check that none was truncated meanwhile: as many as fit, then -1. */
    Buffer out_used = {0};
    if (get(o_used, &out_used, 1, "used") < 0) goto done;
    if (out_used.held) {
        int32_t *shards_read = out_used.view.buf;
        int64_t room = out_used.view.len / 4;
        for (int64_t u = 0; u < room; u++) shards_read[u] = u < num_used ? used[u] : -1;
        put(&out_used);
    }
    result = PyLong_FromLongLong(bad);
done:
    for (i = 0; i < N; i++) put(&b[i]);
    for (int64_t u = 0; shard_maps != NULL && u < num_used; u++) put(&shard_maps[u]);
    PyMem_Free(shard_maps);
    PyMem_Free(used);
    PyMem_Free(first);
    return result;
}

static PyMethodDef methods[] = {
    {"gather", gather, METH_VARARGS,
     "gather(tokens, document, position, padding, mask, rows, starts, stops, ends, counts, payload, shard, ids, "
     "maps, code, headers, eos, pad, block, used, firsts=None) -> -1; the document that could not be read; or -2 - s "
     "where maps[s] must hold shard s's mapping. firsts: each row's first document (checked), or None to search"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tokens", "Token blocks gathered from mapped shards.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tokens(void) { return PyModule_Create(&module); }
