/* The per-frame passes over the RCD bases on a CPU, each one read of the frame's data.
 *
 * X holds one row per half-size pixel (h2·wp2 rows, k = c1 + 13 float32 columns):
 * [d (c1 features) | 1 | noisy (12 values: sub-pixel rows dy = 0, 1 of (dx, RGB), 0..255)].
 * - rcd_fill: X's [1 | noisy] columns from the uint8 frame, the noise estimate's histogram and,
 *   on each line of X as soon as it is written, [d | 1]ᵀ·X and per-column sums of squares (what
 *   ND and AutoTune need);
 * - rcd_blend: the uint8 frame from X and a blend's weights;
 * - rcd_luma: the luma frame (R = G = B = BT.601 luma) of a uint8 frame.
 * And passes of the backbone itself (engine/fused.py):
 * - rcd_up_add_relu: a U-Net skip join, d = nearest-×2(u) + e, with relu(d) and Σ|d| per channel
 *   (rcd_up_add_relu_bf16: the same on bfloat16 tensors; rcd_conv_up_add_relu: the same with the
 *   1×1 convolution that makes u from the coarser scale);
 * - rcd_relu_down: its downsampling, a 2×2 stride-2 convolution of relu(e);
 * - rcd_res3x3: its 3×3 residual blocks x ← x + conv3×3(relu(x)), in place, by Winograd F(4×4, 3×3)
 *   (AVX2 only: where the kernels run AVX-512, engine/denoiser.py times it against oneDNN's).
 *
 * The blend. The frame's 12 values of a half-pixel are noisy + d·W + b (engine/denoiser.py,
 * _feature_weights): W (c1, 16) and b (16) come in as wm (c1 + 1, 16) float32, columns 12..15
 * unused, b already holding the +0.5 that makes the truncating conversion round to nearest.
 * torch does the same in three passes (a 1×1 convolution, a clamp, a strided depth-to-space
 * uint8 copy), each reading or writing a frame-sized float buffer; here each half-pixel is read
 * once and its 2×2 pixels are written once (measured 1.35–1.6× the time of a copy of those bytes).
 *
 * x86-64 with AVX2, FMA and F16C (the loader checks the CPU); built by engine/native.py with the
 * system C compiler and loaded with ctypes. Every other machine uses the torch path. The blend,
 * the statistics, the first layer and the downsampling also have AVX-512 versions, compiled into
 * the same library with a target attribute and chosen at run time where the CPU has AVX-512
 * (rcd_set_isa); each gives the same bytes as its AVX2 version. On a CPU with AMX the fill's
 * statistics for bfloat16 features run on the tile unit (gram_line_amx): the same statistics within
 * float32 rounding.
 */
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "these kernels need AVX2, FMA and F16C (-mavx2 -mfma -mf16c)"
#endif
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The kernels that sum over a frame (rcd_fill's statistics, rcd_up_add_relu's Σ|d|) split its rows
 * into this many bands (fewer for frames of fewer rows), whatever the number of threads, and add
 * the bands' sums in band order: the float sums, and so everything computed from them, come out
 * the same on any number of threads. The player infers on one thread per frame (player/worker.py)
 * where an offline render of the same recording may use two: its frames must still be identical. */
#define SUM_BANDS 16

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* bfloat16 (the upper half of a float32) for the bfloat16 backbone's tensors (engine/fused.py). To
 * bf16 rounds to nearest, ties to even, as torch converts (inputs are finite: NaN is not handled). */
static inline float bf16_to_f32(uint16_t v) {
    const uint32_t b = (uint32_t)v << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static inline __attribute__((always_inline)) __m256 bf16x8_load(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

static inline __attribute__((always_inline)) __m256 bf16x8_round(__m256 v) {  /* v rounded to bf16, as float32 */
    __m256i b = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    b = _mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    return _mm256_castsi256_ps(_mm256_and_si256(b, _mm256_set1_epi32((int)0xffff0000u)));
}

static inline __attribute__((always_inline)) void bf16x8_store(uint16_t *p, __m256 rounded) {  /* of bf16x8_round */
    const __m256i b = _mm256_srli_epi32(_mm256_castps_si256(rounded), 16);
    _mm_storeu_si128((__m128i *)p, _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
}

typedef struct {
    const void *x;    /* (h2 * wp2, k) float32, or float16 (the render cache's compact bases) */
    int64_t wp2, k, c1;
    const float *wm;  /* (c1 + 1, 16) */
    uint8_t *out;     /* (h, w, 3), C-contiguous */
    float *outf;      /* or (h, w, 3) float32, unrounded (out NULL): renders that keep a deeper source's bits */
    int64_t h, w;
    int64_t y0, y1;   /* half-size rows of this job */
} job_t;

/* The blend reads X once, front to back, and X (53 MB for the live model at 1080p) is not in cache
 * when the player blends it. The hardware prefetchers alone left the kernel waiting on memory: on a
 * 2-core Xeon (AVX-512), live model, 1080p, each blend followed by a 256 MB copy as engine.bench does,
 * 2.14× the copy-bandwidth floor for the AVX2 kernel and 1.75× for the AVX-512 one; asking for the
 * half-pixel BLEND_PREFETCH_BYTES ahead took them to 1.40× and 1.16× (4 and 16 KB ahead: about the
 * same; 32 KB: worse). Prefetches past the end of X are harmless (they never fault). */
#define BLEND_PREFETCH_BYTES 8192

static inline __attribute__((always_inline)) void prefetch_ahead(const job_t *j, int64_t i, const int half) {
    const int64_t bytes = j->k * (half ? 2 : 4);
    const char *p = (const char *)j->x + i * bytes + BLEND_PREFETCH_BYTES;
    for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* A half-pixel's 12 outputs (a0: 8, a1: 4; the bias holds the +0.5) clamped to 0..255 (min keeps its
 * second operand, so NaN -> 255), truncated and packed: bytes 0..5 row dy = 0, 6..11 row dy = 1. */
static inline __attribute__((always_inline)) __m128i blend_pack(__m256 a0, __m128 a1) {
    a0 = _mm256_max_ps(_mm256_min_ps(a0, _mm256_set1_ps(255.0f)), _mm256_setzero_ps());
    a1 = _mm_max_ps(_mm_min_ps(a1, _mm_set1_ps(255.0f)), _mm_setzero_ps());
    const __m256i i0 = _mm256_cvttps_epi32(a0);
    const __m128i i1 = _mm_cvttps_epi32(a1);
    const __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(i0), _mm256_extracti128_si256(i0, 1));
    return _mm_packus_epi16(p16, _mm_packus_epi32(i1, i1));
}

/* A half-pixel's 12 outputs unrounded (the bias without the +0.5), clamped to 0..255 as blend_pack
 * clamps, into its two float rows: n = 6 floats a row, or 3 for the last column of an odd width. */
static inline __attribute__((always_inline)) void blend_store_f(__m256 a0, __m128 a1, float *row0, float *row1,
                                                                int64_t x2, const size_t n) {
    float t[12];
    _mm256_storeu_ps(t, _mm256_max_ps(_mm256_min_ps(a0, _mm256_set1_ps(255.0f)), _mm256_setzero_ps()));
    _mm_storeu_ps(t + 8, _mm_max_ps(_mm_min_ps(a1, _mm_set1_ps(255.0f)), _mm_setzero_ps()));
    memcpy(row0 + 6 * x2, t, n * sizeof(float));
    if (row1) memcpy(row1 + 6 * x2, t + 6, n * sizeof(float));
}

/* A packed half-pixel (blend_pack) into its two rows as 8-byte stores, whose 2 extra bytes are the
 * next half-pixel's, written next: never the row's last. */
static inline __attribute__((always_inline)) void blend_store(__m128i p8, uint8_t *row0, uint8_t *row1, int64_t x2) {
    _mm_storel_epi64((__m128i *)(row0 + 6 * x2), p8);
    if (row1) _mm_storel_epi64((__m128i *)(row1 + 6 * x2), _mm_srli_si128(p8, 6));
}

/* c1 and half are compile-time constants in each specialisation (blend_rows): for the shipped
 * models (c1 16, 32) the feature loop unrolls, and the float32 path carries no conversion. In
 * float32 it takes two half-pixels at a time, each weight row loaded once for both (each half-pixel's
 * sums in the same order as alone: the same bytes). Both builds alternating in one process, caches
 * flushed, one thread as the player's compositor blends, live model: 4.54 → 4.17 ms at 720p, 9.28 →
 * 8.42 at 1080p; on two threads 2.29 → 2.23 and 4.69 → 4.50; quality (c1 32) within noise. */
static inline __attribute__((always_inline)) void blend_rows_c1(const job_t *j, const int64_t c1, const int half,
                                                                const int fout) {
    const int64_t w = j->w, h = j->h;
    const int64_t w2 = (w + 1) / 2;  /* half-pixels per row that reach the frame */
    const float *wm = j->wm;
    const __m256 b0 = _mm256_loadu_ps(wm + c1 * 16);  /* outputs 0..7 */
    const __m128 b1 = _mm_loadu_ps(wm + c1 * 16 + 8); /* outputs 8..11 */
    for (int64_t y2 = j->y0; y2 < j->y1; y2++) {
        uint8_t *row0 = fout ? NULL : j->out + (2 * y2) * w * 3;
        uint8_t *row1 = (!fout && 2 * y2 + 1 < h) ? row0 + w * 3 : NULL;
        float *frow0 = fout ? j->outf + (2 * y2) * w * 3 : NULL;
        float *frow1 = (fout && 2 * y2 + 1 < h) ? frow0 + w * 3 : NULL;
        const float *line = half ? NULL : (const float *)j->x + y2 * j->wp2 * j->k;
        const uint16_t *hline = half ? (const uint16_t *)j->x + y2 * j->wp2 * j->k : NULL;
        int64_t x2 = 0;
        if (!half && c1 % 2 == 0)  /* float32: two half-pixels at a time, neither the row's last */
            for (; x2 + 2 < w2; x2 += 2) {
                prefetch_ahead(j, y2 * j->wp2 + x2, 0);
                prefetch_ahead(j, y2 * j->wp2 + x2 + 1, 0);
                const float *r = line + x2 * j->k, *s = r + j->k;
                __m256 a0 = _mm256_add_ps(b0, _mm256_loadu_ps(r + c1 + 1)), e0 = _mm256_setzero_ps();
                __m128 a1 = _mm_add_ps(b1, _mm_loadu_ps(r + c1 + 9)), e1 = _mm_setzero_ps();
                __m256 a0s = _mm256_add_ps(b0, _mm256_loadu_ps(s + c1 + 1)), e0s = _mm256_setzero_ps();
                __m128 a1s = _mm_add_ps(b1, _mm_loadu_ps(s + c1 + 9)), e1s = _mm_setzero_ps();
                for (int64_t q = 0; q < c1; q += 2) {  /* each weight row loaded once for both */
                    const __m256 w0 = _mm256_loadu_ps(wm + q * 16), w2v = _mm256_loadu_ps(wm + q * 16 + 16);
                    const __m128 w1 = _mm_loadu_ps(wm + q * 16 + 8), w3 = _mm_loadu_ps(wm + q * 16 + 24);
                    const __m256 d = _mm256_broadcast_ss(r + q), e = _mm256_broadcast_ss(r + q + 1);
                    a0 = _mm256_fmadd_ps(d, w0, a0);
                    a1 = _mm_fmadd_ps(_mm256_castps256_ps128(d), w1, a1);
                    e0 = _mm256_fmadd_ps(e, w2v, e0);
                    e1 = _mm_fmadd_ps(_mm256_castps256_ps128(e), w3, e1);
                    const __m256 ds = _mm256_broadcast_ss(s + q), es = _mm256_broadcast_ss(s + q + 1);
                    a0s = _mm256_fmadd_ps(ds, w0, a0s);
                    a1s = _mm_fmadd_ps(_mm256_castps256_ps128(ds), w1, a1s);
                    e0s = _mm256_fmadd_ps(es, w2v, e0s);
                    e1s = _mm_fmadd_ps(_mm256_castps256_ps128(es), w3, e1s);
                }
                if (fout) {
                    blend_store_f(_mm256_add_ps(a0, e0), _mm_add_ps(a1, e1), frow0, frow1, x2, 6);
                    blend_store_f(_mm256_add_ps(a0s, e0s), _mm_add_ps(a1s, e1s), frow0, frow1, x2 + 1, 6);
                    continue;
                }
                blend_store(blend_pack(_mm256_add_ps(a0, e0), _mm_add_ps(a1, e1)), row0, row1, x2);
                blend_store(blend_pack(_mm256_add_ps(a0s, e0s), _mm_add_ps(a1s, e1s)), row0, row1, x2 + 1);
            }
        for (; x2 < w2; x2++) {
            prefetch_ahead(j, y2 * j->wp2 + x2, half);
            __m256 a0, e0 = _mm256_setzero_ps();  /* odd features sum apart: two FMA chains, not one */
            __m128 a1, e1 = _mm_setzero_ps();
            int64_t q = 0;
            if (half) {  /* float16 X: the features converted in registers and broadcast from there
                            (converting the row into a buffer and reading it back took 2.3× as long) */
                const uint16_t *hr = hline + x2 * j->k;
                __m256 f[(64 + 7) / 8];  /* features 8 at a time: the last read stays in the row (k ≥ c1 + 13) */
                for (int64_t v = 0; 8 * v < c1; v++) f[v] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(hr + 8 * v)));
                a0 = _mm256_add_ps(b0, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(hr + c1 + 1))));
                a1 = _mm_add_ps(b1, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(hr + c1 + 9))));
#define FEATURE8(q) _mm256_permutevar8x32_ps(f[(q) >> 3], _mm256_set1_epi32((int)((q) & 7)))
                for (; q + 1 < c1; q += 2) {
                    const __m256 d = FEATURE8(q), e = FEATURE8(q + 1);
                    a0 = _mm256_fmadd_ps(d, _mm256_loadu_ps(wm + q * 16), a0);
                    a1 = _mm_fmadd_ps(_mm256_castps256_ps128(d), _mm_loadu_ps(wm + q * 16 + 8), a1);
                    e0 = _mm256_fmadd_ps(e, _mm256_loadu_ps(wm + q * 16 + 16), e0);
                    e1 = _mm_fmadd_ps(_mm256_castps256_ps128(e), _mm_loadu_ps(wm + q * 16 + 24), e1);
                }
                if (q < c1) {
                    const __m256 d = FEATURE8(q);
                    a0 = _mm256_fmadd_ps(d, _mm256_loadu_ps(wm + q * 16), a0);
                    a1 = _mm_fmadd_ps(_mm256_castps256_ps128(d), _mm_loadu_ps(wm + q * 16 + 8), a1);
                }
#undef FEATURE8
            } else {
                const float *r = line + x2 * j->k;
                a0 = _mm256_add_ps(b0, _mm256_loadu_ps(r + c1 + 1));
                a1 = _mm_add_ps(b1, _mm_loadu_ps(r + c1 + 9));
                for (; q + 1 < c1; q += 2) {
                    const __m256 d = _mm256_broadcast_ss(r + q), e = _mm256_broadcast_ss(r + q + 1);
                    a0 = _mm256_fmadd_ps(d, _mm256_loadu_ps(wm + q * 16), a0);
                    a1 = _mm_fmadd_ps(_mm256_castps256_ps128(d), _mm_loadu_ps(wm + q * 16 + 8), a1);
                    e0 = _mm256_fmadd_ps(e, _mm256_loadu_ps(wm + q * 16 + 16), e0);
                    e1 = _mm_fmadd_ps(_mm256_castps256_ps128(e), _mm_loadu_ps(wm + q * 16 + 24), e1);
                }
                if (q < c1) {
                    const __m256 d = _mm256_broadcast_ss(r + q);
                    a0 = _mm256_fmadd_ps(d, _mm256_loadu_ps(wm + q * 16), a0);
                    a1 = _mm_fmadd_ps(_mm256_castps256_ps128(d), _mm_loadu_ps(wm + q * 16 + 8), a1);
                }
            }
            if (fout) {
                blend_store_f(_mm256_add_ps(a0, e0), _mm_add_ps(a1, e1), frow0, frow1, x2, (2 * x2 + 1 < w) ? 6 : 3);
                continue;
            }
            const __m128i p8 = blend_pack(_mm256_add_ps(a0, e0), _mm_add_ps(a1, e1));
            if (x2 + 1 < w2) {
                blend_store(p8, row0, row1, x2);
            } else {  /* the row's last half-pixel: exact bytes, 1 or 2 columns */
                uint8_t b[16];
                _mm_storeu_si128((__m128i *)b, p8);
                const size_t n = (2 * x2 + 1 < w) ? 6 : 3;
                memcpy(row0 + 6 * x2, b, n);
                if (row1) memcpy(row1 + 6 * x2, b + 6, n);
            }
        }
    }
}

/* ---- the same blend with AVX-512 ----------------------------------------------------------------
 *
 * On CPUs with AVX-512 (F, VL, BW, DQ) a half-pixel's 12 outputs fit one 16-lane vector: one FMA per
 * feature where AVX2 needs an 8-lane and a 4-lane one, and with 32 vector registers the weights of
 * the shipped live model (c1 16) stay in registers for the whole frame instead of being loaded per
 * half-pixel. The two FMA chains (even and odd features), the clamp and the truncation are those of
 * blend_rows_c1 lane for lane, so both kernels give the same bytes (tests/test_engine.py). Built into
 * the same library with a target attribute (the library still loads on AVX2-only CPUs) and chosen
 * at run time (rcd_set_isa). Measured on a 2-core Xeon with AVX-512, live model, 2 threads: see
 * README.md, "Engine timings". */
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define BLEND_MAX_C1 51 /* k = c1 + 13 ≤ 64 */

static inline AVX512 __attribute__((always_inline)) void blend_rows_c1_512(const job_t *j, const int64_t c1, const int half) {
    const int64_t w = j->w, h = j->h;
    const int64_t w2 = (w + 1) / 2;
    const float *wm = j->wm;
    const __m512 b = _mm512_loadu_ps(wm + c1 * 16); /* outputs 0..11; lanes 12..15 unused */
    const __m512 hi = _mm512_set1_ps(255.0f), lo = _mm512_setzero_ps();
    __m512 wv[BLEND_MAX_C1];
    for (int64_t q = 0; q < c1; q++) wv[q] = _mm512_loadu_ps(wm + q * 16);
    for (int64_t y2 = j->y0; y2 < j->y1; y2++) {
        uint8_t *row0 = j->out + (2 * y2) * w * 3;
        uint8_t *row1 = (2 * y2 + 1 < h) ? row0 + w * 3 : NULL;
        const float *line = half ? NULL : (const float *)j->x + y2 * j->wp2 * j->k;
        const uint16_t *hline = half ? (const uint16_t *)j->x + y2 * j->wp2 * j->k : NULL;
        for (int64_t x2 = 0; x2 < w2; x2++) {
            prefetch_ahead(j, y2 * j->wp2 + x2, half);
            __m512 a, e = _mm512_setzero_ps();
            int64_t q = 0;
            if (half) {  /* features converted in registers, each broadcast from there by a permute */
                const uint16_t *hr = hline + x2 * j->k;
                __m512 f[(BLEND_MAX_C1 + 15) / 16];
                for (int64_t v = 0; 16 * v < c1; v++) {
                    const int64_t left = c1 - 16 * v;
                    const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
                    f[v] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, hr + 16 * v));
                }
                a = _mm512_add_ps(b, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(0x0fff, hr + c1 + 1)));
#define FEATURE(q) _mm512_permutexvar_ps(_mm512_set1_epi32((int)((q) & 15)), f[(q) >> 4])
                for (; q + 1 < c1; q += 2) {
                    a = _mm512_fmadd_ps(FEATURE(q), wv[q], a);
                    e = _mm512_fmadd_ps(FEATURE(q + 1), wv[q + 1], e);
                }
                if (q < c1) a = _mm512_fmadd_ps(FEATURE(q), wv[q], a);
#undef FEATURE
            } else {
                const float *r = line + x2 * j->k;
                a = _mm512_add_ps(b, _mm512_maskz_loadu_ps(0x0fff, r + c1 + 1));
                for (; q + 1 < c1; q += 2) {
                    a = _mm512_fmadd_ps(_mm512_set1_ps(r[q]), wv[q], a);
                    e = _mm512_fmadd_ps(_mm512_set1_ps(r[q + 1]), wv[q + 1], e);
                }
                if (q < c1) a = _mm512_fmadd_ps(_mm512_set1_ps(r[q]), wv[q], a);
            }
            a = _mm512_add_ps(a, e);
            a = _mm512_max_ps(_mm512_min_ps(a, hi), lo); /* as blend_rows_c1: NaN -> 255 */
            const __m128i p8 = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(a)); /* 0..255: truncation is exact */
            if (x2 + 1 < w2) {
                _mm_storel_epi64((__m128i *)(row0 + 6 * x2), p8);
                if (row1) _mm_storel_epi64((__m128i *)(row1 + 6 * x2), _mm_srli_si128(p8, 6));
            } else {
                uint8_t bytes[16];
                _mm_storeu_si128((__m128i *)bytes, p8);
                const size_t n = (2 * x2 + 1 < w) ? 6 : 3;
                memcpy(row0 + 6 * x2, bytes, n);
                if (row1) memcpy(row1 + 6 * x2, bytes + 6, n);
            }
        }
    }
}

static AVX512 void blend_rows_512(const job_t *j, const int half) {
    if (half) {
        if (j->c1 == 16) blend_rows_c1_512(j, 16, 1);
        else if (j->c1 == 32) blend_rows_c1_512(j, 32, 1);
        else blend_rows_c1_512(j, j->c1, 1);
    } else {
        if (j->c1 == 16) blend_rows_c1_512(j, 16, 0);
        else if (j->c1 == 32) blend_rows_c1_512(j, 32, 0);
        else blend_rows_c1_512(j, j->c1, 0);
    }
}

/* Which instruction set the kernels that have two versions use: 3 = AVX-512, 2 = AVX2; 4 = AVX-512,
 * and the fill's statistics on AMX tiles where the features are bfloat16 (gram_line_amx). Set on the
 * first call of rcd_set_isa (engine/native.py calls it on loading) from the CPU, or kept lower on
 * request (RCD_NATIVE_AVX512=0, RCD_NATIVE_AMX=0, tests). */
static int isa_level = 2;

static int amx_usable(void);  /* 4 = AVX-512 with AMX for the statistics: see gram_line_amx */

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}

/* want: 4 = the best this CPU has, 3 = AVX-512 at most, 2 = AVX2 only, -1 = no change. Returns the
 * level in use. Not while a kernel runs. */
int rcd_set_isa(int want) {
    if (want >= 0) isa_level = (want >= 3 && cpu_has_avx512()) ? (want >= 4 && amx_usable() ? 4 : 3) : 2;
    return isa_level;
}

static void blend_rows(const job_t *j, const int half) {
    if (half) {
        if (j->c1 == 16) blend_rows_c1(j, 16, 1, 0);
        else if (j->c1 == 32) blend_rows_c1(j, 32, 1, 0);
        else blend_rows_c1(j, j->c1, 1, 0);
    } else {
        if (j->c1 == 16) blend_rows_c1(j, 16, 0, 0);
        else if (j->c1 == 32) blend_rows_c1(j, 32, 0, 0);
        else blend_rows_c1(j, j->c1, 0, 0);
    }
}

static void blend_rows_float(const job_t *j, const int half) {  /* float output: AVX2 on every CPU (renders only) */
    if (half) blend_rows_c1(j, j->c1, 1, 1);
    else if (j->c1 == 16) blend_rows_c1(j, 16, 0, 1);
    else blend_rows_c1(j, j->c1, 0, 1);
}

/* Blend a frame of h×w pixels; X rows are wp2 half-pixels wide (wp2 ≥ (w + 1) / 2, padding
 * columns skipped). Chunks of BLEND_CHUNK half-size rows go to `threads` OpenMP threads as each
 * asks for one: built with -fopenmp this library shares the libgomp torch has already loaded
 * (the same soname), so the blend runs on torch's own worker threads instead of competing with
 * them for the cores. Handing out chunks rather than one band per thread, a thread that the
 * system interrupts holds up less (live model, the two library builds alternating in one process,
 * medians of five runs each: 1–9 % faster at 720p and 0–8 % at 1080p, never slower); every pixel
 * is computed the same way whichever thread takes it, so the output does not depend on the
 * schedule. The kernels that also sum statistics keep fixed bands, statically assigned (SUM_BANDS):
 * their float sums must come out the same on every run (a recording re-renders bit-identically). 0 = done. */
#define BLEND_CHUNK 8
static int blend_any(const void *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, uint8_t *out, float *outf,
                     int64_t h, int64_t w, int threads, const int half) {
    if (k != c1 + 13 || k > 64 || wp2 < (w + 1) / 2 || h < 1 || w < 1) return 1;
    const int64_t h2 = (h + 1) / 2;
    const int64_t n = threads < 1 ? 1 : (threads > h2 ? h2 : threads);
    const int64_t chunks = (h2 + BLEND_CHUNK - 1) / BLEND_CHUNK;
    const int avx512 = isa_level >= 3 && c1 <= BLEND_MAX_C1;
#pragma omp parallel for num_threads(n) schedule(dynamic, 1)
    for (int64_t i = 0; i < chunks; i++) {
        const int64_t y0 = BLEND_CHUNK * i, y1 = y0 + BLEND_CHUNK < h2 ? y0 + BLEND_CHUNK : h2;
        const job_t job = {x, wp2, k, c1, wm, out, outf, h, w, y0, y1};
        if (outf) blend_rows_float(&job, half);
        else if (avx512) blend_rows_512(&job, half);
        else blend_rows(&job, half);
    }
    return 0;
}

int rcd_blend(const float *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, uint8_t *out, int64_t h,
              int64_t w, int threads) {
    return blend_any(x, wp2, k, c1, wm, out, NULL, h, w, threads, 0);
}

/* The same unrounded, into float32 (h, w, 3) clamped to 0..255: wm's bias without the +0.5. */
int rcd_blend_float(const float *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, float *out, int64_t h,
                    int64_t w, int threads) {
    return blend_any(x, wp2, k, c1, wm, NULL, out, h, w, threads, 0);
}

/* The same from X stored in float16 (IEEE half, as torch.float16). */
int rcd_blend_f16(const uint16_t *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, uint8_t *out, int64_t h,
                  int64_t w, int threads) {
    return blend_any(x, wp2, k, c1, wm, out, NULL, h, w, threads, 1);
}

int rcd_blend_f16_float(const uint16_t *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, float *out, int64_t h,
                        int64_t w, int threads) {
    return blend_any(x, wp2, k, c1, wm, NULL, out, h, w, threads, 1);
}

/* X's [1 | noisy] columns from a float32 frame (h, w, 3) in 8-bit units, replicate-padded to hp × wp:
 * what rcd_fill writes from a uint8 frame, for renders that keep a deeper source's bits (engine/
 * denoiser.py, infer's `fine`; torch's two strided copies took about 10 ms a 720p frame). 0 = done. */
int rcd_put_noisy_f(float *x, int64_t k, int64_t c1, const float *rgb, int64_t h, int64_t w, int64_t hp, int64_t wp,
                    int threads) {
    if (k != c1 + 13 || hp < h || wp < w || hp % 2 || wp % 2 || h < 1 || w < 1) return 1;
    const int64_t h2 = hp / 2, w2 = wp / 2;
#pragma omp parallel for num_threads(threads < 1 ? 1 : threads) schedule(static)
    for (int64_t y2 = 0; y2 < h2; y2++) {
        for (int dy = 0; dy < 2; dy++) {
            const float *src = rgb + (2 * y2 + dy < h ? 2 * y2 + dy : h - 1) * w * 3;
            for (int64_t x2 = 0; x2 < w2; x2++) {
                float *row = x + (y2 * w2 + x2) * k + c1;  /* [1 | dy 0: dx 0 RGB, dx 1 RGB | dy 1: …] */
                row[0] = 1.0f;
                for (int dx = 0; dx < 2; dx++)
                    memcpy(row + 1 + 6 * dy + 3 * dx, src + (2 * x2 + dx < w ? 2 * x2 + dx : w - 1) * 3, 3 * sizeof(float));
            }
        }
    }
    return 0;
}

/* ---- statistics: the cross Gram [d | 1]ᵀ·X over a frame's half-pixels --------------------------
 *
 * g (c1 + 1, k) float64 = Σ_p x_p[0..c1]ᵀ · x_p over the h2 × w2 half-pixels that lie in the frame
 * (padding columns skipped), and sq (k) float64 = Σ_p x_p² per column. This is what ND and AutoTune
 * need of a frame (engine/denoiser.py, _covariance). rcd_fill computes it line by line while each
 * line of X is still in cache: at 720p (live model, 2 threads) 1.5–1.8 ms more than the fill
 * alone, where session 11's separate pass over X (its accumulators spilled to the stack, the noisy
 * block untransposed) took 3.8–4.3 ms.
 *
 * Blocking: a line's half-pixels are taken in runs of GRAM_RUN (they stay in L1). g's rows are
 * taken in tiles of RB rows × NVB column vectors whose RB × NVB float32 accumulators stay in
 * registers over the run (both compile-time: one instantiation per shape, gram_tile); each run's
 * tile then goes into float64 sums with vector adds. float32 over a 128-pixel run loses nothing
 * that matters; float64 across runs keeps the small eigenvalues of near-collinear maps
 * (decorrelate.py, covariance).
 *
 * What is multiplied. The d × d block of g is symmetric: row i is summed from the 8-column vector
 * that holds column i to d's last vector (the rest is copied from the upper triangle at the end).
 * The noisy × d block is summed transposed, each noisy column broadcast against d's vectors, so
 * (c1 a multiple of 8) no product lands on the ones column or on lanes past column k; for other
 * c1, d's last vector reaches into those columns and its extra lanes are ignored. The ones row (Σ_p x_p;
 * X's column c1 must be ones), and with it d × 1, comes from the column sums of the squares' pass,
 * with no products. For c1 = 16: 48 vector FMAs per half-pixel (72 for the plain product, 56 with
 * the noisy block untransposed); c1 = 32: 128 (204, 144). Measured in L1 on the 2-core Zen 3 VM:
 * 27–31 TSC cycles per half-pixel against 32–39 untransposed.
 *
 * The squares' pass reads each row of X as nv = ⌈k/8⌉ whole vectors, the last reaching past
 * column k into the next row (lanes that land in padding columns, never returned); a line's last
 * half-pixel, which may end the buffer, is read from a zero-padded copy instead. Measured on the
 * same VM (c1 16, 640 half-pixels × 360 lines): 90 TSC cycles per half-pixel with the accumulators
 * spilled to the stack in the first version of this loop, about 45 with register tiles.
 */
#define GRAM_RUN 128
#define GRAM_MAX_NV 8 /* k ≤ 64 columns */
#define GRAM_NOISY 12 /* X's noisy columns: k = c1 + 13 */

/* Output rows i = 0 .. RB - 1 (out + i·ok) over vectors v0 .. v0 + NVB - 1: Σ over n rows of X from
 * x (stride k) of x[b0 + i] · x[8·(v0 + v) ..]. RB and NVB compile-time: the accumulators stay in
 * registers, one instantiation per shape. */
static inline __attribute__((always_inline)) void gram_tile(const float *x, int64_t n, int64_t k, int64_t b0,
                                                            int64_t v0, const int RB, const int NVB, double *out,
                                                            int64_t ok) {
    __m256 acc[8][GRAM_MAX_NV];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NVB; v++) acc[i][v] = _mm256_setzero_ps();
    for (int64_t p = 0; p < n; p++) {
        const float *r = x + p * k;
        __m256 rv[GRAM_MAX_NV];
#pragma GCC unroll 8
        for (int v = 0; v < NVB; v++) rv[v] = _mm256_loadu_ps(r + 8 * (v0 + v));
#pragma GCC unroll 8
        for (int i = 0; i < RB; i++) {
            const __m256 d = _mm256_broadcast_ss(r + b0 + i);
#pragma GCC unroll 8
            for (int v = 0; v < NVB; v++) acc[i][v] = _mm256_fmadd_ps(d, rv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NVB; v++) {
            double *o = out + i * ok + 8 * (v0 + v);
            _mm256_storeu_pd(o, _mm256_add_pd(_mm256_loadu_pd(o), _mm256_cvtps_pd(_mm256_castps256_ps128(acc[i][v]))));
            _mm256_storeu_pd(o + 4, _mm256_add_pd(_mm256_loadu_pd(o + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(acc[i][v], 1))));
        }
}

/* Σ x and Σ x² per column over n rows (NV vectors each): into `sums` and `sq` (gk doubles each). */
static inline __attribute__((always_inline)) void gram_sums(const float *x, int64_t n, int64_t k, const int NV,
                                                            double *sums, double *sq) {
    __m256 s[GRAM_MAX_NV], cs[GRAM_MAX_NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) s[v] = cs[v] = _mm256_setzero_ps();
    for (int64_t p = 0; p < n; p++) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            const __m256 t = _mm256_loadu_ps(x + p * k + 8 * v);
            s[v] = _mm256_fmadd_ps(t, t, s[v]);
            cs[v] = _mm256_add_ps(cs[v], t);
        }
    }
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        double *o = sq + 8 * v, *c = sums + 8 * v;
        _mm256_storeu_pd(o, _mm256_add_pd(_mm256_loadu_pd(o), _mm256_cvtps_pd(_mm256_castps256_ps128(s[v]))));
        _mm256_storeu_pd(o + 4, _mm256_add_pd(_mm256_loadu_pd(o + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(s[v], 1))));
        _mm256_storeu_pd(c, _mm256_add_pd(_mm256_loadu_pd(c), _mm256_cvtps_pd(_mm256_castps256_ps128(cs[v]))));
        _mm256_storeu_pd(c + 4, _mm256_add_pd(_mm256_loadu_pd(c + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(cs[v], 1))));
    }
}

/* The most rows per tile for NVB vectors: RB × NVB ≤ 12 accumulators beside the row's vectors. */
static const int gram_rb_max[GRAM_MAX_NV + 1] = {0, 8, 6, 4, 3, 2, 2, 1, 1};

#define GT(NVB, RB) case NVB * 16 + RB: gram_tile(x, n, k, b0, v0, RB, NVB, out, gk); break;
#define GT_ALL                                                          \
    GT(1, 1) GT(1, 2) GT(1, 3) GT(1, 4) GT(1, 5) GT(1, 6) GT(1, 7) GT(1, 8) \
    GT(2, 1) GT(2, 2) GT(2, 3) GT(2, 4) GT(2, 5) GT(2, 6)               \
    GT(3, 1) GT(3, 2) GT(3, 3) GT(3, 4)                                 \
    GT(4, 1) GT(4, 2) GT(4, 3)                                          \
    GT(5, 1) GT(5, 2) GT(6, 1) GT(6, 2) GT(7, 1) GT(8, 1)
#define GS(NV) case NV: gram_sums(x, n, k, NV, sums, sq); break;

/* gram_tile and gram_sums with AVX-512: two of their 8-column vectors in one 16-lane register (an
 * odd last one through a masked load), so half the FMAs, and with 32 registers taller tiles
 * (gram_rb_max_512: up to 24 accumulators). Every lane sums the same products over the same run
 * in the same order as the AVX2 code, and the runs go into the float64 sums the same way: the same
 * statistics, bit for bit (tests/test_engine.py). */
static inline AVX512 __attribute__((always_inline)) __m512 load_pair(const float *r, int v, int NVB) {
    return v + 1 < NVB ? _mm512_loadu_ps(r + 8 * v) : _mm512_maskz_loadu_ps(0x00ff, r + 8 * v);
}

static inline AVX512 __attribute__((always_inline)) void add_pair_pd(double *o, __m512 a, int two) {
    _mm512_storeu_pd(o, _mm512_add_pd(_mm512_loadu_pd(o), _mm512_cvtps_pd(_mm512_castps512_ps256(a))));
    if (two) {
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
        _mm512_storeu_pd(o + 8, _mm512_add_pd(_mm512_loadu_pd(o + 8), _mm512_cvtps_pd(hi)));
    }
}

static inline AVX512 __attribute__((always_inline)) void gram_tile_512(const float *x, int64_t n, int64_t k,
                                                                       int64_t b0, int64_t v0, const int RB,
                                                                       const int NVB, double *out, int64_t ok) {
    __m512 acc[12][GRAM_MAX_NV / 2];
#pragma GCC unroll 12
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NVB; v += 2) acc[i][v / 2] = _mm512_setzero_ps();
    for (int64_t p = 0; p < n; p++) {
        const float *r = x + p * k;
        __m512 rv[GRAM_MAX_NV / 2];
#pragma GCC unroll 4
        for (int v = 0; v < NVB; v += 2) rv[v / 2] = load_pair(r + 8 * v0, v, NVB);
#pragma GCC unroll 12
        for (int i = 0; i < RB; i++) {
            const __m512 d = _mm512_set1_ps(r[b0 + i]);
#pragma GCC unroll 4
            for (int v = 0; v < NVB; v += 2) acc[i][v / 2] = _mm512_fmadd_ps(d, rv[v / 2], acc[i][v / 2]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NVB; v += 2) add_pair_pd(out + i * ok + 8 * (v0 + v), acc[i][v / 2], v + 1 < NVB);
}

static inline AVX512 __attribute__((always_inline)) void gram_sums_512(const float *x, int64_t n, int64_t k,
                                                                       const int NV, double *sums, double *sq) {
    __m512 s[GRAM_MAX_NV / 2], cs[GRAM_MAX_NV / 2];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v += 2) s[v / 2] = cs[v / 2] = _mm512_setzero_ps();
    for (int64_t p = 0; p < n; p++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v += 2) {
            const __m512 t = load_pair(x + p * k, v, NV);
            s[v / 2] = _mm512_fmadd_ps(t, t, s[v / 2]);
            cs[v / 2] = _mm512_add_ps(cs[v / 2], t);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v += 2) {
        add_pair_pd(sq + 8 * v, s[v / 2], v + 1 < NV);
        add_pair_pd(sums + 8 * v, cs[v / 2], v + 1 < NV);
    }
}

/* The most rows per AVX-512 tile for NVB 8-column vectors: up to 24 accumulators, at most 12 rows. */
static const int gram_rb_max_512[GRAM_MAX_NV + 1] = {0, 12, 12, 12, 12, 8, 8, 6, 6};

#define GT5(NVB, RB) case NVB * 16 + RB: gram_tile_512(x, n, k, b0, v0, RB, NVB, out, gk); break;
#define GT5_ROWS_12(NVB)                                                                          \
    GT5(NVB, 1) GT5(NVB, 2) GT5(NVB, 3) GT5(NVB, 4) GT5(NVB, 5) GT5(NVB, 6) GT5(NVB, 7) GT5(NVB, 8) \
    GT5(NVB, 9) GT5(NVB, 10) GT5(NVB, 11) GT5(NVB, 12)
#define GT5_ROWS_8(NVB) GT5(NVB, 1) GT5(NVB, 2) GT5(NVB, 3) GT5(NVB, 4) GT5(NVB, 5) GT5(NVB, 6) GT5(NVB, 7) GT5(NVB, 8)
#define GT5_ALL                                                                                   \
    GT5_ROWS_12(1) GT5_ROWS_12(2) GT5_ROWS_12(3) GT5_ROWS_12(4) GT5_ROWS_8(5) GT5_ROWS_8(6)       \
    GT5(7, 1) GT5(7, 2) GT5(7, 3) GT5(7, 4) GT5(7, 5) GT5(7, 6)                                   \
    GT5(8, 1) GT5(8, 2) GT5(8, 3) GT5(8, 4) GT5(8, 5) GT5(8, 6)
#define GS5(NV) case NV: gram_sums_512(x, n, k, NV, sums, sq); break;

/* One band's partial statistics, each block gk = 8·nv doubles per row: */
typedef struct {
    double *dd;    /* (c1, gk): d_i · x_j for j from the vector holding column i to d's last vector */
    double *nd;    /* (GRAM_NOISY, gk): noisy_m · d_j */
    double *sums;  /* (gk): Σ x_j */
    double *sq;    /* (gk): Σ x_j² */
} gram_part_t;

static int64_t gram_part_size(int64_t c1, int64_t gk) { return (c1 + GRAM_NOISY + 2) * gk; }

static gram_part_t gram_part(double *base, int64_t c1, int64_t gk) {
    const gram_part_t p = {base, base + c1 * gk, base + (c1 + GRAM_NOISY) * gk, base + (c1 + GRAM_NOISY + 1) * gk};
    return p;
}

/* gram_run (below) with the AVX-512 tiles: the same tiling rule with taller tiles. */
static AVX512 void gram_run_512(const float *x, int64_t n, int64_t k, int64_t c1, int64_t nv, const gram_part_t *p,
                                int64_t gk) {
    const int64_t nvd = (c1 + 7) / 8;
    for (int64_t b0 = 0; b0 < c1;) {
        const int64_t v0 = b0 / 8, nvb = nvd - v0;
        const int64_t boundary = 8 * (v0 + 1) < c1 ? 8 * (v0 + 1) : c1;
        const int64_t rb = boundary - b0 < gram_rb_max_512[nvb] ? boundary - b0 : gram_rb_max_512[nvb];
        double *out = p->dd + b0 * gk;
        switch ((int)(nvb * 16 + rb)) { GT5_ALL }
        b0 += rb;
    }
    for (int64_t m0 = 0; m0 < GRAM_NOISY;) {
        const int64_t rb = GRAM_NOISY - m0 < gram_rb_max_512[nvd] ? GRAM_NOISY - m0 : gram_rb_max_512[nvd];
        const int64_t b0 = c1 + 1 + m0, v0 = 0;
        double *out = p->nd + m0 * gk;
        switch ((int)(nvd * 16 + rb)) { GT5_ALL }
        m0 += rb;
    }
    double *sums = p->sums, *sq = p->sq;
    switch ((int)nv) { GS5(1) GS5(2) GS5(3) GS5(4) GS5(5) GS5(6) GS5(7) GS5(8) }
}

/* += the statistics of n rows of X (stride k, nv vectors readable from each). */
static void gram_run(const float *x, int64_t n, int64_t k, int64_t c1, int64_t nv, const gram_part_t *p, int64_t gk) {
    if (isa_level >= 3) {
        gram_run_512(x, n, k, c1, nv, p, gk);
        return;
    }
    const int64_t nvd = (c1 + 7) / 8;  /* d's vectors (the last may reach into the ones and noisy columns) */
    for (int64_t b0 = 0; b0 < c1;) {   /* d × d */
        const int64_t v0 = b0 / 8, nvb = nvd - v0;
        const int64_t boundary = 8 * (v0 + 1) < c1 ? 8 * (v0 + 1) : c1;  /* a tile stops where a vector drops */
        const int64_t rb = boundary - b0 < gram_rb_max[nvb] ? boundary - b0 : gram_rb_max[nvb];
        double *out = p->dd + b0 * gk;
        switch ((int)(nvb * 16 + rb)) { GT_ALL }
        b0 += rb;
    }
    for (int64_t m0 = 0; m0 < GRAM_NOISY;) {  /* noisy × d */
        const int64_t rb = GRAM_NOISY - m0 < gram_rb_max[nvd] ? GRAM_NOISY - m0 : gram_rb_max[nvd];
        const int64_t b0 = c1 + 1 + m0, v0 = 0;
        double *out = p->nd + m0 * gk;
        switch ((int)(nvd * 16 + rb)) { GT_ALL }
        m0 += rb;
    }
    double *sums = p->sums, *sq = p->sq;
    switch ((int)nv) { GS(1) GS(2) GS(3) GS(4) GS(5) GS(6) GS(7) GS(8) }
}

/* A line of n half-pixels of X (stride k) into a band's partial statistics. */
static void gram_line(const float *x, int64_t n, int64_t k, int64_t c1, const gram_part_t *p) {
    const int64_t nv = (k + 7) / 8, gk = 8 * nv;
    for (int64_t p0 = 0; p0 + 1 < n; p0 += GRAM_RUN) {  /* all but the last half-pixel */
        const int64_t p1 = p0 + GRAM_RUN < n - 1 ? p0 + GRAM_RUN : n - 1;
        gram_run(x + p0 * k, p1 - p0, k, c1, nv, p, gk);
    }
    float last[8 * GRAM_MAX_NV] = {0};  /* the last one from a zero-padded copy: it may end the buffer */
    memcpy(last, x + (n - 1) * k, sizeof(float) * k);
    gram_run(last, 1, k, c1, nv, p, gk);
}

/* ---- the statistics with AMX, where the features are bfloat16 ----
 *
 * With the bfloat16 backbone (engine/fused.py) every value in X is exact in bfloat16: the features
 * are its bfloat16 outputs widened, the noisy values integers 0..255, the ones column 1. So every
 * product the statistics sum is exact in float32 whatever multiplies it, and the tile unit of an
 * AMX CPU (Intel Xeon since Sapphire Rapids) may multiply them: TDPBF16PS adds a 16 × 32 by 32 × 16
 * bfloat16 product into 16 × 16 float32 sums in one instruction, where the AVX-512 tiles above
 * need 24–32 FMAs per half-pixel. Sums are float32 over a run of GRAM_RUN half-pixels, as above,
 * then float64: the same precision, the products added in another order (so not the same bits as
 * the AVX-512 statistics; equal to float64 products within float32 rounding, tested).
 *
 * A tile product sums over its K dimension, here 32 half-pixels: the left operand A holds feature
 * rows (16 features × 32 half-pixels), the right one B pairs of half-pixels (row r: the 16 columns
 * of half-pixels 2r and 2r + 1, interleaved). B's rows come straight from the features (pixel-
 * major, c1 bfloat16 per half-pixel) and from X's [1 | noisy] columns with one permute each; A is
 * B's transpose as a 16 × 16 matrix of 32-bit pairs. Per block of 32 half-pixels, for c1 = 16 (the
 * live model): d·dᵀ and d·[1 | noisy]ᵀ; the column sums and squares of [1 | noisy] by AVX-512-BF16
 * dot products on B's rows. c1 = 16 and 32 only (the tiles of c1 = 48 would not fit in eight).
 * Measured on a 2-core Xeon (AMX), 720p (640 × 360 half-pixels): inside the fill, c1 = 16, 2.6–2.7
 * → 1.7 ms on one thread and 2.0–2.1 → 1.1–1.2 ms on two; c1 = 32, 6.3–7.9 → 3.2–4.1 and 4.0 →
 * 2.0–2.1 ms. On one line kept in L1, 3.1 → 1.1 ms (c1 = 16, one thread). Tried and slower: building
 * each block's operands one block ahead of the products (double buffers), and lines cut into spans
 * of one run each (filled, then summed, while in L1).
 *
 * The tile configuration is per thread and shared with oneDNN (torch's convolutions use the tiles
 * too): each band saves the configuration it finds and puts it back when done. Linux hands the
 * tile registers to a process only on request (arch_prctl ARCH_REQ_XCOMP_PERM), made once in
 * cpu_has_amx. */
#if defined(__linux__) && defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define RCD_AMX 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AMX_FN __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int cpu_has_amx(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1)) return 0; /* AMX-BF16, -TILE */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return 0;                       /* AVX512-BF16 */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return 0;                               /* OSXSAVE */
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return 0;  /* the OS saves the tile state */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) tile_cfg_t;

/* LDTILECFG and STTILECFG with the memory they read and write told to the compiler: GCC 12's
 * _tile_loadconfig does not say it reads its operand, and the stores that build the configuration
 * were dropped (a garbage configuration: SIGSEGV, or SIGILL at the first tile instruction). */
static inline void tile_config_load(const tile_cfg_t *c) { __asm__ volatile("ldtilecfg %0" : : "m"(*c)); }
static inline void tile_config_store(tile_cfg_t *c) { __asm__ volatile("sttilecfg %0" : "=m"(*c)); }

/* Every tile 16 rows of 64 bytes; `saved` receives the configuration in force (zeros: none). */
static void amx_begin(tile_cfg_t *saved) {
    tile_config_store(saved);
    tile_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    tile_config_load(&cfg);
}

static void amx_end(const tile_cfg_t *saved) { tile_config_load(saved); }  /* zeros: released */

/* GCC's _tile_loadd passes only the address to its asm, neither the memory it reads nor a memory
 * clobber: the stores that build a tile's operand are, to the compiler, stores nothing reads, free
 * to drop or to sink below the load. This barrier before the tile loads keeps them (_tile_stored
 * does clobber memory, so reading its output afterwards is safe). */
#define TILE_OPERANDS_STORED() __asm__ volatile("" ::: "memory")

/* The 16 × 16 transpose of 32-bit lanes across r[0..15]. */
static inline AMX_FN __attribute__((always_inline)) void transpose_16x16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 8; i++) {
        const int a = (i / 4) * 8 + i % 4;
        t[a] = _mm512_shuffle_i32x4(r[a], r[a + 4], 0x88);
        t[a + 4] = _mm512_shuffle_i32x4(r[a], r[a + 4], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

/* A word permute's index: words 2i and 2i + 1 of the result are words a0 + i and b0 + i of the
 * source (in a two-source permute the second source's words count from 32). */
static inline AMX_FN __attribute__((always_inline)) __m512i interleave_index(int a0, int b0) {
    int16_t idx[32];
    for (int i = 0; i < 16; i++) {
        idx[2 * i] = (int16_t)(a0 + i);
        idx[2 * i + 1] = (int16_t)(b0 + i);
    }
    return _mm512_loadu_si512(idx);
}

/* Feature block j (features 16j ..) of np ≤ 32 half-pixels from d (c1 bfloat16 each): B's 16 rows
 * into b, its transpose (A) into a; half-pixels past np count as zeros. */
static inline AMX_FN __attribute__((always_inline)) void amx_features(const uint16_t *d, int64_t np, const int C1,
                                                                      int j, uint16_t *b, uint16_t *a) {
    const __m512i idx = interleave_index(16 * j, 32 + 16 * j);
    const __mmask32 all = C1 == 32 ? 0xffffffffu : 0xffffu;  /* a half-pixel's features, no further */
    __m512i r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        const int64_t pa = 2 * i, pb = pa + 1;
        const __m512i va = _mm512_maskz_loadu_epi16(pa < np ? all : 0, d + pa * C1);
        const __m512i vb = _mm512_maskz_loadu_epi16(pb < np ? all : 0, d + pb * C1);
        r[i] = _mm512_permutex2var_epi16(va, idx, vb);
        _mm512_store_si512(b + 32 * i, r[i]);
    }
    transpose_16x16(r);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) _mm512_store_si512(a + 32 * i, r[i]);
}

/* X's [1 | noisy] columns of np ≤ 32 half-pixels (x: their first row, stride k) as B's 16 rows into
 * b, and into s and q the column sums and sums of squares (float32 lanes 0..12). */
static inline AMX_FN __attribute__((always_inline)) void amx_noisy(const float *x, int64_t np, int64_t k,
                                                                   int64_t c1, uint16_t *b, __m512 *s, __m512 *q) {
    const __m512i idx = interleave_index(0, 16);
    const __m512bh ones = (__m512bh)_mm512_set1_epi16(0x3f80);  /* bfloat16 1.0 */
    const __mmask16 cols = (1u << (GRAM_NOISY + 1)) - 1;
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        const int64_t pa = 2 * i, pb = pa + 1;
        const __m512 fa = _mm512_maskz_loadu_ps(pa < np ? cols : 0, x + pa * k + c1);
        const __m512 fb = _mm512_maskz_loadu_ps(pb < np ? cols : 0, x + pb * k + c1);
        const __m512i r = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(fb, fa));
        _mm512_store_si512(b + 32 * i, r);
        *q = _mm512_dpbf16_ps(*q, (__m512bh)r, (__m512bh)r);
        *s = _mm512_dpbf16_ps(*s, (__m512bh)r, ones);
    }
}

/* += 16 float32 from f into 16 float64 at o. */
static inline AMX_FN __attribute__((always_inline)) void add16_pd(double *o, __m512 f) {
    _mm512_storeu_pd(o, _mm512_add_pd(_mm512_loadu_pd(o), _mm512_cvtps_pd(_mm512_castps512_ps256(f))));
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1));
    _mm512_storeu_pd(o + 8, _mm512_add_pd(_mm512_loadu_pd(o + 8), _mm512_cvtps_pd(hi)));
}

/* A run's d-block product (16 × 16 float32 at c, features 16a × 16b) into the band's sums. */
static inline AMX_FN __attribute__((always_inline)) void amx_add_dd(const float *c, int a, int b,
                                                                    const gram_part_t *p, int64_t gk) {
    for (int i = 0; i < 16; i++) add16_pd(p->dd + (16 * a + i) * gk + 16 * b, _mm512_load_ps(c + 16 * i));
    if (a == b)
        for (int i = 0; i < 16; i++) p->sq[16 * a + i] += c[17 * i];  /* Σ d_i² */
}

/* A run's d · [1 | noisy]ᵀ (16 × 16 float32 at c: row i feature 16a + i, column m of [1 | noisy])
 * transposed into the band's sums: column 0 → Σ d_i, column 1 + m → noisy_m · d_i. */
static inline AMX_FN __attribute__((always_inline)) void amx_add_dn(const float *c, int a, const gram_part_t *p,
                                                                    int64_t gk) {
    __m512i r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_load_si512(c + 16 * i);
    transpose_16x16(r);
    add16_pd(p->sums + 16 * a, _mm512_castsi512_ps(r[0]));
    for (int m = 0; m < GRAM_NOISY; m++) add16_pd(p->nd + m * gk + 16 * a, _mm512_castsi512_ps(r[1 + m]));
}

/* The tile instructions name their tiles as literals, so what differs between the two widths is
 * spelt out once per width here. Tiles: c1 16: A0 0, B0 1, B[1|noisy] 2, C00 3, C0n 4; c1 32:
 * A0 0, A1 1, B 2 (each block in turn), C00 3, C01 4, C11 5, C0n 6, C1n 7. buf: B0, B1, Bn, A0, A1. */
static inline AMX_FN __attribute__((always_inline)) void amx_zero(int64_t c1) {
    _tile_zero(3);
    _tile_zero(4);
    if (c1 == 32) {
        _tile_zero(5);
        _tile_zero(6);
        _tile_zero(7);
    }
}

static inline AMX_FN __attribute__((always_inline)) void amx_products(int64_t c1, uint16_t (*buf)[16 * 32]) {
    _tile_loadd(0, buf[3], 64);
    if (c1 == 16) {
        _tile_loadd(1, buf[0], 64);
        _tile_loadd(2, buf[2], 64);
        _tile_dpbf16ps(3, 0, 1);
        _tile_dpbf16ps(4, 0, 2);
    } else {
        _tile_loadd(1, buf[4], 64);
        _tile_loadd(2, buf[0], 64);
        _tile_dpbf16ps(3, 0, 2);
        _tile_loadd(2, buf[1], 64);
        _tile_dpbf16ps(4, 0, 2);
        _tile_dpbf16ps(5, 1, 2);
        _tile_loadd(2, buf[2], 64);
        _tile_dpbf16ps(6, 0, 2);
        _tile_dpbf16ps(7, 1, 2);
    }
}

/* A run's tile sums into the band's float64 sums (c: 16 × 16 float32 scratch per tile). */
static inline AMX_FN __attribute__((always_inline)) void amx_flush(int64_t c1, float (*c)[16 * 16],
                                                                   const gram_part_t *p, int64_t gk) {
    if (c1 == 16) {
        _tile_stored(3, c[0], 64);
        _tile_stored(4, c[1], 64);
        amx_add_dd(c[0], 0, 0, p, gk);
        amx_add_dn(c[1], 0, p, gk);
    } else {
        _tile_stored(3, c[0], 64);
        _tile_stored(4, c[1], 64);
        _tile_stored(5, c[2], 64);
        _tile_stored(6, c[3], 64);
        _tile_stored(7, c[4], 64);
        amx_add_dd(c[0], 0, 0, p, gk);
        amx_add_dd(c[1], 0, 1, p, gk);
        amx_add_dd(c[2], 1, 1, p, gk);
        amx_add_dn(c[3], 0, p, gk);
        amx_add_dn(c[4], 1, p, gk);
    }
}

/* The statistics of a line of n half-pixels: X's row x (stride k) and its features d (bfloat16,
 * c1 = 16 or 32 each), in runs of GRAM_RUN, each run's float32 tile sums then added into p
 * (float64). */
static AMX_FN void gram_line_amx(const float *x, const uint16_t *d, int64_t n, int64_t k, int64_t c1,
                                 const gram_part_t *p) {
    const int64_t gk = 8 * ((k + 7) / 8);
    _Alignas(64) uint16_t buf[5][16 * 32];  /* B0, B1, Bn, A0, A1: 1 KB tiles */
    _Alignas(64) float c[5][16 * 16];
    for (int64_t p0 = 0; p0 < n; p0 += GRAM_RUN) {
        const int64_t p1 = p0 + GRAM_RUN < n ? p0 + GRAM_RUN : n;
        __m512 s = _mm512_setzero_ps(), q = _mm512_setzero_ps();
        amx_zero(c1);
        for (int64_t b0 = p0; b0 < p1; b0 += 32) {
            const int64_t np = p1 - b0 < 32 ? p1 - b0 : 32;
            if (c1 == 16) {
                amx_features(d + b0 * 16, np, 16, 0, buf[0], buf[3]);
            } else {
                amx_features(d + b0 * 32, np, 32, 0, buf[0], buf[3]);
                amx_features(d + b0 * 32, np, 32, 1, buf[1], buf[4]);
            }
            amx_noisy(x + b0 * k, np, k, c1, buf[2], &s, &q);
            TILE_OPERANDS_STORED();
            amx_products(c1, buf);
        }
        amx_flush(c1, c, p, gk);
        add16_pd(p->sums + c1, s);  /* [1 | noisy]: lanes 0..12, the rest zeros */
        add16_pd(p->sq + c1, q);
    }
}
#endif

static int amx_usable(void) {
#ifdef RCD_AMX
    static int known = -1;  /* asked once: the permission request is a system call */
    if (known < 0) known = cpu_has_amx();
    return known;
#else
    return 0;
#endif
}

/* g (c1 + 1, k) and sq (k) from n bands' partial statistics (gram_part_size doubles each); 0 = done. */
static int gram_finish(const double *parts, int64_t n, int64_t k, int64_t c1, double *g, double *sq) {
    const int64_t gk = 8 * ((k + 7) / 8), size = gram_part_size(c1, gk);
    double *sum = calloc((size_t)size, sizeof(double));
    if (!sum) return 2;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < size; i++) sum[i] += parts[t * size + i];
    const gram_part_t p = gram_part(sum, c1, gk);
    for (int64_t i = 0; i < c1; i++) {
        for (int64_t j = 0; j < c1; j++) g[i * k + j] = j >= i ? p.dd[i * gk + j] : p.dd[j * gk + i];
        g[i * k + c1] = p.sums[i];  /* d_i · 1 */
        for (int64_t m = 0; m < GRAM_NOISY; m++) g[i * k + c1 + 1 + m] = p.nd[m * gk + i];
    }
    for (int64_t c = 0; c < k; c++) {
        g[c1 * k + c] = p.sums[c];  /* the ones row */
        sq[c] = p.sq[c];
    }
    free(sum);
    return 0;
}

/* heads.c: the covariance of the raw maps and the noisy frame from g and Σ noisy². */
int rcd_gram_cov(const double *g, int64_t k, int64_t c1, const double *a, int64_t l, double sq_noisy, double m,
                 double *cov);

/* ---- filling X's [1 | noisy] columns from the uint8 frame, and the noise estimate's histogram ----
 *
 * With d (not NULL), X's feature columns are copied from it in the same pass (the fused backbone
 * leaves its features contiguous: writing them into X's strided rows cost as much as the copy);
 * d is float32, or bfloat16 with d_bf16 (the bfloat16 backbone's, widened exactly on the way).
 * Then each line of X is built whole in a buffer of the thread's, its statistics taken there, and
 * streamed to X with non-temporal stores, which skip reading X's lines in before writing them
 * (alternating with the plain stores in one process, 720p, the live model's 16 features, caches
 * flushed before each call, 2-core AMD EPYC: 9.66 → 9.45 ms on one thread and 5.73 → 5.40 on two
 * in one sitting, 9.24 → 9.17 and 5.22 → 5.33 in another: a few percent at most, as the stores
 * overlap with the statistics either way).
 * For every half-pixel of the padded frame (hp/2 × wp/2): x[c1] = 1 and x[c1 + 1 ..] = its 2×2
 * pixels as floats (dy = 0, 1 of (dx, RGB)), the frame replicate-padded past its last row and
 * column, as engine/denoiser.py pads the backbone's input. In the same pass, the histogram of
 * 2·|diagonal Haar detail| (0..510) of the green plane over the 2×2 blocks whose top-left corner
 * is on the `step` grid inside the even-cropped frame: engine/model.py, estimate_noise_sigma, reads
 * its median off the same histogram. torch filled the 13 strided columns in 4–5 ms at 720p.
 * With g (not NULL), the statistics above over the frame's h/2 × w/2 half-pixels (rounded down: for
 * an odd size, those whose 2×2 pixels are all in the frame; engine/denoiser.py adds the last row's
 * and column's) into g (c1 + 1, k) and sq (k), each line right after it is written; with head (not
 * NULL: (12, l, c1 + 1), heads.c's rcd_gram_cov; even h and w only) also the covariance (l + 1)² of the raw maps and
 * the noisy frame into cov, in the same call (from Python, the covariance was a second call, run
 * cold after the fill: 0.12–0.14 ms a frame, a tenth of what ND and AutoTune may take at 540p);
 * and the seconds spent on them into *gram_s (may be NULL): the slowest band's, plus the sum of
 * the bands and the covariance.
 * With rgb_x (not NULL, the same size as rgb), X's noisy columns end up holding rgb_x's pixels
 * instead, each row rewritten after its statistics: the luma path's statistics are its luma
 * frame's, its blend's base the colour frame (engine/denoiser.py), and a second fill of the colour
 * frame was a pass over X of its own (3.5–3.9 ms at 720p on one thread).
 */
/* dst[0..n) = src[0..n) (src 32-byte aligned) with non-temporal stores where dst is 4-byte aligned:
 * the lines of X go to memory without first being read in (a plain store reads each line before it
 * writes it: X is written, never read, by the fill). */
static inline void stream_floats(float *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i < n && ((uintptr_t)(dst + i) & 31); i++) dst[i] = src[i];
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
    for (; i < n; i++) dst[i] = src[i];
}

static inline void fill_scalar(float *row, int64_t c1, const uint8_t *rgb, int64_t h, int64_t w, int64_t y2,
                               int64_t x2) {
    row[c1] = 1.0f;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            const int64_t yy = 2 * y2 + dy < h ? 2 * y2 + dy : h - 1;
            const int64_t xx = 2 * x2 + dx < w ? 2 * x2 + dx : w - 1;
            for (int c = 0; c < 3; c++) row[c1 + 1 + dy * 6 + dx * 3 + c] = (float)rgb[(yy * w + xx) * 3 + c];
        }
}

/* ---- the luma frame the monochrome backbone reads in a colour frame with luma noise ------------
 *
 * out (n pixels of R, G, B) ← R = G = B = (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16: BT.601 luma in
 * 16-bit fixed point, exact in integers, so NumPy gives the same bytes where this library is not
 * built (engine/denoiser.py, luma_frame, LUMA_FIXED). In NumPy's float32 it took 4.8–7.7 ms at 720p
 * on one core (0.8 here) and made 26 MB of temporaries a frame, each page of them a fault: with two
 * lanes in the player (05_default_juggle.mp4, 720p, the live model's luma path, 2-core AMD EPYC) the
 * backbone's p50 was 94 ms against 51 ms for the same frames' colour path, and `auto` sent the clip
 * to the render cache at 11 fps; with this and the fill's rgb_x, 51 ms and live at 24 fps, no drops. */
int rcd_luma(const uint8_t *rgb, int64_t n, uint8_t *out) {
    if (n < 0) return 1;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t y = (uint8_t)((19595u * rgb[3 * i] + 38470u * rgb[3 * i + 1] + 7471u * rgb[3 * i + 2] + 32768u) >> 16);
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = y;
    }
    return 0;
}

/* Half-pixel row y2's [1 | noisy] columns (xr: the row, k floats a half-pixel) from the uint8 frame
 * rgb; x_fast: the half-pixels read 8 bytes at a time (see rcd_fill). */
static inline void fill_noisy_row(float *xr, int64_t k, int64_t c1, const uint8_t *rgb, int64_t h, int64_t w,
                                  int64_t wp2, int64_t y2, int64_t x_fast) {
    const uint8_t *r0 = rgb + (2 * y2) * w * 3, *r1 = r0 + w * 3;
    int64_t x2 = 0;
    if (2 * y2 + 1 < h) {
        const __m128i keep6 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        for (; x2 < x_fast; x2++) {
            float *row = xr + x2 * k;
            const __m128i a = _mm_loadl_epi64((const __m128i *)(r0 + 6 * x2));
            const __m128i b = _mm_loadl_epi64((const __m128i *)(r1 + 6 * x2));
            const __m128i v = _mm_or_si128(_mm_and_si128(a, keep6), _mm_slli_si128(b, 6));
            row[c1] = 1.0f;
            _mm256_storeu_ps(row + c1 + 1, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)));
            _mm_storeu_ps(row + c1 + 9, _mm_cvtepi32_ps(_mm_cvtepu8_epi32(_mm_srli_si128(v, 8))));
        }
    }
    for (; x2 < wp2; x2++) fill_scalar(xr + x2 * k, c1, rgb, h, w, y2, x2);
}

int rcd_fill(float *x, int64_t k, int64_t c1, const uint8_t *rgb, const uint8_t *rgb_x, int64_t h, int64_t w,
             int64_t hp, int64_t wp, int64_t step, int64_t *hist, const void *d, int d_bf16, double *g, double *sq,
             const double *head, int64_t l, double *cov, double *gram_s, int threads) {
    const int64_t h2 = hp / 2, wp2 = wp / 2;
    if (k != c1 + 13 || hp < h || wp < w || h < 1 || w < 1 || hp % 2 || wp % 2 || (step != 2 && step != 4)) return 1;
    if (g && (k > 8 * GRAM_MAX_NV || k != c1 + 1 + GRAM_NOISY)) return 1;
    if (g && head && cov && (h % 2 || w % 2)) return 1;  /* the covariance of part of the frame */
    const int64_t he = h / 2 * 2, we = w / 2 * 2;  /* the noise estimate's even-cropped frame */
    const int64_t nb = h2 < SUM_BANDS ? h2 : SUM_BANDS;  /* bands: see SUM_BANDS */
    const int64_t n = threads < 1 ? 1 : (threads > nb ? nb : threads);
    const int64_t gk = 8 * ((k + 7) / 8), gstride = gram_part_size(c1, gk);
    int64_t *part = calloc((size_t)(nb * 511), sizeof(int64_t));
    double *gpart = g ? calloc((size_t)(nb * gstride), sizeof(double)) : NULL; /* each band's g and sq */
    double *thread_s = g ? calloc((size_t)n, sizeof(double)) : NULL;         /* each thread's seconds in them */
    if (!part || (g && (!gpart || !thread_s))) {
        free(part);
        free(gpart);
        free(thread_s);
        return 2;
    }
    /* interior half-pixels: both rows inside the frame and 8 bytes readable from 6·x2 in each */
    const int64_t readable = 3 * w >= 8 ? (3 * w - 8) / 6 + 1 : 0;
    const int64_t x_fast = readable < w / 2 ? readable : w / 2;
#ifdef RCD_AMX
    const int amx = isa_level >= 4 && g && d && d_bf16 && (c1 == 16 || c1 == 32);
#endif
    const int64_t row_floats = wp2 * k;
    int failed = 0;
#pragma omp parallel for num_threads(n) schedule(static) reduction(| : failed)
    for (int64_t t = 0; t < nb; t++) {
        int64_t *hl = part + t * 511;
        /* with d, each line of X is built here, its statistics taken here, then streamed to X */
        float *line = d ? aligned_alloc(64, sizeof(float) * (size_t)((row_floats + 15) / 16 * 16)) : NULL;
        if (d && !line) {
            failed = 1;
            continue;
        }
#ifdef RCD_AMX
        tile_cfg_t saved;
        if (amx) amx_begin(&saved);
#endif
        for (int64_t y2 = h2 * t / nb; y2 < h2 * (t + 1) / nb; y2++) {
            float *const xline = x + y2 * wp2 * k, *xr = line ? line : xline;
            if (d && d_bf16) {  /* bfloat16 features (the bf16 backbone's), widened as they are copied */
                const uint16_t *dr = (const uint16_t *)d + y2 * wp2 * c1;
                if (c1 % 8 == 0) {
                    for (int64_t x2 = 0; x2 < wp2; x2++)
                        for (int64_t c = 0; c < c1; c += 8) _mm256_storeu_ps(xr + x2 * k + c, bf16x8_load(dr + x2 * c1 + c));
                } else {
                    for (int64_t x2 = 0; x2 < wp2; x2++)
                        for (int64_t c = 0; c < c1; c++) xr[x2 * k + c] = bf16_to_f32(dr[x2 * c1 + c]);
                }
            } else if (d) {  /* the features, (h2·wp2, c1) contiguous: this row of X is written here anyway */
                const float *dr = (const float *)d + y2 * wp2 * c1;
                if (c1 % 8 == 0) {
                    for (int64_t x2 = 0; x2 < wp2; x2++)
                        for (int64_t c = 0; c < c1; c += 8) _mm256_storeu_ps(xr + x2 * k + c, _mm256_loadu_ps(dr + x2 * c1 + c));
                } else {
                    for (int64_t x2 = 0; x2 < wp2; x2++) memcpy(xr + x2 * k, dr + x2 * c1, sizeof(float) * c1);
                }
            }
            fill_noisy_row(xr, k, c1, rgb, h, w, wp2, y2, x_fast);
            const uint8_t *r0 = rgb + (2 * y2) * w * 3, *r1 = r0 + w * 3;
            /* noise histogram: blocks at (step·i, step·j) inside the even-cropped frame */
            if ((2 * y2) % step == 0 && 2 * y2 + 1 < he) {
                for (int64_t xx = 0; xx + 1 < we; xx += step) {
                    const int d = (int)r0[xx * 3 + 1] - r0[xx * 3 + 4] - r1[xx * 3 + 1] + r1[xx * 3 + 4];
                    hl[d < 0 ? -d : d]++;
                }
            }
            if (g && y2 < h / 2 && w / 2 > 0) {  /* the row is complete and still in cache: its statistics now */
                const double t0 = now_s();
                const gram_part_t gp = gram_part(gpart + t * gstride, c1, gk);
#ifdef RCD_AMX
                if (amx) gram_line_amx(xr, (const uint16_t *)d + y2 * wp2 * c1, w / 2, k, c1, &gp);
                else
#endif
                gram_line(xr, w / 2, k, c1, &gp);
                thread_s[omp_get_thread_num()] += now_s() - t0;
            }
            if (rgb_x) fill_noisy_row(xr, k, c1, rgb_x, h, w, wp2, y2, x_fast);  /* what X keeps */
            if (line) stream_floats(xline, line, row_floats);
        }
        if (line) {
            _mm_sfence();  /* the streamed lines are visible to every thread once the band is done */
            free(line);
        }
#ifdef RCD_AMX
        if (amx) amx_end(&saved);
#endif
    }
    if (failed) {
        free(thread_s);
        free(part);
        free(gpart);
        return 2;
    }
    for (int i = 0; i < 511; i++) {
        hist[i] = 0;
        for (int64_t t = 0; t < nb; t++) hist[i] += part[t * 511 + i];
    }
    int rc = 0;
    if (g) {
        const double t0 = now_s();
        rc = gram_finish(gpart, nb, k, c1, g, sq);
        if (rc == 0 && head && cov) {
            double sq_noisy = 0.0;  /* Σ noisy² in 0..1 units */
            for (int64_t m = 0; m < GRAM_NOISY; m++) sq_noisy += sq[c1 + 1 + m];
            rc = rcd_gram_cov(g, k, c1, head, l, sq_noisy / (255.0 * 255.0), (double)h * (double)w * 3.0, cov) ? 3 : 0;
        }
        if (gram_s) {  /* the statistics' share of this pass: the slowest thread's time in them, then the rest */
            *gram_s = 0.0;
            for (int64_t t = 0; t < n; t++) *gram_s = thread_s[t] > *gram_s ? thread_s[t] : *gram_s;
            *gram_s += now_s() - t0;
        }
    }
    free(thread_s);
    free(part);
    free(gpart);
    return rc;
}

/* ---- the backbone's skip joins: d = nearest-×2(u) + e, r = relu(d), and Σ|d| per channel ----
 *
 * u (h/2, w/2, c), e, d and r (h, w, c): channels-last float32, contiguous (NHWC, batch 1).
 * torch runs this as three passes (upsample, add, relu) and the pooled statistic as two more (abs,
 * mean), each over a frame-sized tensor; here e is read once and d and r written once. d may be e
 * (in place: each value is read before it is written); r may not alias e. abs_sum (c) float64, or
 * NULL: Σ over the h × w pixels of |d|, per channel.
 * Every output value is the one torch computes (one float32 add, a max): bit-identical results.
 */
#define UP_MAX_C 256

/* One row of the join: w pixels of c channels from the upsampled row ur and e's row er into d's and
 * r's rows; row_sum (c floats, or NULL) += |d|. */
static inline __attribute__((always_inline)) void join_row(const char *ur, const char *er, char *dr, char *rr,
                                                           int64_t w, int64_t c, float *row_sum, const int bf16) {
    const int64_t size = bf16 ? 2 : 4;  /* bytes per value */
    const __m256 zero = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t x = 0; x < w; x++) {
        const char *us = ur + (x / 2) * c * size, *es = er + x * c * size;
        char *ds = dr + x * c * size, *rs = rr ? rr + x * c * size : NULL;
        int64_t i = 0;
        for (; i + 8 <= c; i += 8) {
            __m256 v;
            if (bf16) {
                v = bf16x8_round(_mm256_add_ps(bf16x8_load((const uint16_t *)us + i), bf16x8_load((const uint16_t *)es + i)));
                bf16x8_store((uint16_t *)ds + i, v);
                if (rs) bf16x8_store((uint16_t *)rs + i, _mm256_max_ps(v, zero));
            } else {
                v = _mm256_add_ps(_mm256_loadu_ps((const float *)us + i), _mm256_loadu_ps((const float *)es + i));
                _mm256_storeu_ps((float *)ds + i, v);
                if (rs) _mm256_storeu_ps((float *)rs + i, _mm256_max_ps(v, zero));
            }
            if (row_sum) _mm256_storeu_ps(row_sum + i, _mm256_add_ps(_mm256_loadu_ps(row_sum + i), _mm256_andnot_ps(sign, v)));
        }
        for (; i < c; i++) {
            float v;
            if (bf16) {
                const uint16_t b = f32_to_bf16(bf16_to_f32(((const uint16_t *)us)[i]) + bf16_to_f32(((const uint16_t *)es)[i]));
                v = bf16_to_f32(b);
                ((uint16_t *)ds)[i] = b;
                if (rs) ((uint16_t *)rs)[i] = v > 0.0f ? b : 0;
            } else {
                v = ((const float *)us)[i] + ((const float *)es)[i];
                ((float *)ds)[i] = v;
                if (rs) ((float *)rs)[i] = v > 0.0f ? v : 0.0f;
            }
            if (row_sum) row_sum[i] += v < 0.0f ? -v : v;
        }
    }
}

/* bf16x8_load / _round / _store with AVX-512: 16 values, the lanes outside mask m untouched. */
static inline AVX512 __attribute__((always_inline)) __m512 bf16x16_load(const uint16_t *p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

static inline AVX512 __attribute__((always_inline)) __m512 bf16x16_round(__m512 v) {
    __m512i b = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    b = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    return _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32((int)0xffff0000u)));
}

static inline AVX512 __attribute__((always_inline)) void bf16x16_store(uint16_t *p, __mmask16 m, __m512 rounded) {
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(rounded), 16)));
}

/* join_row with AVX-512: 16 channels per vector, the last ones masked (c = 16: one vector per
 * pixel, where the AVX2 row takes two). The same operations on every value, so the same bytes, and
 * each channel's row sum adds the same values in the same order. */
static inline AVX512 __attribute__((always_inline)) void join_row_512_any(const char *ur, const char *er, char *dr,
                                                                          char *rr, int64_t w, int64_t c,
                                                                          float *row_sum, const int bf16) {
    const int64_t size = bf16 ? 2 : 4;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t x = 0; x < w; x++) {
        const char *us = ur + (x / 2) * c * size, *es = er + x * c * size;
        char *ds = dr + x * c * size, *rs = rr ? rr + x * c * size : NULL;
        for (int64_t i = 0; i < c; i += 16) {
            const __mmask16 m = c - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c - i)) - 1u);
            __m512 v;
            if (bf16) {
                v = bf16x16_round(_mm512_add_ps(bf16x16_load((const uint16_t *)us + i, m),
                                                bf16x16_load((const uint16_t *)es + i, m)));
                bf16x16_store((uint16_t *)ds + i, m, v);
                if (rs) bf16x16_store((uint16_t *)rs + i, m, _mm512_max_ps(v, zero));
            } else {
                v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, (const float *)us + i), _mm512_maskz_loadu_ps(m, (const float *)es + i));
                _mm512_mask_storeu_ps((float *)ds + i, m, v);
                if (rs) _mm512_mask_storeu_ps((float *)rs + i, m, _mm512_max_ps(v, zero));
            }
            if (row_sum) _mm512_mask_storeu_ps(row_sum + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, row_sum + i), _mm512_abs_ps(v)));
        }
    }
}

static AVX512 void join_row_512_f32(const char *ur, const char *er, char *dr, char *rr, int64_t w, int64_t c, float *row_sum) {
    join_row_512_any(ur, er, dr, rr, w, c, row_sum, 0);
}

static AVX512 void join_row_512_bf16(const char *ur, const char *er, char *dr, char *rr, int64_t w, int64_t c, float *row_sum) {
    join_row_512_any(ur, er, dr, rr, w, c, row_sum, 1);
}

/* A row of WIDTH output pixels of one chunk of outputs (v0): P pixels at a time, then the row's tail
 * one by one. FN(ARGS..., x0, v0, P, NVC) computes P pixels from x0 (the *_pixels functions). */
#define BY_PIXELS(FN, WIDTH, NVC, P, ...)                                                                  \
    do {                                                                                                   \
        int64_t x = 0;                                                                                     \
        for (; x + P <= WIDTH; x += P) FN(__VA_ARGS__, x, v0, P, NVC);                                     \
        for (; x < WIDTH; x++) FN(__VA_ARGS__, x, v0, 1, NVC);                                             \
    } while (0)

/* One output row's co outputs in chunks of up to 4 vectors (NVC), each chunk a specialisation
 * with constant NVC and P = 12 / NVC pixels at a time (then single pixels for the row's tail):
 * ROW(NVC, P) runs one chunk starting at vector v0. Used by the first layer, the downsampling and
 * the 1×1 convolution before a join. */
#define BY_CHUNKS(ROW)                                                                                     \
    for (int64_t v0 = 0; v0 < co / 8; v0 += 4) {                                                           \
        switch ((int)(co / 8 - v0 < 4 ? co / 8 - v0 : 4)) {                                                \
            case 4: ROW(4, 3); break;                                                                      \
            case 3: ROW(3, 4); break;                                                                      \
            case 2: ROW(2, 6); break;                                                                      \
            default: ROW(1, 12); break;                                                                    \
        }                                                                                                  \
    }

/* ---- the inner block of the AVX2 convolutions (first layer, downsampling, 1×1 before a join) ------
 *
 * P pixels × NVC vectors of outputs stay in registers (P · NVC ≤ 12) while the inputs stream by:
 * acc_bias sets them to the bias, acc_fma adds Σ_i x(p, i) · wk[i] over n inputs, x(p, i) =
 * in[p · pstride + i] (its relu with RELU) broadcast, wk[i] the NVC vectors of the weights' row i
 * (rows co floats apart), and acc_store writes pixel p's outputs co floats apart. */
static inline __attribute__((always_inline)) void acc_bias(__m256 acc[12][4], const float *bias, const int P,
                                                           const int NVC) {
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) acc[p][v] = _mm256_loadu_ps(bias + 8 * v);
}

static inline __attribute__((always_inline)) void acc_fma(__m256 acc[12][4], const float *in, int64_t pstride,
                                                          int64_t n, const float *wk, int64_t co, const int P,
                                                          const int NVC, const int RELU) {
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i++) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) wv[v] = _mm256_loadu_ps(wk + i * co + 8 * v);
#pragma GCC unroll 12
        for (int p = 0; p < P; p++) {
            __m256 xv = _mm256_broadcast_ss(in + p * pstride + i);
            if (RELU) xv = _mm256_max_ps(xv, zero);
#pragma GCC unroll 4
            for (int v = 0; v < NVC; v++) acc[p][v] = _mm256_fmadd_ps(xv, wv[v], acc[p][v]);
        }
    }
}

static inline __attribute__((always_inline)) void acc_store(__m256 acc[12][4], float *out, int64_t co, const int P,
                                                            const int NVC) {
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) _mm256_storeu_ps(out + p * co + 8 * v, acc[p][v]);
}

/* The 1×1 convolution before an upsampling, u = relu(x) · wt + bias per pixel, x (h/2, w/2, ci) and
 * wt (ci, co) float32; a join can take it in place of u (rcd_conv_up_add_relu) and compute u a row
 * at a time, as it needs it, instead of reading a u written to memory. The relu on reading lets x
 * be the signed stream itself (on a relu'd x it changes nothing). */
typedef struct {
    const float *x, *wt, *bias;
    int64_t ci;
} conv1_t;

static inline __attribute__((always_inline)) void conv1_pixels(const float *in, int64_t ci, const float *wt,
                                                               int64_t co, const float *bias, float *out, int64_t x0,
                                                               int64_t v0, const int P, const int NVC) {
    __m256 acc[12][4];
    acc_bias(acc, bias + 8 * v0, P, NVC);
    acc_fma(acc, in + x0 * ci, ci, ci, wt + 8 * v0, co, P, NVC, 1);
    acc_store(acc, out + x0 * co + 8 * v0, co, P, NVC);
}

#define CONV1_ROW(NVC, P) BY_PIXELS(conv1_pixels, wl, NVC, P, in, ci, wt, co, bias, out)

static void conv1_row(const float *in, int64_t wl, int64_t ci, const float *wt, const float *bias, int64_t co,
                      float *out) {
    BY_CHUNKS(CONV1_ROW);
}

/* u, or with cv (float32 only, c a multiple of 8) the 1×1 convolution that makes u, row by row;
 * r NULL: relu(d) not written (its reader applies the relu itself). */
/* Row y/2 of u = conv1×1(cv) into urow, unless urow holds it already (*urow_y, the row it holds). */
static const char *conv1_u_row(const conv1_t *cv, int64_t w, int64_t c, float *urow, int64_t *urow_y, int64_t y) {
    if (*urow_y != y / 2) {
        conv1_row(cv->x + (y / 2) * (w / 2) * cv->ci, w / 2, cv->ci, cv->wt, cv->bias, c, urow);
        *urow_y = y / 2;
    }
    return (const char *)urow;
}

/* join_row with the vector width the kernels run (rcd_set_isa). */
static void join_row_isa(const char *ur, const char *er, char *dr, char *rr, int64_t w, int64_t c, float *row_sum,
                         int bf16) {
    if (isa_level >= 3 && bf16) join_row_512_bf16(ur, er, dr, rr, w, c, row_sum);
    else if (isa_level >= 3) join_row_512_f32(ur, er, dr, rr, w, c, row_sum);
    else join_row(ur, er, dr, rr, w, c, row_sum, bf16);
}

static inline __attribute__((always_inline)) int up_add_relu(const void *u, const conv1_t *cv, const void *e, void *d,
                                                             void *r, int64_t h, int64_t w, int64_t c,
                                                             double *abs_sum, int threads, const int bf16) {
    if (h < 2 || w < 2 || h % 2 || w % 2 || c < 1 || c > UP_MAX_C || (cv && (bf16 || c % 8 || cv->ci < 1))) return 1;
    const int64_t nb = h < SUM_BANDS ? h : SUM_BANDS;  /* bands: see SUM_BANDS */
    const int64_t n = threads < 1 ? 1 : (threads > nb ? nb : threads);
    const int64_t size = bf16 ? 2 : 4;  /* bytes per value */
    double *part = calloc((size_t)(nb * c), sizeof(double)); /* each band's Σ|d| */
    if (!part) return 2;
    int failed = 0;
#pragma omp parallel for num_threads(n) schedule(static) reduction(| : failed)
    for (int64_t t = 0; t < nb; t++) {
        float *urow = cv ? malloc(sizeof(float) * (size_t)(w / 2 * c)) : NULL;  /* this band's current row of u */
        if (cv && !urow) {
            failed = 1;
            continue;
        }
        int64_t urow_y = -1;
        for (int64_t y = h * t / nb; y < h * (t + 1) / nb; y++) {
            float row_sum[UP_MAX_C];  /* float32 over one row (at most a few thousand values), float64 across rows */
            if (abs_sum) memset(row_sum, 0, sizeof(float) * c);
            const char *ur = cv ? conv1_u_row(cv, w, c, urow, &urow_y, y)
                                : (const char *)u + (y / 2) * (w / 2) * c * size;
            const int64_t o = y * w * c * size;
            char *dr = (char *)d + o, *rr = r ? (char *)r + o : NULL;
            join_row_isa(ur, (const char *)e + o, dr, rr, w, c, abs_sum ? row_sum : NULL, bf16);
            if (abs_sum)
                for (int64_t i = 0; i < c; i++) part[t * c + i] += row_sum[i];
        }
        free(urow);
    }
    if (failed) {
        free(part);
        return 2;
    }
    if (abs_sum)
        for (int64_t i = 0; i < c; i++) {
            abs_sum[i] = 0.0;
            for (int64_t t = 0; t < nb; t++) abs_sum[i] += part[t * c + i];
        }
    free(part);
    return 0;
}

int rcd_up_add_relu(const float *u, const float *e, float *d, float *r, int64_t h, int64_t w, int64_t c,
                    double *abs_sum, int threads) {
    return up_add_relu(u, NULL, e, d, r, h, w, c, abs_sum, threads, 0);
}

/* The float32 join with the 1×1 convolution that makes u: u = relu(x) · wt + bias, x (h/2, w/2, ci),
 * wt (ci, c), c a multiple of 8 (conv1_t). */
int rcd_conv_up_add_relu(const float *x, int64_t ci, const float *wt, const float *bias, const float *e, float *d,
                         float *r, int64_t h, int64_t w, int64_t c, double *abs_sum, int threads) {
    const conv1_t cv = {x, wt, bias, ci};
    return up_add_relu(NULL, &cv, e, d, r, h, w, c, abs_sum, threads, 0);
}

/* The same join on bfloat16 tensors (the bfloat16 backbone's, engine/fused.py): each sum in float32
 * rounded once to bfloat16, as torch adds two bfloat16 tensors; r is relu of the rounded d and Σ|d|
 * sums the rounded values. Bit-identical to torch's upsample, add and relu in bfloat16. */
int rcd_up_add_relu_bf16(const uint16_t *u, const uint16_t *e, uint16_t *d, uint16_t *r, int64_t h, int64_t w,
                         int64_t c, double *abs_sum, int threads) {
    return up_add_relu(u, NULL, e, d, r, h, w, c, abs_sum, threads, 1);
}

/* ---- the backbone's downsampling: out = conv2x2/2(relu(e)) ---------------------------------------
 *
 * e (h, w, c) and out (h/2, w/2, co): channels-last float32, contiguous; wt (2, 2, c, co): the
 * convolution's weight (co, c, 2, 2) rearranged so each input value's co weights are contiguous;
 * bias (co). oneDNN has post-ops but no pre-ops, so torch needs a relu pass over e (a frame-sized
 * tensor) before its strided convolution; here the relu is applied to each value as it is
 * broadcast. Each output pixel is a (4c → co) product: P pixels × NVC vectors of outputs stay in
 * registers (P · NVC = 12) while the 4c inputs stream by. co a multiple of 8.
 */
/* As in the blend, the hardware prefetchers alone leave this pass waiting on memory: asking for
 * each block's input rows 4 KB ahead took the live model's first downsampling at 720p from 4.2–4.5
 * to 3.6–3.8 ms on one thread (2-core Xeon, each run after a 256 MB copy; 8 and 16 KB: a little
 * slower than 4). With AVX2 on a 2-core AMD EPYC (both builds in one process, the first layer's
 * output as input, as in the backbone): the second downsampling 3.58–3.67 → 3.36–3.41 ms, the
 * first 4.68–4.83 → 4.64–4.66. */
#define DOWN_PREFETCH_BYTES 4096

/* Output pixels x0 .. x0 + P of row y read input rows 2·y and 2·y + 1 from column 2·x0: ask for
 * them DOWN_PREFETCH_BYTES ahead. */
static inline __attribute__((always_inline)) void down_prefetch(const float *e, int64_t w, int64_t c, int64_t y,
                                                                int64_t x0, const int P) {
    for (int ky = 0; ky < 2; ky++) {
        const char *pf = (const char *)(e + ((2 * y + ky) * w + 2 * x0) * c) + DOWN_PREFETCH_BYTES;
        for (int64_t o = 0; o < (int64_t)(2 * P * c * 4); o += 64) _mm_prefetch(pf + o, _MM_HINT_T0);
    }
}

static inline __attribute__((always_inline)) void down_pixels(const float *e, int64_t w, int64_t c, const float *wt,
                                                              int64_t co, const float *bias, float *out, int64_t y,
                                                              int64_t x0, int64_t v0, const int P, const int NVC) {
    __m256 acc[12][4];
    if (v0 == 0) down_prefetch(e, w, c, y, x0, P);
    acc_bias(acc, bias + 8 * v0, P, NVC);
    for (int ky = 0; ky < 2; ky++)
        for (int kx = 0; kx < 2; kx++)  /* pixel p reads from 2·p·c on */
            acc_fma(acc, e + ((2 * y + ky) * w + 2 * x0 + kx) * c, 2 * c, c, wt + (ky * 2 + kx) * c * co + 8 * v0, co,
                    P, NVC, 1);
    acc_store(acc, out + (y * (w / 2) + x0) * co + 8 * v0, co, P, NVC);
}

#define DOWN_ROW(NVC, P) BY_PIXELS(down_pixels, w2, NVC, P, e, w, c, wt, co, bias, out, y)

/* The same with AVX-512: 16 outputs per vector, up to 24 accumulators (P × NVC ≤ 24 of the 32
 * registers), so twice the outputs per FMA and per broadcast. Each output lane sums the same
 * products in the same order as down_pixels: the same floats out (tests/test_engine.py). */
static inline AVX512 __attribute__((always_inline)) void down_pixels_512(const float *e, int64_t w, int64_t c,
                                                                         const float *wt, int64_t co,
                                                                         const float *bias, float *out, int64_t y,
                                                                         int64_t x0, int64_t v0, const int P,
                                                                         const int NVC) {
    const __m512 zero = _mm512_setzero_ps();
    __m512 acc[24][2];
    if (v0 == 0) down_prefetch(e, w, c, y, x0, P);
#pragma GCC unroll 24
    for (int p = 0; p < P; p++)
#pragma GCC unroll 2
        for (int v = 0; v < NVC; v++) acc[p][v] = _mm512_loadu_ps(bias + 16 * (v0 + v));
    for (int ky = 0; ky < 2; ky++)
        for (int kx = 0; kx < 2; kx++) {
            const float *in = e + ((2 * y + ky) * w + 2 * x0 + kx) * c;
            const float *wk = wt + (ky * 2 + kx) * c * co + 16 * v0;
            for (int64_t i = 0; i < c; i++) {
                __m512 wv[2];
#pragma GCC unroll 2
                for (int v = 0; v < NVC; v++) wv[v] = _mm512_loadu_ps(wk + i * co + 16 * v);
#pragma GCC unroll 24
                for (int p = 0; p < P; p++) {
                    const __m512 xv = _mm512_max_ps(_mm512_set1_ps(in[2 * p * c + i]), zero);
#pragma GCC unroll 2
                    for (int v = 0; v < NVC; v++) acc[p][v] = _mm512_fmadd_ps(xv, wv[v], acc[p][v]);
                }
            }
        }
#pragma GCC unroll 24
    for (int p = 0; p < P; p++)
#pragma GCC unroll 2
        for (int v = 0; v < NVC; v++) _mm512_storeu_ps(out + (y * (w / 2) + x0 + p) * co + 16 * (v0 + v), acc[p][v]);
}

/* One output row with AVX-512: the outputs in chunks of two 16-lane vectors (12 pixels at a time)
 * or one (24 pixels), then, where co is an odd multiple of 8, the last 8 with the AVX2 code
 * (ROW8(1, 12), v0 in 8-lane vectors). */
#define BY_CHUNKS_512(ROW, ROW8)                                                                           \
    do {                                                                                                   \
        for (int64_t v0 = 0; v0 < co / 16; v0 += 2) {                                                     \
            if (co / 16 - v0 >= 2) ROW(2, 12);                                                             \
            else ROW(1, 24);                                                                               \
        }                                                                                                  \
        if (co % 16) {                                                                                     \
            const int64_t v0 = co / 8 - 1;                                                                 \
            ROW8(1, 12);                                                                                   \
        }                                                                                                  \
    } while (0)

#define DOWN_ROW_512(NVC, P) BY_PIXELS(down_pixels_512, w2, NVC, P, e, w, c, wt, co, bias, out, y)

static AVX512 void relu_down_row_512(const float *e, int64_t w, int64_t c, const float *wt, const float *bias,
                                     int64_t co, float *out, int64_t y) {
    const int64_t w2 = w / 2;
    BY_CHUNKS_512(DOWN_ROW_512, DOWN_ROW);
}

int rcd_relu_down(const float *e, int64_t h, int64_t w, int64_t c, const float *wt, const float *bias, int64_t co,
                  float *out, int threads) {
    if (h < 2 || w < 2 || h % 2 || w % 2 || c < 1 || co < 8 || co % 8) return 1;
    const int64_t h2 = h / 2, w2 = w / 2;
    const int64_t n = threads < 1 ? 1 : (threads > h2 ? h2 : threads);
#pragma omp parallel for num_threads(n) schedule(static)
    for (int64_t t = 0; t < n; t++)
        for (int64_t y = h2 * t / n; y < h2 * (t + 1) / n; y++) {
            if (isa_level >= 3) relu_down_row_512(e, w, c, wt, bias, co, out, y);
            else BY_CHUNKS(DOWN_ROW);
        }
    return 0;
}

/* ---- the backbone's first layer from the uint8 frame ---------------------------------------------
 *
 * out (hp/2, wp/2, co) = conv2d(frame, wt, bias, stride 2, padding 1) with a 4×4 kernel, where frame
 * is rgb (h, w, 3) uint8 replicate-padded to hp × wp (as engine/denoiser.py pads the backbone's
 * input) and zero-padded by one more pixel all round (the convolution's own padding). wt (4, 12,
 * co): weight (co, 3, 4, 4) as (ky, kx·3 + c, co). torch needs a float copy of the padded frame
 * first (a pass over 4 bytes per value); here each output row converts the 4 input rows it reads
 * into a small float buffer and convolves from there.
 */
static void inp_row_f32(float *buf, const uint8_t *rgb, int64_t h, int64_t w, int64_t hp, int64_t wp, int64_t iy) {
    const int64_t len = (wp + 2) * 3;  /* columns -1 .. wp */
    if (iy < 0 || iy >= hp) {
        memset(buf, 0, sizeof(float) * len);
        return;
    }
    const uint8_t *src = rgb + (iy < h ? iy : h - 1) * w * 3;
    float *dst = buf + 3;
    int64_t i = 0;
    for (; i + 8 <= 3 * w; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(src + i)))));
    for (; i < 3 * w; i++) dst[i] = (float)src[i];
    for (int64_t x = w; x < wp; x++)  /* replicate the last column */
        for (int c = 0; c < 3; c++) dst[3 * x + c] = (float)src[3 * (w - 1) + c];
    buf[0] = buf[1] = buf[2] = 0.0f;
    buf[len - 3] = buf[len - 2] = buf[len - 1] = 0.0f;
}

static inline __attribute__((always_inline)) void inp_pixels(const float *rows, int64_t len, const float *wt,
                                                             int64_t co, const float *bias, float *out, int64_t x0,
                                                             int64_t v0, const int P, const int NVC) {
    __m256 acc[12][4];
    acc_bias(acc, bias + 8 * v0, P, NVC);
    for (int ky = 0; ky < 4; ky++)  /* output pixel x reads 12 floats from 6·x */
        acc_fma(acc, rows + ky * len + 6 * x0, 6, 12, wt + ky * 12 * co + 8 * v0, co, P, NVC, 0);
    acc_store(acc, out + x0 * co + 8 * v0, co, P, NVC);
}

#define INP_ROW(NVC, P) BY_PIXELS(inp_pixels, w2, NVC, P, rows, len, wt, co, bias, orow)

/* inp_pixels with AVX-512, as down_pixels_512 is to down_pixels. */
static inline AVX512 __attribute__((always_inline)) void inp_pixels_512(const float *rows, int64_t len,
                                                                        const float *wt, int64_t co,
                                                                        const float *bias, float *out, int64_t x0,
                                                                        int64_t v0, const int P, const int NVC) {
    __m512 acc[24][2];
#pragma GCC unroll 24
    for (int p = 0; p < P; p++)
#pragma GCC unroll 2
        for (int v = 0; v < NVC; v++) acc[p][v] = _mm512_loadu_ps(bias + 16 * (v0 + v));
    for (int ky = 0; ky < 4; ky++) {
        const float *in = rows + ky * len + 6 * x0;
        const float *wk = wt + ky * 12 * co + 16 * v0;
        for (int j = 0; j < 12; j++) {
            __m512 wv[2];
#pragma GCC unroll 2
            for (int v = 0; v < NVC; v++) wv[v] = _mm512_loadu_ps(wk + j * co + 16 * v);
#pragma GCC unroll 24
            for (int p = 0; p < P; p++) {
                const __m512 xv = _mm512_set1_ps(in[6 * p + j]);
#pragma GCC unroll 2
                for (int v = 0; v < NVC; v++) acc[p][v] = _mm512_fmadd_ps(xv, wv[v], acc[p][v]);
            }
        }
    }
#pragma GCC unroll 24
    for (int p = 0; p < P; p++)
#pragma GCC unroll 2
        for (int v = 0; v < NVC; v++) _mm512_storeu_ps(out + (x0 + p) * co + 16 * (v0 + v), acc[p][v]);
}

#define INP_ROW_512(NVC, P) BY_PIXELS(inp_pixels_512, w2, NVC, P, rows, len, wt, co, bias, orow)

static AVX512 void inp_row_512(const float *rows, int64_t len, const float *wt, const float *bias, int64_t co,
                               float *orow, int64_t w2) {
    BY_CHUNKS_512(INP_ROW_512, INP_ROW);
}

int rcd_inp(const uint8_t *rgb, int64_t h, int64_t w, int64_t hp, int64_t wp, const float *wt, const float *bias,
            int64_t co, float *out, int threads) {
    if (h < 1 || w < 1 || hp < h || wp < w || hp % 2 || wp % 2 || co < 8 || co % 8) return 1;
    const int64_t h2 = hp / 2, w2 = wp / 2, len = (wp + 2) * 3;
    const int64_t n = threads < 1 ? 1 : (threads > h2 ? h2 : threads);
    int failed = 0;
#pragma omp parallel for num_threads(n) schedule(static) reduction(| : failed)
    for (int64_t t = 0; t < n; t++) {
        float *rows = malloc(sizeof(float) * 4 * len);  /* input rows 2·y - 1 .. 2·y + 2 as floats */
        if (!rows) {
            failed = 1;
            continue;
        }
        for (int64_t y = h2 * t / n; y < h2 * (t + 1) / n; y++) {
            for (int ky = 0; ky < 4; ky++) inp_row_f32(rows + ky * len, rgb, h, w, hp, wp, 2 * y - 1 + ky);
            float *orow = out + y * w2 * co;
            if (isa_level >= 3) inp_row_512(rows, len, wt, bias, co, orow, w2);
            else BY_CHUNKS(INP_ROW);
        }
        free(rows);
    }
    return failed ? 2 : 0;
}

/* ---- the backbone's 3×3 residual blocks by Winograd F(4×4, 3×3): x ← x + conv3×3(relu(x)) ----------
 *
 * x (h, w, c): channels-last float32, contiguous, c a multiple of 8, updated in place; zero padding
 * of 1. Each 4×4 block of outputs ("tile") comes from the 6×6 inputs around it: V = Bᵀ·relu(d)·B per input
 * channel; then per position p of the 6×6 a (tiles × c) · (c × c) matrix product M_p = V_p·U_p,
 * U = G·g·Gᵀ being the transformed weights (engine/native.py, winograd_weights: u (36, c, c) =
 * [p][ci][co]); then x + bias + Aᵀ·M·A. 36·c² multiplications per 16 outputs against 144·c² for
 * the direct convolution; the transforms are adds and a few multiplications by 2, 4, 5 and 8.
 * The relu is applied to the inputs as they are read and the residual added as the outputs are
 * written, so neither relu(x) nor conv(relu(x)) is ever a frame-sized tensor. Measured on a 2-core
 * AVX2 CPU against torch's relu and oneDNN's direct convolution adding into x (one thread): 1.5× as
 * fast at 16 channels (the live model's 1/2 scale, 720p), 2.2× at 40 (its 1/8 scale). F(2×2, 3×3)
 * (16·c² per 4 outputs, 4×4 inputs) reached 1.2× and 1.5×: per output it loads, transforms and
 * stores more. The cost is rounding: the transforms scale values by up to 8 and 1/6 before they are
 * summed, so the result is within about 4e-6 of the values' scale where a direct convolution's is
 * within 1e-7 (the bfloat16 path rounds to 4e-3).
 *
 *   Bᵀ = [4  0 -5  0 1 0]    G = [ 1/4     0    0 ]    Aᵀ = [1 1  1 1  1 0]
 *        [0 -4 -4  1 1 0]        [-1/6 -1/6 -1/6 ]         [0 1 -1 2 -2 0]
 *        [0  4 -4 -1 1 0]        [-1/6  1/6 -1/6 ]         [0 1  1 4  4 0]
 *        [0 -2 -1  2 1 0]        [1/24 1/12  1/6 ]         [0 1 -1 8 -8 1]
 *        [0  2 -1 -2 1 0]        [1/24 -1/12 1/6 ]
 *        [0  4  0 -5 0 1]        [   0    0    1 ]
 *
 * A tile row runs in blocks of WINO_BLOCK tiles: the block's V and M (36 · WINO_BLOCK · c floats
 * each) stay in the core's own cache between the three steps. Against 12, both builds in one process,
 * one thread: 6 tiles took 9 % longer at 16 channels (720p's 1/2 scale) and 45 % at 40 (its 1/8:
 * a chunk of 12 tiles falls apart into single ones), 24 tiles the same and 14 % longer.
 */
#define WINO_BLOCK 12  /* tiles: a multiple of every P of BY_CHUNKS (12, 6, 4, 3) */
#define WINO_MAX_C 512

/* V of tiles t0 .. t0 + nt of a tile row: v[p · nt · c + t · c + i] for position p = 6·row + column
 * of the 6×6, input channel i. rows: the 6 input rows' first pixels (NULL: the zero padding above or
 * below the frame); left, where given: the first tile's first column in rows 1..4, c floats apart
 * (their values before the block to the left overwrote them). Columns outside the frame are zero. */
static inline __attribute__((always_inline)) void wino_in(const float *const rows[6], const float *left, int64_t w,
                                                          int64_t c, int64_t t0, int64_t nt, float *v) {
    const __m256 zero = _mm256_setzero_ps(), two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f),
                 five = _mm256_set1_ps(5.0f);
    const int64_t ps = nt * c;  /* floats between positions */
    for (int64_t t = 0; t < nt; t++) {
        const int64_t x0 = 4 * (t0 + t) - 1;  /* the 6×6's first column */
        const float *src[6][6];  /* each input pixel's c values, NULL for the padding */
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++) src[i][j] = rows[i] && x0 + j >= 0 && x0 + j < w ? rows[i] + (x0 + j) * c : NULL;
        if (t == 0 && left)
            for (int i = 1; i < 5; i++) src[i][0] = rows[i] ? left + (i - 1) * c : NULL;
        float *vt = v + t * c;
        for (int64_t i0 = 0; i0 < c; i0 += 8) {
            __m256 r[6][6];  /* relu(d)·B, row by row; then Bᵀ·(relu(d)·B), column by column */
#pragma GCC unroll 6
            for (int i = 0; i < 6; i++) {
                __m256 d[6];
#pragma GCC unroll 6
                for (int j = 0; j < 6; j++) d[j] = src[i][j] ? _mm256_max_ps(_mm256_loadu_ps(src[i][j] + i0), zero) : zero;
                r[i][0] = _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4]));
                r[i][1] = _mm256_fnmadd_ps(four, _mm256_add_ps(d[1], d[2]), _mm256_add_ps(d[3], d[4]));
                r[i][2] = _mm256_fmadd_ps(four, _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3]));
                r[i][3] = _mm256_fmadd_ps(two, _mm256_sub_ps(d[3], d[1]), _mm256_sub_ps(d[4], d[2]));
                r[i][4] = _mm256_fnmadd_ps(two, _mm256_sub_ps(d[3], d[1]), _mm256_sub_ps(d[4], d[2]));
                r[i][5] = _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5]));
            }
#pragma GCC unroll 6
            for (int j = 0; j < 6; j++) {
                const __m256 d0 = r[0][j], d1 = r[1][j], d2 = r[2][j], d3 = r[3][j], d4 = r[4][j], d5 = r[5][j];
                _mm256_storeu_ps(vt + (0 + j) * ps + i0, _mm256_fmadd_ps(four, d0, _mm256_fnmadd_ps(five, d2, d4)));
                _mm256_storeu_ps(vt + (6 + j) * ps + i0, _mm256_fnmadd_ps(four, _mm256_add_ps(d1, d2), _mm256_add_ps(d3, d4)));
                _mm256_storeu_ps(vt + (12 + j) * ps + i0, _mm256_fmadd_ps(four, _mm256_sub_ps(d1, d2), _mm256_sub_ps(d4, d3)));
                _mm256_storeu_ps(vt + (18 + j) * ps + i0, _mm256_fmadd_ps(two, _mm256_sub_ps(d3, d1), _mm256_sub_ps(d4, d2)));
                _mm256_storeu_ps(vt + (24 + j) * ps + i0, _mm256_fnmadd_ps(two, _mm256_sub_ps(d3, d1), _mm256_sub_ps(d4, d2)));
                _mm256_storeu_ps(vt + (30 + j) * ps + i0, _mm256_fmadd_ps(four, d1, _mm256_fnmadd_ps(five, d3, d5)));
            }
        }
    }
}

/* M_p = V_p · U_p for one position: P tiles × NVC vectors of outputs in registers (acc_fma). */
static inline __attribute__((always_inline)) void wino_mul_tiles(const float *vp, int64_t c, const float *up,
                                                                 int64_t co, float *mp, int64_t x0, int64_t v0,
                                                                 const int P, const int NVC) {
    __m256 acc[12][4];
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) acc[p][v] = _mm256_setzero_ps();
    acc_fma(acc, vp + x0 * c, c, c, up + 8 * v0, co, P, NVC, 0);
    acc_store(acc, mp + x0 * co + 8 * v0, co, P, NVC);
}

#define WINO_MUL_ROW(NVC, P) BY_PIXELS(wino_mul_tiles, nt, NVC, P, vp, c, up, co, mp)

/* The 4×4 blocks of tiles t0 .. t0 + nt of tile row ty from M, in place: x ← x + bias + Aᵀ·M·A (the
 * parts of the last row and column of tiles that fall inside the frame). */
static inline __attribute__((always_inline)) void wino_out(const float *m, float *x, const float *bias, int64_t h,
                                                         int64_t w, int64_t c, int64_t ty, int64_t t0, int64_t nt) {
    const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f), eight = _mm256_set1_ps(8.0f);
    const int64_t ps = nt * c;
    for (int64_t t = 0; t < nt; t++) {
        const int64_t ox = 4 * (t0 + t), oy = 4 * ty;
        const int nx = w - ox < 4 ? (int)(w - ox) : 4, ny = h - oy < 4 ? (int)(h - oy) : 4;
        const float *mt = m + t * c;
        for (int64_t i0 = 0; i0 < c; i0 += 8) {
            __m256 s[4][6];  /* Aᵀ·M, column by column; then (Aᵀ·M)·A, row by row */
#pragma GCC unroll 6
            for (int j = 0; j < 6; j++) {
                __m256 q[6];
#pragma GCC unroll 6
                for (int i = 0; i < 6; i++) q[i] = _mm256_loadu_ps(mt + (6 * i + j) * ps + i0);
                const __m256 a12 = _mm256_add_ps(q[1], q[2]), s12 = _mm256_sub_ps(q[1], q[2]);
                const __m256 a34 = _mm256_add_ps(q[3], q[4]), s34 = _mm256_sub_ps(q[3], q[4]);
                s[0][j] = _mm256_add_ps(_mm256_add_ps(q[0], a12), a34);
                s[1][j] = _mm256_fmadd_ps(two, s34, s12);
                s[2][j] = _mm256_fmadd_ps(four, a34, a12);
                s[3][j] = _mm256_add_ps(_mm256_fmadd_ps(eight, s34, s12), q[5]);
            }
            const __m256 b = _mm256_loadu_ps(bias + i0);
#pragma GCC unroll 4
            for (int a = 0; a < 4; a++) {
                if (a >= ny) break;
                const __m256 *q = s[a];
                const __m256 a12 = _mm256_add_ps(q[1], q[2]), s12 = _mm256_sub_ps(q[1], q[2]);
                const __m256 a34 = _mm256_add_ps(q[3], q[4]), s34 = _mm256_sub_ps(q[3], q[4]);
                __m256 o4[4];
                o4[0] = _mm256_add_ps(_mm256_add_ps(q[0], a12), a34);
                o4[1] = _mm256_fmadd_ps(two, s34, s12);
                o4[2] = _mm256_fmadd_ps(four, a34, a12);
                o4[3] = _mm256_add_ps(_mm256_fmadd_ps(eight, s34, s12), q[5]);
                const int64_t o = ((oy + a) * w + ox) * c + i0;
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++)
                    if (k < nx)
                        _mm256_storeu_ps(x + o + k * c, _mm256_add_ps(_mm256_add_ps(o4[k], b), _mm256_loadu_ps(x + o + k * c)));
            }
        }
    }
}

/* Row y of the skip join d = nearest-×2(u) + x, u = conv1×1 of the coarser scale (cv) computed a
 * row at a time into urow (kept while *urow_y, the coarse row it holds, stays the same), written to
 * out (x's own row for the join in place). */
static void join_line(const float *x, int64_t w, int64_t c, const conv1_t *cv, float *urow, int64_t *urow_y,
                      int64_t y, float *out) {
    join_row_isa(conv1_u_row(cv, w, c, urow, urow_y, y), (const char *)(x + y * w * c), (char *)out, NULL, w, c,
                 NULL, 0);
}

/* In place: x ← x + bias + conv3×3(relu(x)). Each thread takes a band of tile rows; what a tile reads
 * that an earlier write has overwritten comes from copies made before the write: the row above its
 * tile row (prev: the previous tile row's last, or the band above's, copied before any thread writes),
 * the column left of its block (col), and the band below's first row (bottom, copied likewise).
 * With cv, x first becomes the skip join nearest-×2(conv1×1(cv)) + x (rcd_conv_up_add_relu's, in
 * place), row by row just ahead of the tile rows that read it, while the rows are in cache: the
 * join's own pass over x, a read and a write of the frame-sized tensor, goes; the copies above are
 * of joined rows, computed from x before any thread writes. */
static int res3x3(float *x, int64_t h, int64_t w, int64_t c, const float *u, const float *bias, int threads,
                  const conv1_t *cv) {
    if (h < 1 || w < 1 || c < 8 || c % 8 || c > WINO_MAX_C) return 1;
    if (cv && (h % 2 || w % 2 || c > UP_MAX_C || cv->ci < 1)) return 1;
    const int64_t th = (h + 3) / 4, tw = (w + 3) / 4;  /* tile rows, tiles per row */
    const int64_t n = threads < 1 ? 1 : (threads > th ? th : threads);
    const int64_t co = c, row = w * c;  /* co: the outputs, as BY_CHUNKS names them; row: floats per pixel row */
    int failed = 0;
#pragma omp parallel num_threads(n) reduction(| : failed)
    {
        const int64_t nthr = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t a = th * me / nthr, b = th * (me + 1) / nthr;  /* this thread's tile rows */
        float *v = malloc(sizeof(float) * 36 * WINO_BLOCK * (size_t)c);
        float *m = malloc(sizeof(float) * 36 * WINO_BLOCK * (size_t)c);
        float *saved = malloc(sizeof(float) * (size_t)(3 * row + 4 * c));
        float *urow = cv ? malloc(sizeof(float) * (size_t)(w / 2 * c)) : NULL;  /* the join's current row of u */
        int64_t urow_y = -1, joined = 4 * a;  /* the join: u's row in urow; this band's rows joined so far */
        const int ok = v && m && saved && (!cv || urow);
        float *prev = saved, *next = saved + row, *bottom = saved + 2 * row, *col = saved + 3 * row;
        if (ok && a < b) {
            if (a > 0) {
                if (cv) join_line(x, w, c, cv, urow, &urow_y, 4 * a - 1, prev);
                else memcpy(prev, x + (4 * a - 1) * row, sizeof(float) * (size_t)row);
            }
            if (4 * b < h) {
                if (cv) join_line(x, w, c, cv, urow, &urow_y, 4 * b, bottom);
                else memcpy(bottom, x + 4 * b * row, sizeof(float) * (size_t)row);
            }
        }
        failed |= !ok;
#pragma omp barrier
        for (int64_t ty = a; ok && ty < b; ty++) {
            if (cv) {  /* this band's rows up to the one below the tile row (the next tile row's first) */
                int64_t upto = 4 * ty + 5 < 4 * b ? 4 * ty + 5 : 4 * b;
                upto = upto < h ? upto : h;
                for (; joined < upto; joined++) join_line(x, w, c, cv, urow, &urow_y, joined, x + joined * row);
            }
            const float *rows[6];
            for (int i = 0; i < 6; i++) {
                const int64_t r = 4 * ty - 1 + i;
                rows[i] = r < 0 || r >= h ? NULL : i == 0 ? prev : r == 4 * b ? bottom : x + r * row;
            }
            for (int64_t t0 = 0; t0 < tw; t0 += WINO_BLOCK) {
                const int64_t nt = tw - t0 < WINO_BLOCK ? tw - t0 : WINO_BLOCK;
                wino_in(rows, t0 > 0 ? col : NULL, w, c, t0, nt, v);
                for (int p = 0; p < 36; p++) {
                    const float *vp = v + p * nt * c, *up = u + p * c * c;
                    float *mp = m + p * nt * c;
                    BY_CHUNKS(WINO_MUL_ROW);
                }
                /* before the block's outputs overwrite them: the next tile row's row above, and the
                 * next block's column to the left */
                const int64_t c0 = 4 * t0, c1 = 4 * (t0 + nt) < w ? 4 * (t0 + nt) : w;
                if (4 * ty + 3 < h) memcpy(next + c0 * c, x + (4 * ty + 3) * row + c0 * c, sizeof(float) * (size_t)((c1 - c0) * c));
                if (t0 + nt < tw)
                    for (int i = 0; i < 4 && 4 * ty + i < h; i++)
                        memcpy(col + i * c, x + (4 * ty + i) * row + (c1 - 1) * c, sizeof(float) * (size_t)c);
                wino_out(m, x, bias, h, w, c, ty, t0, nt);
            }
            float *swap = prev;
            prev = next;
            next = swap;
        }
        free(v);
        free(m);
        free(saved);
        free(urow);
    }
    return failed ? 2 : 0;
}

int rcd_res3x3(float *x, int64_t h, int64_t w, int64_t c, const float *u, const float *bias, int threads) {
    return res3x3(x, h, w, c, u, bias, threads, NULL);
}

/* The skip join then the residual block, in one pass over x (res3x3 with cv): xc (h/2, w/2, ci) the
 * coarser scale (read through a relu), wt (ci, c) and jbias (c) its 1×1 convolution. */
int rcd_join_res3x3(float *x, int64_t h, int64_t w, int64_t c, const float *u, const float *bias, const float *xc,
                    int64_t ci, const float *wt, const float *jbias, int threads) {
    const conv1_t cv = {xc, wt, jbias, ci};
    return res3x3(x, h, w, c, u, bias, threads, &cv);
}
