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
 * The thread that fills a row works it out, so the call itself touches no row's layout before the
 * helpers start.
 *
 * maps is a list of each shard's mapping (any buffer), by shard number, or None: the call first finds
 * the shards the rows read and holds their buffers; for one that maps lacks it returns -2 - s, and the
 * caller maps shard s and calls again. A row whose documents all lie in one shard, as `shards` says
 * (int32 per row, from TokenBlocks: that shard, or -1), names it at once; any other row's documents are
 * walked. Every document's shard is still checked against those held as the row is copied, so a hint
 * that does not hold fails the call (a document returned) and never reads a shard not held. The shards
 * it read are written to `used` (int32, -1 after the last), for the caller to check that none was
 * truncated while it copied.
 *
 * Everything that comes from the files is checked before it is used: every document's record must lie
 * inside its shard's mapping, and a variable-length record's 16-byte header must say (1, 0, count).
 * A document that fails is returned (its number) and nothing is promised about the rows; the caller
 * then reads row by row, so that the error names the document and only its blocks fail.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

/* What one call fills: the layout, the shards' mappings (held by the caller) and the batch's arrays. Read
 * only by fill_rows, in whichever threads share the rows; `next` and `bad` are the only shared writes. */
typedef struct {
    const int64_t *rows, *starts, *stops, *ends, *counts, *payload, *ids, *first, *hints;
    const int32_t *shard, *used;
    const Buffer *shard_maps;
    int64_t num_used, num_docs, num_rows, num_hints, block, eos, pad;
    uint8_t *tokens, *document, *position, *padding, *mask;
    int tok_size, doc_size, pos_size, in_size, has_eos, headers;
    char code;
    _Atomic int64_t next;  /* the first row no thread has claimed (share) */
    _Atomic int64_t bad;   /* a document that could not be read, or -1 */
} Gather;

/* Row r's first document: the call's (first[r] >= 0, where it walked the row's documents), else the caller's
 * hint where it holds, else searched for. Worked out by the thread that fills the row, so that the call
 * itself, which runs before the helpers start and holds the GIL, never waits on the layout's cache misses. */
static inline int64_t first_of(const Gather *g, int64_t r) {
    int64_t d = g->first[r], start = g->starts[r];
    if (d >= 0) return d;
    d = r < g->num_hints ? g->hints[r] : -1;
    if (d >= 0 && d < g->num_docs && g->ends[d] > start && (d == 0 || g->ends[d - 1] <= start)) return d;
    return first_past(g->ends, g->num_docs, start);
}

/* A guess at it that loads nothing from the layout, for prefetches only (a valid document number). */
static inline int64_t first_guess(const Gather *g, int64_t r) {
    int64_t d = g->first[r];
    if (d < 0 && r < g->num_hints) d = g->hints[r];
    return d >= 0 && d < g->num_docs ? d : 0;
}

static inline void prefetch_layout(const Gather *g, int64_t d) {
    PREFETCH(g->ends + (d > 0 ? d - 1 : 0));
    PREFETCH(g->ends + d);
    PREFETCH(g->counts + d);
    PREFETCH(g->payload + d);
    PREFETCH(g->shard + d);
}

/* Rows r0..r1-1 of the call. A document that fails is written to g->bad and the rows stop; every thread
 * stops at its next row once one has failed (the caller then reads row by row, and names it). */
static void fill_rows(Gather *g, int64_t r0, int64_t r1) {
    const int64_t *rows = g->rows, *starts = g->starts, *stops = g->stops, *ends = g->ends, *counts = g->counts;
    const int64_t *payload = g->payload, *ids = g->ids;
    const int32_t *shard = g->shard, *used = g->used;
    const Buffer *shard_maps = g->shard_maps;
    int64_t num_used = g->num_used, num_docs = g->num_docs, block = g->block, eos = g->eos, pad = g->pad;
    uint8_t *tokens = g->tokens, *document = g->document, *position = g->position, *padding = g->padding;
    uint8_t *mask = g->mask;
    int tok_size = g->tok_size, doc_size = g->doc_size, pos_size = g->pos_size, in_size = g->in_size;
    int has_eos = g->has_eos, headers = g->headers;
    char code = g->code;
    int64_t bad = -1;
    for (int64_t r = r0; r < r1 && r < r0 + 2 * AHEAD; r++) prefetch_layout(g, first_guess(g, r));  /* this claim's first rows */
    for (int64_t r = r0; r < r1 && bad < 0; r++) {
        if (atomic_load_explicit(&g->bad, memory_order_relaxed) >= 0) return;  /* another thread's */
        int64_t row = rows[r], start = starts[r], stop = stops[r], filled = stop - start, k = 0;
        uint8_t *tok_row = tokens + (size_t)row * block * tok_size;
        uint8_t *mask_row = mask ? mask + (size_t)row * block * block : NULL;
        if (mask_row) memset(mask_row, 0, (size_t)block * block);
        if (r + 2 * AHEAD < g->num_rows)  /* the layout of a row after: evicted by the copies since */
            prefetch_layout(g, first_guess(g, r + 2 * AHEAD));
        if (r + AHEAD < g->num_rows)  /* past r1 too: the next claim is likely this thread's */
            prefetch_row(first_guess(g, r + AHEAD), starts[r + AHEAD], ends, counts, payload, shard, num_docs, used,
                         shard_maps, num_used, in_size, has_eos);
        int64_t d = first_of(g, r), slot = 0;
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
    if (bad >= 0) atomic_store(&g->bad, bad);
}

/* ---- One call's rows shared with helper threads -------------------------------------------------------
 * A batch of many rows (2 * CLAIM or more) may be filled by up to `threads` threads: the caller and
 * native helper threads of this module, which never touch a Python object. Rows are claimed CLAIM at a
 * time from g->next, so a helper that wakes late takes only what is left, and the caller never waits for
 * one to start; it returns once each helper that joined has finished the rows it claimed.
 *
 * Why: each shuffled block starts with cache misses at a random place, and one core has only so many
 * misses in flight, so a second core almost doubles the blocks copied a second (benchmarks/tokens.py).
 * Waking a sleeping thread costs tens of microseconds on a small virtual machine (a condition-variable
 * round trip took 48 µs on the development machine), so a helper spins for SPIN_NS after its last rows
 * before it sleeps: a loop that fills a batch every few tens of microseconds finds it awake, and a loop
 * that stops costs nothing after SPIN_NS.
 *
 * Up to SLOTS calls share the helpers at once (a Loader keeps two batches begun in the background: the
 * helpers copy the next while the loop's thread runs the Python of this one). Each holds a slot, and
 * helpers serve the open calls oldest first: a helper joins a call once, claims its rows until none is
 * left, then moves to the oldest newer call. A call that finds every slot taken fills its rows alone.
 *
 * Safety: the Gather is the caller's (on the heap with its Call). A helper enters a slot's call by
 * counting itself in the slot's `active`, then checks that the call is still `open`; the caller closes
 * it after its last claim and waits until `active` is 0 before it frees anything. With sequentially
 * consistent atomics, a helper that counts itself after the caller saw 0 sees the call closed, so none
 * reads a Gather that is gone; the slots themselves are static. The caller writes the call's fields
 * before it opens the call. A forked child has no helpers: pthread_atfork resets the pool there, and the
 * child starts its own. Helpers block every signal that is not a fault's, so SIGINT and the like reach
 * Python's threads; a SIGBUS from a truncated shard goes to the mapping guard's handler
 * (format/_mapguard.c), which serves every thread.
 */
#define CLAIM 16
#define MAX_THREADS 64
#define SLOTS 4
#define SPIN_NS 200000 /* 200 µs */

#if defined(__x86_64__) || defined(__i386__)
#define PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define PAUSE() __asm__ __volatile__("yield")
#else
#define PAUSE() ((void)0)
#endif

typedef struct {
    _Atomic int busy;        /* a call holds it (from start_call to end_call) */
    _Atomic int open;        /* its call takes helpers */
    _Atomic int active;      /* helpers counted in, inside its call or checking whether it is open */
    _Atomic int joined;      /* helpers that joined its call */
    _Atomic int wanted;      /* helpers it asked for */
    _Atomic uint64_t ticket; /* when its call opened (from 1): helpers serve the oldest first */
    _Atomic(Gather *) job;
} Slot;

static struct {
    pthread_mutex_t lock; /* guards started and sleeping; the mutex of `wake` */
    pthread_cond_t wake;
    int started;          /* helper threads running */
    long ids[MAX_THREADS]; /* their native thread ids (Linux), for the profiler's CPU figures; 0: not known */
    int sleeping;         /* helpers waiting on `wake` */
    _Atomic uint64_t generation; /* bumped when a call opens */
    _Atomic uint64_t tickets;    /* the last ticket given */
    Slot slots[SLOTS];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void after_fork_child(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.started = pool.sleeping = 0;
    memset(pool.ids, 0, sizeof pool.ids);
    for (int i = 0; i < SLOTS; i++) {
        atomic_store(&pool.slots[i].busy, 0);
        atomic_store(&pool.slots[i].open, 0);
        atomic_store(&pool.slots[i].active, 0);
        atomic_store(&pool.slots[i].joined, 0);
    }
}

static int64_t elapsed_ns(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - since->tv_sec) * 1000000000 + (now.tv_nsec - since->tv_nsec);
}

/* Claim rows CLAIM at a time until none is left. */
static void claim(Gather *g) {
    for (;;) {
        int64_t r0 = atomic_fetch_add(&g->next, CLAIM);
        if (r0 >= g->num_rows) return;
        fill_rows(g, r0, r0 + CLAIM < g->num_rows ? r0 + CLAIM : g->num_rows);
    }
}

/* The generation after `seen`: spun for up to SPIN_NS, then slept for. */
static uint64_t next_call(uint64_t seen) {
    struct timespec since;
    clock_gettime(CLOCK_MONOTONIC, &since);
    for (unsigned spins = 1;; spins++) {
        uint64_t now = atomic_load(&pool.generation);
        if (now != seen) return now;
        PAUSE();
        if ((spins & 255) == 0 && elapsed_ns(&since) > SPIN_NS) break;
    }
    pthread_mutex_lock(&pool.lock);
    pool.sleeping++;
    uint64_t now;
    while ((now = atomic_load(&pool.generation)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
    pool.sleeping--;
    pthread_mutex_unlock(&pool.lock);
    return now;
}

/* The open call after ticket `after` that opened first: its slot, or NULL. */
static Slot *oldest_open(uint64_t after) {
    Slot *oldest = NULL;
    uint64_t first = UINT64_MAX;
    for (int i = 0; i < SLOTS; i++) {
        Slot *slot = &pool.slots[i];
        if (!atomic_load(&slot->open)) continue;
        uint64_t ticket = atomic_load(&slot->ticket);
        if (ticket > after && ticket < first) {
            first = ticket;
            oldest = slot;
        }
    }
    return oldest;
}

static void *helper(void *number) {
#ifdef __linux__
    __atomic_store_n(&pool.ids[(intptr_t)number], (long)syscall(SYS_gettid), __ATOMIC_RELEASE);
#endif
    uint64_t seen = atomic_load(&pool.generation), served = 0; /* the ticket of the last call it joined */
    for (;;) {
        seen = next_call(seen);
        Slot *slot;
        while ((slot = oldest_open(served)) != NULL) { /* each open call once, oldest first */
            atomic_fetch_add(&slot->active, 1);
            if (atomic_load(&slot->open)) {
                uint64_t ticket = atomic_load(&slot->ticket); /* the call counted into: it cannot change now */
                if (ticket > served) {
                    served = ticket;
                    if (atomic_fetch_add(&slot->joined, 1) < atomic_load(&slot->wanted)) claim(atomic_load(&slot->job));
                }
            }
            atomic_fetch_sub(&slot->active, 1);
        }
    }
    return NULL;
}

/* Helpers up to `count` (fewer if a thread cannot be made: the rows are then shared by fewer). */
static void start_helpers(int count) {
    pthread_mutex_lock(&pool.lock);
    if (pool.started < count) {
        sigset_t all, before;
        sigfillset(&all);
        sigdelset(&all, SIGBUS);
        sigdelset(&all, SIGSEGV);
        sigdelset(&all, SIGFPE);
        sigdelset(&all, SIGILL);
        pthread_sigmask(SIG_BLOCK, &all, &before); /* the helpers are born with it */
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attributes, 1 << 18); /* fill_rows needs a few KiB */
        while (pool.started < count) {
            pthread_t thread;
            if (pthread_create(&thread, &attributes, helper, (void *)(intptr_t)pool.started) != 0) break;
            pool.started++;
        }
        pthread_attr_destroy(&attributes);
        pthread_sigmask(SIG_SETMASK, &before, NULL);
    }
    pthread_mutex_unlock(&pool.lock);
}

/* Open g to up to `helpers` helpers (fewer: no more than its claims, less one where the caller claims too):
 * its slot; NULL, having done nothing, where every slot is taken. With the GIL or without: it never waits. */
static Slot *start_call(Gather *g, int helpers, int caller_claims) {
    Slot *slot = NULL;
    for (int i = 0; i < SLOTS && slot == NULL; i++) {
        int free_now = 0;
        if (atomic_compare_exchange_strong(&pool.slots[i].busy, &free_now, 1)) slot = &pool.slots[i];
    }
    if (slot == NULL) return NULL;
    int64_t claims = (g->num_rows + CLAIM - 1) / CLAIM - (caller_claims ? 1 : 0);
    if (helpers > claims) helpers = (int)claims;
    start_helpers(helpers);
    atomic_store(&slot->job, g);
    atomic_store(&slot->wanted, helpers);
    atomic_store(&slot->joined, 0);
    atomic_store(&slot->ticket, atomic_fetch_add(&pool.tickets, 1) + 1);
    atomic_store(&slot->open, 1);
    atomic_fetch_add(&pool.generation, 1);
    pthread_mutex_lock(&pool.lock);
    if (pool.sleeping > 0) pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    return slot;
}

/* The rows of g that no helper has claimed, filled by the caller; then its call is closed, and ends once
 * every helper in it has finished its rows. Without the GIL. */
static void end_call(Gather *g, Slot *slot) {
    claim(g);
    atomic_store(&slot->open, 0);
    for (unsigned spins = 1; atomic_load(&slot->active) != 0; spins++) { /* helpers finish their claims */
        PAUSE();
        if ((spins & 1023) == 0) sched_yield();
    }
    atomic_store(&slot->busy, 0);
}

/* ---- gather() ------------------------------------------------------------------------------------------ */
enum { TOKENS, DOCUMENT, POSITION, PADDING, MASK, ROWS, STARTS, STOPS, ENDS, COUNTS, PAYLOAD, SHARD, IDS, USED, FIRSTS,
       SHARDS, N };

/* One call's buffers (held exports), the shards it reads, and its Gather: on the heap, because a fill in the
 * background (a Pending) outlives the call that started it. */
typedef struct {
    Buffer b[N];
    int32_t *used;      /* the distinct shards the rows read, and their mappings */
    Buffer *shard_maps;
    int64_t num_used, *first;
    Gather g;
    Slot *slot;         /* the pool's slot while helpers may share the rows (a Pending's call) */
} Call;

/* The shards read, written to the caller's `used` (as many as fit, then -1), for its check that none was
 * truncated while the rows were copied; then every buffer let go. */
static void call_end(Call *call) {
    if (call->b[USED].held) {
        int32_t *shards_read = call->b[USED].view.buf;
        int64_t room = call->b[USED].view.len / 4;
        for (int64_t u = 0; u < room; u++) shards_read[u] = u < call->num_used ? call->used[u] : -1;
    }
    for (int i = 0; i < N; i++) put(&call->b[i]);
    for (int64_t u = 0; call->shard_maps != NULL && u < call->num_used; u++) put(&call->shard_maps[u]);
    PyMem_Free(call->shard_maps);
    PyMem_Free(call->used);
    PyMem_Free(call->first);
    PyMem_Free(call);
}

/* Shard s held for the call (its mapping's buffer export; nothing if it already is): 0; 1 where maps lacks
 * it (None, or a mapping closed since), for the caller to map it; -1 with an error set. s is in range. */
static int hold_shard(Call *call, PyObject *maps, int32_t s, int64_t *last, int64_t *capacity) {
    int64_t num_used = call->num_used;
    if (num_used > 0 && call->used[*last] == s) return 0;
    for (int64_t u = 0; u < num_used; u++)
        if (call->used[u] == s) {
            *last = u;
            return 0;
        }
    if (num_used == *capacity) {  /* num_used < the number of maps: a new distinct shard */
        int64_t grown = *capacity * 2 < PyList_GET_SIZE(maps) ? *capacity * 2 : PyList_GET_SIZE(maps);
        int32_t *more_used = PyMem_Realloc(call->used, (size_t)grown * sizeof(int32_t));
        if (more_used == NULL) { PyErr_NoMemory(); return -1; }
        call->used = more_used;
        Buffer *more_maps = PyMem_Realloc(call->shard_maps, (size_t)grown * sizeof(Buffer));
        if (more_maps == NULL) { PyErr_NoMemory(); return -1; }
        call->shard_maps = more_maps;
        memset(more_maps + *capacity, 0, (size_t)(grown - *capacity) * sizeof(Buffer));
        *capacity = grown;
    }
    PyObject *map = PyList_GET_ITEM(maps, s);
    if (map == Py_None || PyObject_GetBuffer(map, &call->shard_maps[num_used].view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 1;
    }
    call->shard_maps[num_used].held = 1;
    call->used[num_used] = s;
    *last = num_used;
    call->num_used = num_used + 1;
    return 0;
}

/* A fill going on in the helpers after gather() returned: wait() joins in, waits, and gives the result. */
typedef struct {
    PyObject_HEAD
    Call *call; /* NULL once waited for */
    int64_t bad;
} Pending;

static int64_t pending_finish(Pending *pending) {
    Call *call = pending->call;
    if (call != NULL) {
        pending->call = NULL; /* with the GIL held: a second wait() has nothing to do */
        Py_BEGIN_ALLOW_THREADS
        end_call(&call->g, call->slot);
        Py_END_ALLOW_THREADS
        pending->bad = atomic_load(&call->g.bad);
        call_end(call);
    }
    return pending->bad;
}

static PyObject *pending_wait(PyObject *self, PyObject *unused) {
    return PyLong_FromLongLong(pending_finish((Pending *)self));
}

static void pending_dealloc(PyObject *self) {
    pending_finish((Pending *)self); /* never free buffers that helpers may still write */
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef pending_methods[] = {
    {"wait", pending_wait, METH_NOARGS,
     "wait() -> -1, or a document that could not be read: the rows not yet claimed are filled by this thread, "
     "then it waits for the helpers' (without the GIL); the shards read are written to `used`"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stoke.pipeline._tokens.Pending",
    .tp_basicsize = sizeof(Pending),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A gather whose rows helper threads are still copying; wait() before the arrays are read.",
    .tp_dealloc = pending_dealloc,
    .tp_methods = pending_methods,
};

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *o_tokens, *o_document, *o_position, *o_padding, *o_mask;
    PyObject *o_rows, *o_starts, *o_stops, *o_ends, *o_counts, *o_payload, *o_shard, *o_ids, *maps;
    int code_int, headers, threads = 1, background = 0;
    PyObject *o_used, *o_firsts = Py_None, *o_shards = Py_None;
    long long eos, pad, block;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOCpLLLO|OipO", &o_tokens, &o_document, &o_position, &o_padding,
                          &o_mask, &o_rows, &o_starts, &o_stops, &o_ends, &o_counts, &o_payload, &o_shard, &o_ids,
                          &maps, &code_int, &headers, &eos, &pad, &block, &o_used, &o_firsts, &threads, &background,
                          &o_shards))
        return NULL;
    char code = (char)code_int;
    if (code == 0 || !strchr("BbHhIiQq", code) || block < 1 || !PyList_Check(maps) || threads < 1 ||
        threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "gather: bad id code, block size, maps or threads");
        return NULL;
    }
    PyObject *objects[N] = {o_tokens, o_document, o_position, o_padding, o_mask, o_rows, o_starts, o_stops,
                            o_ends, o_counts, o_payload, o_shard, o_ids, o_used, o_firsts, o_shards};
    const char *names[N] = {"tokens", "document", "position", "padding", "mask", "rows", "starts", "stops",
                            "ends", "counts", "payload", "shard", "ids", "used", "firsts", "shards"};
    Call *call = PyMem_Calloc(1, sizeof(Call));
    if (call == NULL) return PyErr_NoMemory();
    Buffer *b = call->b;
    Py_ssize_t num_maps = PyList_GET_SIZE(maps);
    int64_t capacity = 0;
    PyObject *result = NULL;
    int i;
    for (i = 0; i < N; i++)
        if (get(objects[i], &b[i], i <= MASK || i == USED, names[i]) < 0) goto done;
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
    if (threads > 1 && num_rows > 1) {  /* rows shared between threads must be distinct */
        uint8_t *seen = PyMem_Calloc((size_t)rows_needed / 8 + 1, 1);
        if (seen == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (int64_t r = 0; r < num_rows && threads > 1; r++) {
            if (seen[rows[r] >> 3] & (1 << (rows[r] & 7))) threads = 1;  /* a row written twice: in order, alone */
            seen[rows[r] >> 3] |= (uint8_t)(1 << (rows[r] & 7));
        }
        PyMem_Free(seen);
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
    /* The shards the rows read: each one's mapping is held (a buffer export) while the GIL is released. A
     * shard whose mapping maps[s] does not hold yet (None, or closed since) is asked for: -2 - s. A row
     * whose documents all lie in one shard, as `shards` says (the caller's, per row: that shard, or -1),
     * costs nothing more here: the thread that fills it finds its first document and checks every
     * document's shard against the ones held, and a hint that does not hold fails the call, to be read
     * row by row. Any other row's documents are walked now, from its first (checked, or searched for). */
    int64_t *first = call->first = PyMem_Malloc((size_t)(num_rows > 0 ? num_rows : 1) * sizeof(int64_t));
    capacity = num_maps < 16 ? (num_maps > 0 ? num_maps : 1) : 16;  /* grows to at most num_maps */
    call->used = PyMem_Malloc((size_t)capacity * sizeof(int32_t));
    call->shard_maps = PyMem_Calloc((size_t)capacity, sizeof(Buffer));
    if (first == NULL || call->used == NULL || call->shard_maps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const int64_t *hints = b[FIRSTS].held ? b[FIRSTS].view.buf : NULL;
    int64_t num_hints = hints ? b[FIRSTS].view.len / 8 : 0;
    if (num_hints > num_rows) num_hints = num_rows;
    const int32_t *row_shards = b[SHARDS].held ? b[SHARDS].view.buf : NULL;
    int64_t num_row_shards = row_shards ? b[SHARDS].view.len / 4 : 0;
    int64_t last = 0;  /* the slot of the last shard held: a batch's rows are mostly in few shards */
    for (int64_t r = 0; r < num_rows; r++) {
        int32_t one = r < num_row_shards ? row_shards[r] : -1;
        if (one >= 0 && one < num_maps) {
            first[r] = -1;  /* found by the thread that fills the row */
            int held = hold_shard(call, maps, one, &last, &capacity);
            if (held != 0) {
                if (held > 0) result = PyLong_FromLongLong(-2 - (long long)one);
                goto done;
            }
            continue;
        }
        int64_t d = r < num_hints ? hints[r] : -1;
        int fits = d >= 0 && d < num_docs && ends[d] > starts[r] && (d == 0 || ends[d - 1] <= starts[r]);
        first[r] = fits ? d : first_past(ends, num_docs, starts[r]);
        for (d = first[r]; d < num_docs && ends[d] - counts[d] - (eos >= 0) < stops[r]; d++) {
            int32_t s = shard[d];
            if (counts[d] <= 0) continue;
            if (s < 0 || s >= num_maps) {
                result = PyLong_FromLongLong(d);  /* a document outside every shard: damaged layout */
                goto done;
            }
            int held = hold_shard(call, maps, s, &last, &capacity);
            if (held != 0) {
                if (held > 0) result = PyLong_FromLongLong(-2 - (long long)s);
                goto done;
            }
        }
    }
    int64_t num_used = call->num_used;
    Gather *g = &call->g;
    *g = (Gather){
        .rows = rows, .starts = starts, .stops = stops, .ends = ends, .counts = counts, .payload = payload,
        .ids = ids, .first = first, .hints = hints, .shard = shard, .used = call->used,
        .shard_maps = call->shard_maps, .num_used = num_used, .num_docs = num_docs, .num_rows = num_rows,
        .num_hints = num_hints, .block = block, .eos = eos, .pad = pad,
        .tokens = b[TOKENS].view.buf, .document = b[DOCUMENT].held ? b[DOCUMENT].view.buf : NULL,
        .position = b[POSITION].held ? b[POSITION].view.buf : NULL,
        .padding = b[PADDING].held ? b[PADDING].view.buf : NULL, .mask = b[MASK].held ? b[MASK].view.buf : NULL,
        .tok_size = tok_size, .doc_size = doc_size, .pos_size = pos_size, .in_size = id_size(code),
        .has_eos = eos >= 0, .headers = headers, .code = code,
    };
    atomic_init(&g->next, 0);
    atomic_init(&g->bad, -1);
    if (background && threads > 1 && num_rows > 0) {  /* helpers copy the rows while the caller goes on */
        Pending *pending = PyObject_New(Pending, &PendingType);
        if (pending == NULL) goto done;
        pending->bad = -1;
        if ((call->slot = start_call(g, threads - 1, 0)) != NULL) {
            pending->call = call;
            return (PyObject *)pending;
        }
        pending->call = NULL;  /* every slot of the pool is taken: these rows are filled here, now */
        Py_DECREF(pending);
        threads = 1;
    }
    Py_BEGIN_ALLOW_THREADS
    Slot *slot = threads > 1 && num_rows >= 2 * CLAIM ? start_call(g, threads - 1, 1) : NULL;
    if (slot != NULL) end_call(g, slot);
    else fill_rows(g, 0, num_rows);
    Py_END_ALLOW_THREADS
    result = PyLong_FromLongLong(atomic_load(&g->bad));
done:
    if (result == NULL || PyLong_AsLongLong(result) < -1) {  /* an error or a shard asked for: used not written */
        put(&b[USED]);
    }
    call_end(call);
    return result;
}

static PyObject *helper_ids(PyObject *self, PyObject *unused) {
    PyObject *ids = PyList_New(0);
    if (ids == NULL) return NULL;
    pthread_mutex_lock(&pool.lock);
    int started = pool.started;
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < started; i++) {
        long id = __atomic_load_n(&pool.ids[i], __ATOMIC_ACQUIRE);
        if (id == 0) continue;
        PyObject *number = PyLong_FromLong(id);
        if (number == NULL || PyList_Append(ids, number) < 0) {
            Py_XDECREF(number);
            Py_DECREF(ids);
            return NULL;
        }
        Py_DECREF(number);
    }
    return ids;
}

static PyMethodDef methods[] = {
    {"helper_ids", helper_ids, METH_NOARGS,
     "helper_ids() -> the native thread ids of the helper threads running in this process (Linux; else [])"},
    {"gather", gather, METH_VARARGS,
     "gather(tokens, document, position, padding, mask, rows, starts, stops, ends, counts, payload, shard, ids, "
     "maps, code, headers, eos, pad, block, used, firsts=None, threads=1, background=False, shards=None) -> -1; the "
     "document that could not be read; or -2 - s where maps[s] must hold shard s's mapping. firsts: each row's "
     "first document (checked), or None to search. threads: how many threads may share the rows (distinct rows, "
     "32 or more: the caller and helpers). background: return a Pending at once, the helpers copying (any number "
     "of rows). shards: each row's one shard, or -1 (checked as the rows are copied)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tokens", "Token blocks gathered from mapped shards.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tokens(void) {
    static int registered = 0;
    if (!registered && pthread_atfork(NULL, NULL, after_fork_child) == 0) registered = 1;
    if (PyType_Ready(&PendingType) < 0) return NULL;
    PyObject *made = PyModule_Create(&module);
    if (made == NULL) return NULL;
    Py_INCREF(&PendingType);
    if (PyModule_AddObject(made, "Pending", (PyObject *)&PendingType) < 0) {
        Py_DECREF(&PendingType);
        Py_DECREF(made);
        return NULL;
    }
    return made;
}
