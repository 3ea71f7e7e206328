/* Bilinear crop-resize-flip of one uint8 image into a batch row, HWC or CHW, in one pass.
 *
 * Why by hand: OpenCV's bilinear resize of interleaved 3-channel uint8 takes ~74 us for a 300->224 crop on
 * the development machine (its horizontal pass gathers pixel by pixel), then stoke still had to flip it and
 * split the channels into CHW planes. For raw pixel records that is most of the time per image. Here the
 * horizontal pass is table-driven: for each block of output bytes, the two source bytes each output byte
 * blends are fetched from a 128-byte window with one AVX-512 VBMI permute per tap (vpermt2b), so 21 RGB
 * output pixels cost a handful of instructions. The tables are built once per call (per crop) and put
 * the flip and the CHW order in the permutation, so both come free.
 *
 * Arithmetic (identical in the SIMD and the scalar path, so they agree bit for bit):
 *   x: fx = (x + 0.5) * src_w / dst_w - 0.5, clamped to the image as OpenCV's INTER_LINEAR does;
 *      weights wb = round(frac * 256), wa = 256 - wb;  h = a * wa + b * wb   (<= 65280, uint16)
 *   y: the same with rows, weights out of 16384;
 *      out = (((h0 * wy0) >> 16) + ((h1 * wy1) >> 16) + 32) >> 6   (16-bit multiply-high in SIMD)
 * which is within one grey level of exact bilinear interpolation.
 *
 * The GIL is released for the whole computation. The caller (stoke.pipeline.resample) checks shapes;
 * this file checks them again, because a buffer overrun must never depend on Python code being right.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define STOKE_X86 1
#endif

#define LANES 64  /* output bytes per block: one 512-bit register */
#define WINDOW 128 /* source bytes a block may draw from: two registers */
#define WEIGHT_X 256   /* horizontal weights sum to this (8 bits) */
#define WEIGHT_Y 16384 /* vertical weights sum to this (14 bits) */

typedef struct {
    int32_t base;      /* first source byte of the window, within the row */
    int32_t pixels;    /* output pixels in the block */
    int32_t x;         /* first output pixel */
    int32_t pad;
    uint8_t idx_a[LANES], idx_b[LANES]; /* window offsets of each output byte's two taps */
    uint16_t wa[LANES], wb[LANES];      /* their weights, summing to 256 (0 in unused lanes) */
} Block;

typedef struct {
    const uint8_t *src;
    Py_ssize_t src_stride;
    int src_h, src_w, channels;
    uint8_t *dst;
    int dst_h, dst_w, planar, flip_y;
    Block *blocks;
    int nblocks;
    int32_t *row0;      /* per output row: first source row */
    uint16_t *wy1;      /* per output row: the second row's weight (out of WEIGHT_Y) */
    uint16_t *hrows[2]; /* two horizontally resampled source rows, block-major */
    int cached[2];      /* which source row each holds, -1 for none */
} Plan;

/* The first tap and the second tap's weight (out of `one`) of output coordinate i, OpenCV's way. */
static void map_coordinate(int i, double scale, int size, int one, int32_t *first, uint16_t *weight) {
    double f = (i + 0.5) * scale - 0.5;
    int s = (int)floor(f);
    f -= s;
    if (s < 0) {
        s = 0;
        f = 0.0;
    }
    if (s >= size - 1) {
        s = size - 1;
        f = 0.0;
    }
    int w = (int)lround(f * one);
    if (w > one) w = one;
    *first = s;
    *weight = (uint16_t)w;
}

/* Blocks of output pixels whose taps fit one 128-byte window. */
static int build_blocks(Plan *p, int flip_x) {
    int c = p->channels, w = p->dst_w;
    int32_t *first = malloc(sizeof(int32_t) * (size_t)w);
    uint16_t *weight = malloc(sizeof(uint16_t) * (size_t)w);
    p->blocks = malloc(sizeof(Block) * (size_t)w); /* at most one block per pixel */
    if (!first || !weight || !p->blocks) {
        free(first);
        free(weight);
        return -1;
    }
    double scale = (double)p->src_w / (double)w;
    for (int x = 0; x < w; x++) {
        int from = flip_x ? w - 1 - x : x; /* a flip reads the unflipped output's pixels backwards */
        map_coordinate(from, scale, p->src_w, WEIGHT_X, &first[x], &weight[x]);
    }
    int most = LANES / c, n = 0;
    for (int x = 0; x < w;) {
        int count = w - x < most ? w - x : most;
        int32_t lo, hi;
        for (;;) { /* shrink the block until both taps of all its pixels fit the window */
            lo = first[x], hi = first[x];
            for (int i = 1; i < count; i++) {
                if (first[x + i] < lo) lo = first[x + i];
                if (first[x + i] > hi) hi = first[x + i];
            }
            int last = hi + 1 < p->src_w ? hi + 1 : p->src_w - 1;
            if ((last - lo + 1) * c <= WINDOW || count == 1) break;
            count--;
        }
        Block *b = &p->blocks[n++];
        memset(b, 0, sizeof(Block));
        b->base = lo * c;
        b->pixels = count;
        b->x = x;
        for (int i = 0; i < count; i++) {
            int32_t a = first[x + i];
            int32_t second = a + 1 < p->src_w ? a + 1 : a;
            for (int ch = 0; ch < c; ch++) {
                int k = p->planar ? ch * count + i : i * c + ch;
                b->idx_a[k] = (uint8_t)(a * c + ch - b->base);
                b->idx_b[k] = (uint8_t)(second * c + ch - b->base);
                b->wb[k] = weight[x + i];
                b->wa[k] = (uint16_t)(WEIGHT_X - weight[x + i]);
            }
        }
        x += count;
    }
    p->nblocks = n;
    free(first);
    free(weight);
    return 0;
}

/* ---- scalar path: the reference the SIMD path must match bit for bit ---- */

static void horizontal_scalar(const Plan *p, const uint8_t *row, uint16_t *out) {
    for (int j = 0; j < p->nblocks; j++) {
        const Block *b = &p->blocks[j];
        const uint8_t *window = row + b->base;
        for (int k = 0; k < LANES; k++) {
            out[j * LANES + k] = (uint16_t)(window[b->idx_a[k]] * b->wa[k] + window[b->idx_b[k]] * b->wb[k]);
        }
    }
}

static void store_block(const Plan *p, const Block *b, const uint8_t *values, int y) {
    int c = p->channels, n = b->pixels;
    if (p->planar) {
        for (int ch = 0; ch < c; ch++) {
            uint8_t *plane = p->dst + ((size_t)ch * p->dst_h + y) * p->dst_w + b->x;
            memcpy(plane, values + ch * n, (size_t)n);
        }
    } else {
        memcpy(p->dst + ((size_t)y * p->dst_w + b->x) * c, values, (size_t)n * c);
    }
}

static void vertical_scalar(const Plan *p, const uint16_t *h0, const uint16_t *h1, int wy1, int y) {
    uint32_t wy0 = WEIGHT_Y - (uint32_t)wy1;
    uint8_t values[LANES];
    for (int j = 0; j < p->nblocks; j++) {
        for (int k = 0; k < LANES; k++) {
            uint32_t v = (((h0[j * LANES + k] * wy0) >> 16) + ((h1[j * LANES + k] * (uint32_t)wy1) >> 16) + 32u) >> 6;
            values[k] = (uint8_t)v;
        }
        store_block(p, &p->blocks[j], values, y);
    }
}

/* ---- AVX-512 VBMI path ---- */

#ifdef STOKE_X86
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static inline __mmask64 window_mask(Py_ssize_t available) {
    if (available >= 64) return ~(__mmask64)0;
    if (available <= 0) return 0;
    return (((__mmask64)1) << available) - 1;
}

__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void horizontal_vbmi(const Plan *p, const uint8_t *row,
                                                                                     uint16_t *out) {
    Py_ssize_t row_bytes = (Py_ssize_t)p->src_w * p->channels;
    for (int j = 0; j < p->nblocks; j++) {
        const Block *b = &p->blocks[j];
        const uint8_t *window = row + b->base;
        Py_ssize_t left = row_bytes - b->base; /* masked loads never touch bytes past the row */
        __m512i lo = _mm512_maskz_loadu_epi8(window_mask(left), window);
        __m512i hi = _mm512_maskz_loadu_epi8(window_mask(left - 64), window + 64);
        __m512i a = _mm512_permutex2var_epi8(lo, _mm512_loadu_si512(b->idx_a), hi);
        __m512i bb = _mm512_permutex2var_epi8(lo, _mm512_loadu_si512(b->idx_b), hi);
        for (int half = 0; half < 2; half++) {
            __m256i a8 = half ? _mm512_extracti64x4_epi64(a, 1) : _mm512_castsi512_si256(a);
            __m256i b8 = half ? _mm512_extracti64x4_epi64(bb, 1) : _mm512_castsi512_si256(bb);
            __m512i wa = _mm512_loadu_si512(b->wa + half * 32);
            __m512i wb = _mm512_loadu_si512(b->wb + half * 32);
            __m512i h = _mm512_add_epi16(_mm512_mullo_epi16(_mm512_cvtepu8_epi16(a8), wa),
                                         _mm512_mullo_epi16(_mm512_cvtepu8_epi16(b8), wb));
            _mm512_storeu_si512(out + j * LANES + half * 32, h);
        }
    }
}

__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void vertical_vbmi(const Plan *p, const uint16_t *h0,
                                                                                   const uint16_t *h1, int wy1, int y) {
    __m512i w0 = _mm512_set1_epi16((short)(WEIGHT_Y - wy1)), w1 = _mm512_set1_epi16((short)wy1);
    __m512i half = _mm512_set1_epi16(32);
    __m512i iota = _mm512_set_epi8(63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43,
                                   42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22,
                                   21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    int c = p->channels;
    for (int j = 0; j < p->nblocks; j++) {
        const Block *b = &p->blocks[j];
        __m256i bytes[2];
        for (int q = 0; q < 2; q++) {
            __m512i r0 = _mm512_loadu_si512(h0 + j * LANES + q * 32), r1 = _mm512_loadu_si512(h1 + j * LANES + q * 32);
            __m512i s = _mm512_add_epi16(_mm512_add_epi16(_mm512_mulhi_epu16(r0, w0), _mm512_mulhi_epu16(r1, w1)), half);
            bytes[q] = _mm512_cvtepi16_epi8(_mm512_srli_epi16(s, 6));
        }
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(bytes[0]), bytes[1], 1);
        int n = b->pixels;
        if (p->planar) {
            for (int ch = 0; ch < c; ch++) {
                __m512i moved = ch ? _mm512_permutexvar_epi8(_mm512_add_epi8(iota, _mm512_set1_epi8((char)(ch * n))), v) : v;
                uint8_t *plane = p->dst + ((size_t)ch * p->dst_h + y) * p->dst_w + b->x;
                _mm512_mask_storeu_epi8(plane, window_mask(n), moved);
            }
        } else {
            _mm512_mask_storeu_epi8(p->dst + ((size_t)y * p->dst_w + b->x) * c, window_mask((Py_ssize_t)n * c), v);
        }
    }
}

static int have_vbmi(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vbmi");
    }
    return known;
}
#else
static int have_vbmi(void) { return 0; }
#endif

/* The horizontally resampled source row `row`, computed into a free slot unless already held. */
static const uint16_t *source_row(Plan *p, int row, int keep, int simd) {
    for (int s = 0; s < 2; s++)
        if (p->cached[s] == row) return p->hrows[s];
    int slot = p->cached[0] == keep ? 1 : 0;
    const uint8_t *pixels = p->src + (Py_ssize_t)row * p->src_stride;
#ifdef STOKE_X86
    if (simd)
        horizontal_vbmi(p, pixels, p->hrows[slot]);
    else
#endif
        horizontal_scalar(p, pixels, p->hrows[slot]);
    (void)simd;
    p->cached[slot] = row;
    return p->hrows[slot];
}

static int run(Plan *p, int flip_x, int simd) {
    if (build_blocks(p, flip_x) < 0) return -1;
    size_t row_values = (size_t)p->nblocks * LANES;
    p->hrows[0] = malloc(sizeof(uint16_t) * row_values * 2);
    p->row0 = malloc(sizeof(int32_t) * (size_t)p->dst_h);
    p->wy1 = malloc(sizeof(uint16_t) * (size_t)p->dst_h);
    if (!p->hrows[0] || !p->row0 || !p->wy1) return -1;
    p->hrows[1] = p->hrows[0] + row_values;
    p->cached[0] = p->cached[1] = -1;
    double scale = (double)p->src_h / (double)p->dst_h;
    for (int y = 0; y < p->dst_h; y++) map_coordinate(y, scale, p->src_h, WEIGHT_Y, &p->row0[y], &p->wy1[y]);
    for (int y = 0; y < p->dst_h; y++) {
        int r0 = p->row0[y], r1 = r0 + 1 < p->src_h ? r0 + 1 : r0;
        const uint16_t *h0 = source_row(p, r0, -2, simd);
        const uint16_t *h1 = source_row(p, r1, r0, simd);
        int target = p->flip_y ? p->dst_h - 1 - y : y;
#ifdef STOKE_X86
        if (simd)
            vertical_vbmi(p, h0, h1, p->wy1[y], target);
        else
#endif
            vertical_scalar(p, h0, h1, p->wy1[y], target);
    }
    return 0;
}

static void release(Plan *p) {
    free(p->blocks);
    free(p->hrows[0]);
    free(p->row0);
    free(p->wy1);
}

PyDoc_STRVAR(resize_doc,
             "resize(src, dst, planar, flip_x, flip_y, simd=True)\n\n"
             "Bilinear resize of ``src`` (H x W x C uint8, rows may be strided, pixels packed) into ``dst``\n"
             "(C-contiguous uint8: C x h x w when ``planar``, else h x w x C), mirrored as asked. ``simd=False``\n"
             "runs the scalar reference, which the SIMD path matches bit for bit.");

static PyObject *resize(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"src", "dst", "planar", "flip_x", "flip_y", "simd", NULL};
    PyObject *src_obj, *dst_obj;
    int planar, flip_x, flip_y, simd = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOppp|p", keywords, &src_obj, &dst_obj, &planar, &flip_x, &flip_y,
                                     &simd))
        return NULL;
    Py_buffer src, dst;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_RECORDS_RO) < 0) return NULL;
    if (PyObject_GetBuffer(dst_obj, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_ND) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    PyObject *result = NULL;
    const char *wrong = NULL;
    if (src.ndim != 3 || dst.ndim != 3 || src.itemsize != 1 || dst.itemsize != 1)
        wrong = "src and dst must be 3-D uint8 arrays";
    else if (src.shape[2] < 1 || src.shape[2] > 4 || src.strides[2] != 1 || src.strides[1] != src.shape[2] ||
             src.strides[0] < src.shape[1] * src.shape[2])
        wrong = "src must have 1 to 4 packed channels and positive row strides";
    else if (src.shape[0] < 1 || src.shape[1] < 1 || src.shape[0] > (1 << 24) || src.shape[1] > (1 << 24))
        wrong = "src must be between 1 and 2**24 pixels on each side";
    if (!wrong) {
        Py_ssize_t c = src.shape[2];
        Py_ssize_t h = planar ? dst.shape[1] : dst.shape[0], w = planar ? dst.shape[2] : dst.shape[1];
        Py_ssize_t dc = planar ? dst.shape[0] : dst.shape[2];
        if (dc != c)
            wrong = "dst must have as many channels as src";
        else if (h < 1 || w < 1 || h > (1 << 24) || w > (1 << 24))
            wrong = "dst must be between 1 and 2**24 pixels on each side";
        else {
            Plan p;
            memset(&p, 0, sizeof(p));
            p.src = src.buf;
            p.src_stride = src.strides[0];
            p.src_h = (int)src.shape[0];
            p.src_w = (int)src.shape[1];
            p.channels = (int)c;
            p.dst = dst.buf;
            p.dst_h = (int)h;
            p.dst_w = (int)w;
            p.planar = planar && c > 1;
            p.flip_y = flip_y;
            int failed;
            int use_simd = simd && have_vbmi();
            Py_BEGIN_ALLOW_THREADS
            failed = run(&p, flip_x, use_simd);
            release(&p);
            Py_END_ALLOW_THREADS
            if (failed)
                PyErr_NoMemory();
            else
                result = Py_NewRef(Py_None);
        }
    }
    if (wrong) PyErr_SetString(PyExc_ValueError, wrong);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyObject *simd_name(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(have_vbmi() ? "avx512vbmi" : "scalar");
}

static PyMethodDef methods[] = {
    {"resize", (PyCFunction)(void (*)(void))resize, METH_VARARGS | METH_KEYWORDS, resize_doc},
    {"simd", simd_name, METH_NOARGS, "The instruction set resize() uses here: 'avx512vbmi' or 'scalar'."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_resample", "Bilinear crop-resize-flip kernel.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
