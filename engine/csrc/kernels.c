/* The per-frame passes over the RCD bases on a CPU, each one read of the frame's data.
 *
 * X holds one row per half-size pixel (h2·wp2 rows, k = c1 + 13 float32 columns):
 * [d (c1 features) | 1 | noisy (12 values: sub-pixel rows dy = 0, 1 of (dx, RGB), 0..255)].
 * - rcd_fill: X's [1 | noisy] columns from the uint8 frame, and the noise estimate's histogram;
 * - rcd_cross_gram: [d | 1]ᵀ·X and per-column sums of squares (what ND and AutoTune need);
 * - rcd_blend: the uint8 frame from X and a blend's weights.
 * And passes of the backbone itself (engine/fused.py):
 * - rcd_up_add_relu: a U-Net skip join, d = nearest-×2(u) + e, with relu(d) and Σ|d| per channel;
 * - rcd_relu_down: its downsampling, a 2×2 stride-2 convolution of relu(e).
 *
 * The blend. The frame's 12 values of a half-pixel are noisy + d·W + b (engine/denoiser.py,
 * _feature_weights): W (c1, 16) and b (16) come in as wm (c1 + 1, 16) float32, columns 12..15
 * unused, b already holding the +0.5 that makes the truncating conversion round to nearest.
 * torch does the same in three passes (a 1×1 convolution, a clamp, a strided depth-to-space
 * uint8 copy), each reading or writing a frame-sized float buffer; here each half-pixel is read
 * once and its 2×2 pixels are written once (measured 1.35–1.6× the time of a copy of those bytes).
 *
 * x86-64 with AVX2, FMA and F16C only (the loader checks the CPU); built by engine/native.py with the
 * system C compiler and loaded with ctypes. Every other machine uses the torch path.
 */
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "these kernels need AVX2, FMA and F16C (-mavx2 -mfma -mf16c)"
#endif
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const void *x;    /* (h2 * wp2, k) float32, or float16 (the render cache's compact bases) */
    int64_t wp2, k, c1;
    const float *wm;  /* (c1 + 1, 16) */
    uint8_t *out;     /* (h, w, 3), C-contiguous */
    int64_t h, w;
    int64_t y0, y1;   /* half-size rows of this job */
} job_t;

/* Row i of a float16 X converted to float32 into `buf` (k ≤ 64). */
static inline const float *row_f32(const job_t *j, int64_t i, float *buf) {
    const int64_t k = j->k;
    const uint16_t *h = (const uint16_t *)j->x + i * k;
    int64_t c = 0;
    for (; c + 8 <= k; c += 8) _mm256_storeu_ps(buf + c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + c))));
    for (; c < k; c++) buf[c] = _cvtsh_ss(h[c]);  /* the row's tail: no read past its end */
    return buf;
}

/* c1 and half are compile-time constants in each specialisation (blend_rows): for the shipped
 * models (c1 16, 32) the feature loop unrolls, and the float32 path carries no conversion. */
static inline __attribute__((always_inline)) void blend_rows_c1(const job_t *j, const int64_t c1, const int half) {
    const int64_t w = j->w, h = j->h;
    const int64_t w2 = (w + 1) / 2;  /* half-pixels per row that reach the frame */
    const float *wm = j->wm;
    const __m256 b0 = _mm256_loadu_ps(wm + c1 * 16);  /* outputs 0..7 */
    const __m128 b1 = _mm_loadu_ps(wm + c1 * 16 + 8); /* outputs 8..11 */
    const __m256 hi0 = _mm256_set1_ps(255.0f), lo0 = _mm256_setzero_ps();
    const __m128 hi1 = _mm_set1_ps(255.0f), lo1 = _mm_setzero_ps();
    for (int64_t y2 = j->y0; y2 < j->y1; y2++) {
        uint8_t *row0 = j->out + (2 * y2) * w * 3;
        uint8_t *row1 = (2 * y2 + 1 < h) ? row0 + w * 3 : NULL;
        const float *line = half ? NULL : (const float *)j->x + y2 * j->wp2 * j->k;
        for (int64_t x2 = 0; x2 < w2; x2++) {
            float buf[64];
            const float *r = half ? row_f32(j, y2 * j->wp2 + x2, buf) : line + x2 * j->k;
            __m256 a0 = _mm256_add_ps(b0, _mm256_loadu_ps(r + c1 + 1));
            __m128 a1 = _mm_add_ps(b1, _mm_loadu_ps(r + c1 + 9));
            __m256 e0 = _mm256_setzero_ps();  /* odd features sum apart: two FMA chains, not one */
            __m128 e1 = _mm_setzero_ps();
            int64_t q = 0;
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
            a0 = _mm256_add_ps(a0, e0);
            a1 = _mm_add_ps(a1, e1);
            /* clamp to 0..255 (min keeps its second operand, so NaN -> 255), truncate, pack: bytes 0..5
               row dy = 0, 6..11 row dy = 1 */
            a0 = _mm256_max_ps(_mm256_min_ps(a0, hi0), lo0);
            a1 = _mm_max_ps(_mm_min_ps(a1, hi1), lo1);
            const __m256i i0 = _mm256_cvttps_epi32(a0);
            const __m128i i1 = _mm_cvttps_epi32(a1);
            const __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(i0), _mm256_extracti128_si256(i0, 1));
            const __m128i p8 = _mm_packus_epi16(p16, _mm_packus_epi32(i1, i1));
            if (x2 + 1 < w2) {  /* 8-byte stores: their 2 extra bytes are the next half-pixel's, written next */
                _mm_storel_epi64((__m128i *)(row0 + 6 * x2), p8);
                if (row1) _mm_storel_epi64((__m128i *)(row1 + 6 * x2), _mm_srli_si128(p8, 6));
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

static void blend_rows(const job_t *j, const int half) {
    if (half) {
        if (j->c1 == 16) blend_rows_c1(j, 16, 1);
        else if (j->c1 == 32) blend_rows_c1(j, 32, 1);
        else blend_rows_c1(j, j->c1, 1);
    } else {
        if (j->c1 == 16) blend_rows_c1(j, 16, 0);
        else if (j->c1 == 32) blend_rows_c1(j, 32, 0);
        else blend_rows_c1(j, j->c1, 0);
    }
}

/* Blend a frame of h×w pixels; X rows are wp2 half-pixels wide (wp2 ≥ (w + 1) / 2, padding
 * columns skipped). Bands of rows run on `threads` OpenMP threads: built with -fopenmp this
 * library shares the libgomp torch has already loaded (the same soname), so the blend runs on
 * torch's own worker threads instead of competing with them for the cores. 0 = done. */
static int blend_any(const void *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, uint8_t *out, int64_t h,
                     int64_t w, int threads, const int half) {
    if (k != c1 + 13 || k > 64 || wp2 < (w + 1) / 2 || h < 1 || w < 1) return 1;
    const int64_t h2 = (h + 1) / 2;
    const int64_t n = threads < 1 ? 1 : (threads > h2 ? h2 : threads);
#pragma omp parallel for num_threads(n) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const job_t job = {x, wp2, k, c1, wm, out, h, w, h2 * i / n, h2 * (i + 1) / n};
        blend_rows(&job, half);
    }
    return 0;
}

int rcd_blend(const float *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, uint8_t *out, int64_t h,
              int64_t w, int threads) {
    return blend_any(x, wp2, k, c1, wm, out, h, w, threads, 0);
}

/* The same from X stored in float16 (IEEE half, as torch.float16). */
int rcd_blend_f16(const uint16_t *x, int64_t wp2, int64_t k, int64_t c1, const float *wm, uint8_t *out, int64_t h,
                  int64_t w, int threads) {
    return blend_any(x, wp2, k, c1, wm, out, h, w, threads, 1);
}

/* ---- statistics: the cross Gram [d | 1]ᵀ·X over a frame's half-pixels --------------------------
 *
 * g (c1 + 1, k) float64 = Σ_p x_p[0..c1]ᵀ · x_p over the h2 × w2 half-pixels that lie in the frame
 * (padding columns skipped), and sq (k) float64 = Σ_p x_p² per column. This is what ND and AutoTune
 * need of a frame (engine/denoiser.py, _covariance): one pass over X instead of a batched BLAS
 * product that also reads the padding and a second pass for the frame's sum of squares.
 *
 * Blocking: rows of X are taken in runs of GRAM_RUN half-pixels (they stay in L1); for each block
 * of RB rows of g, RB × NVB float32 accumulators stay in registers over the run, then go into
 * float64 sums. float32 over a 128-row run loses nothing that matters; float64 across runs keeps
 * the small eigenvalues of near-collinear maps (decorrelate.py, covariance).
 *
 * Symmetry: the [d | 1]ᵀ[d | 1] block of g is symmetric, so row i of g starts at the 8-column
 * vector that holds column i (the columns left of it are copied from g's upper triangle at the
 * end), and the ones row (i = c1, Σ_p x_p; X's column c1 must be ones) is summed in the squares'
 * pass, with no products. For c1 = 16 that is 56 vector FMAs per half-pixel instead of 72, for
 * c1 = 32 144 instead of 204. Measured at 720p against the full product, alternating calls: 5–15 %
 * faster for c1 = 16, 12–19 % for c1 = 32 (the masked load below costs about half of that gain
 * where it runs on every half-pixel, so it runs on a line's last one only).
 */
#define GRAM_RUN 128
#define GRAM_MAX_NV 8 /* k ≤ 64 columns */

/* Rows a0 .. a0 + valid - 1 of g over vectors v0 .. v0 + NVB - 1 of each X row (the last one reaches
 * past column k, into lanes that are never stored): RB and NVB compile-time (the accumulators stay
 * in registers), RB ≥ valid. */
static inline __attribute__((always_inline)) void gram_block(const float *x, int64_t p0, int64_t p1, int64_t k,
                                                             int64_t pend, int64_t a0, int64_t valid, int64_t v0,
                                                             const int NVB, const int RB, __m256i tail, double *g) {
    __m256 acc[8][GRAM_MAX_NV];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NVB; v++) acc[i][v] = _mm256_setzero_ps();
    for (int64_t p = p0; p < p1; p++) {
        const float *r = x + p * k;
        const float *rv0 = r + 8 * v0;
        __m256 rv[GRAM_MAX_NV];
#pragma GCC unroll 8
        for (int v = 0; v < NVB - 1; v++) rv[v] = _mm256_loadu_ps(rv0 + 8 * v);
        /* the last vector runs past column k into the next row of X, lanes never stored; only the
           line's last half-pixel, which may end the buffer, takes the (slower) masked load */
        rv[NVB - 1] = p + 1 < pend ? _mm256_loadu_ps(rv0 + 8 * (NVB - 1)) : _mm256_maskload_ps(rv0 + 8 * (NVB - 1), tail);
#pragma GCC unroll 8
        for (int i = 0; i < RB; i++) {  /* rows past `valid` read r[a0 + i] < k (rows ≤ c1 + 2 < k): unused */
            const __m256 d = _mm256_broadcast_ss(r + a0 + i);
#pragma GCC unroll 8
            for (int v = 0; v < NVB; v++) acc[i][v] = _mm256_fmadd_ps(d, rv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++) {  /* constant indices into acc: it stays in registers */
        float f[8 * GRAM_MAX_NV] = {0};
#pragma GCC unroll 8
        for (int v = 0; v < NVB; v++) _mm256_storeu_ps(f + 8 * v, acc[i][v]);
        if (i < valid)
            for (int64_t c = 8 * v0; c < k; c++) g[(a0 + i) * k + c] += f[c - 8 * v0];
    }
}

/* RB for NVB vectors: RB × NVB ≤ 12 accumulators, beside NVB row vectors and a broadcast. */
#define GRAM_CASE(NVB, RB) \
    case NVB: gram_block(x, p0, p1, k, n, a0, valid < RB ? valid : RB, v0, NVB, RB, tail, g); step = RB; break;

static void gram_line(const float *x, int64_t n, int64_t k, int64_t c1, double *g, double *sq) {
    const int64_t nv = (k + 7) / 8;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(k - 8 * (nv - 1))), lane);
    for (int64_t p0 = 0; p0 < n; p0 += GRAM_RUN) {
        const int64_t p1 = p0 + GRAM_RUN < n ? p0 + GRAM_RUN : n;
        for (int64_t a0 = 0; a0 < c1;) {  /* rows 0 .. c1 - 1 (the ones row comes below) */
            const int64_t v0 = a0 / 8;
            const int64_t boundary = 8 * (v0 + 1) < c1 ? 8 * (v0 + 1) : c1;  /* a block stops where a vector drops */
            const int64_t valid = boundary - a0;
            int64_t step = 1;
            switch ((int)(nv - v0)) {
                GRAM_CASE(1, 8) GRAM_CASE(2, 6) GRAM_CASE(3, 4) GRAM_CASE(4, 2)
                GRAM_CASE(5, 2) GRAM_CASE(6, 2) GRAM_CASE(7, 1) GRAM_CASE(8, 1)
            }
            a0 += step < valid ? step : valid;
        }
        __m256 s[GRAM_MAX_NV], cs[GRAM_MAX_NV];  /* per-column sums of squares, and sums (the ones row) */
        for (int v = 0; v < nv; v++) s[v] = cs[v] = _mm256_setzero_ps();
        for (int64_t p = p0; p < p1; p++) {
            const float *r = x + p * k;
            for (int v = 0; v < nv; v++) {
                __m256 t = v < nv - 1 || p + 1 < n ? _mm256_loadu_ps(r + 8 * v) : _mm256_maskload_ps(r + 8 * v, tail);
                if (v == nv - 1) t = _mm256_and_ps(t, _mm256_castsi256_ps(tail));  /* the next row's values out */
                s[v] = _mm256_fmadd_ps(t, t, s[v]);
                cs[v] = _mm256_add_ps(cs[v], t);
            }
        }
        float f[8 * GRAM_MAX_NV] = {0}, fc[8 * GRAM_MAX_NV] = {0};
        for (int v = 0; v < nv; v++) {
            _mm256_storeu_ps(f + 8 * v, s[v]);
            _mm256_storeu_ps(fc + 8 * v, cs[v]);
        }
        for (int64_t c = 0; c < k; c++) {
            sq[c] += f[c];
            g[c1 * k + c] += fc[c];
        }
    }
}

int rcd_cross_gram(const float *x, int64_t h2, int64_t wp2, int64_t w2, int64_t k, int64_t c1, double *g,
                   double *sq, int threads) {
    if (k != c1 + 13 || k > 8 * GRAM_MAX_NV || w2 > wp2 || h2 < 1 || w2 < 1) return 1;
    const int64_t rows = c1 + 1;
    memset(g, 0, sizeof(double) * rows * k);
    memset(sq, 0, sizeof(double) * k);
    const int64_t n = threads < 1 ? 1 : (threads > h2 ? h2 : threads);
    const int64_t stride = rows * k + k;
    double *part = calloc((size_t)(n * stride), sizeof(double)); /* each band's g and sq */
    if (!part) return 2;
#pragma omp parallel for num_threads(n) schedule(static)
    for (int64_t t = 0; t < n; t++)
        for (int64_t y2 = h2 * t / n; y2 < h2 * (t + 1) / n; y2++)
            gram_line(x + y2 * wp2 * k, w2, k, c1, part + t * stride, part + t * stride + rows * k);
    for (int64_t t = 0; t < n; t++) {
        for (int64_t i = 0; i < rows * k; i++) g[i] += part[t * stride + i];
        for (int64_t c = 0; c < k; c++) sq[c] += part[t * stride + rows * k + c];
    }
    for (int64_t i = 1; i < c1; i++)  /* the lower triangle of the [d | 1] block, from the upper */
        for (int64_t j = 0; j < i; j++) g[i * k + j] = g[j * k + i];
    free(part);
    return 0;
}

/* ---- filling X's [1 | noisy] columns from the uint8 frame, and the noise estimate's histogram ----
 *
 * With d (not NULL), X's feature columns are copied from it in the same pass (the fused backbone
 * leaves its features contiguous: writing them into X's strided rows cost as much as the copy).
 * For every half-pixel of the padded frame (hp/2 × wp/2): x[c1] = 1 and x[c1 + 1 ..] = its 2×2
 * pixels as floats (dy = 0, 1 of (dx, RGB)), the frame replicate-padded past its last row and
 * column, as engine/denoiser.py pads the backbone's input. In the same pass, the histogram of
 * 2·|diagonal Haar detail| (0..510) of the green plane over the 2×2 blocks whose top-left corner
 * is on the `step` grid inside the even-cropped frame: engine/model.py, estimate_noise_sigma, reads
 * its median off the same histogram. torch filled the 13 strided columns in 4–5 ms at 720p.
 */
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

int rcd_fill(float *x, int64_t k, int64_t c1, const uint8_t *rgb, int64_t h, int64_t w, int64_t hp, int64_t wp,
             int64_t step, int64_t *hist, const float *d, int threads) {
    const int64_t h2 = hp / 2, wp2 = wp / 2;
    if (k != c1 + 13 || hp < h || wp < w || h < 1 || w < 1 || hp % 2 || wp % 2 || (step != 2 && step != 4)) return 1;
    const int64_t he = h / 2 * 2, we = w / 2 * 2;  /* the noise estimate's even-cropped frame */
    const int64_t n = threads < 1 ? 1 : (threads > h2 ? h2 : threads);
    int64_t *part = calloc((size_t)(n * 511), sizeof(int64_t));
    if (!part) return 2;
    /* interior half-pixels: both rows inside the frame and 8 bytes readable from 6·x2 in each */
    const int64_t readable = 3 * w >= 8 ? (3 * w - 8) / 6 + 1 : 0;
    const int64_t x_fast = readable < w / 2 ? readable : w / 2;
#pragma omp parallel for num_threads(n) schedule(static)
    for (int64_t t = 0; t < n; t++) {
        int64_t *hl = part + t * 511;
        for (int64_t y2 = h2 * t / n; y2 < h2 * (t + 1) / n; y2++) {
            float *xr = x + y2 * wp2 * k;
            if (d) {  /* the features, (h2·wp2, c1) contiguous: this row of X is written here anyway */
                const float *dr = d + y2 * wp2 * c1;
                if (c1 % 8 == 0) {
                    for (int64_t x2 = 0; x2 < wp2; x2++)
                        for (int64_t c = 0; c < c1; c += 8) _mm256_storeu_ps(xr + x2 * k + c, _mm256_loadu_ps(dr + x2 * c1 + c));
                } else {
                    for (int64_t x2 = 0; x2 < wp2; x2++) memcpy(xr + x2 * k, dr + x2 * c1, sizeof(float) * c1);
                }
            }
            const int inside = 2 * y2 + 1 < h;
            const uint8_t *r0 = rgb + (2 * y2) * w * 3, *r1 = r0 + w * 3;
            int64_t x2 = 0;
            if (inside) {
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
            /* noise histogram: blocks at (step·i, step·j) inside the even-cropped frame */
            if ((2 * y2) % step == 0 && 2 * y2 + 1 < he) {
                for (int64_t xx = 0; xx + 1 < we; xx += step) {
                    const int d = (int)r0[xx * 3 + 1] - r0[xx * 3 + 4] - r1[xx * 3 + 1] + r1[xx * 3 + 4];
                    hl[d < 0 ? -d : d]++;
                }
            }
        }
    }
    for (int i = 0; i < 511; i++) {
        hist[i] = 0;
        for (int64_t t = 0; t < n; t++) hist[i] += part[t * 511 + i];
    }
    free(part);
    return 0;
}

/* ---- the backbone's skip joins: d = nearest-×2(u) + e, r = relu(d), and Σ|d| per channel ----
 *
 * u (h/2, w/2, c), e, d and r (h, w, c): channels-last float32, contiguous (NHWC, batch 1).
 * torch runs this as three passes (upsample, add, relu) and the pooled statistic as two more (abs,
 * mean), each over a frame-sized tensor; here e is read once and d and r written once. d and r
 * may not alias e. abs_sum (c) float64, or NULL: Σ over the h × w pixels of |d|, per channel.
 * Every output value is the one torch computes (one float32 add, a max): bit-identical results.
 */
#define UP_MAX_C 256

int rcd_up_add_relu(const float *u, const float *e, float *d, float *r, int64_t h, int64_t w, int64_t c,
                    double *abs_sum, int threads) {
    if (h < 2 || w < 2 || h % 2 || w % 2 || c < 1 || c > UP_MAX_C) return 1;
    const int64_t n = threads < 1 ? 1 : (threads > h ? h : threads);
    double *part = calloc((size_t)(n * c), sizeof(double)); /* each band's Σ|d| */
    if (!part) return 2;
    const __m256 zero = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
#pragma omp parallel for num_threads(n) schedule(static)
    for (int64_t t = 0; t < n; t++) {
        for (int64_t y = h * t / n; y < h * (t + 1) / n; y++) {
            float row_sum[UP_MAX_C];  /* float32 over one row (at most a few thousand values), float64 across rows */
            if (abs_sum) memset(row_sum, 0, sizeof(float) * c);
            const float *ur = u + (y / 2) * (w / 2) * c;
            const int64_t o = y * w * c;
            for (int64_t x = 0; x < w; x++) {
                const float *us = ur + (x / 2) * c, *es = e + o + x * c;
                float *ds = d + o + x * c, *rs = r + o + x * c;
                int64_t i = 0;
                for (; i + 8 <= c; i += 8) {
                    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(us + i), _mm256_loadu_ps(es + i));
                    _mm256_storeu_ps(ds + i, v);
                    _mm256_storeu_ps(rs + i, _mm256_max_ps(v, zero));
                    if (abs_sum) _mm256_storeu_ps(row_sum + i, _mm256_add_ps(_mm256_loadu_ps(row_sum + i),
                                                                              _mm256_andnot_ps(sign, v)));
                }
                for (; i < c; i++) {
                    const float v = us[i] + es[i];
                    ds[i] = v;
                    rs[i] = v > 0.0f ? v : 0.0f;
                    if (abs_sum) row_sum[i] += v < 0.0f ? -v : v;
                }
            }
            if (abs_sum)
                for (int64_t i = 0; i < c; i++) part[t * c + i] += row_sum[i];
        }
    }
    if (abs_sum)
        for (int64_t i = 0; i < c; i++) {
            abs_sum[i] = 0.0;
            for (int64_t t = 0; t < n; t++) abs_sum[i] += part[t * c + i];
        }
    free(part);
    return 0;
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
static inline __attribute__((always_inline)) void down_pixels(const float *e, int64_t w, int64_t c, const float *wt,
                                                              int64_t co, const float *bias, float *out, int64_t y,
                                                              int64_t x0, int64_t v0, const int P, const int NVC) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 acc[12][4];
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) acc[p][v] = _mm256_loadu_ps(bias + 8 * (v0 + v));
    for (int ky = 0; ky < 2; ky++)
        for (int kx = 0; kx < 2; kx++) {
            const float *in = e + ((2 * y + ky) * w + 2 * x0 + kx) * c;  /* pixel p adds 2·p·c */
            const float *wk = wt + (ky * 2 + kx) * c * co + 8 * v0;
            for (int64_t i = 0; i < c; i++) {
                __m256 wv[4];
#pragma GCC unroll 4
                for (int v = 0; v < NVC; v++) wv[v] = _mm256_loadu_ps(wk + i * co + 8 * v);
#pragma GCC unroll 12
                for (int p = 0; p < P; p++) {
                    const __m256 xv = _mm256_max_ps(_mm256_broadcast_ss(in + 2 * p * c + i), zero);
#pragma GCC unroll 4
                    for (int v = 0; v < NVC; v++) acc[p][v] = _mm256_fmadd_ps(xv, wv[v], acc[p][v]);
                }
            }
        }
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) _mm256_storeu_ps(out + (y * (w / 2) + x0 + p) * co + 8 * (v0 + v), acc[p][v]);
}

/* One output row's co outputs in chunks of up to 4 vectors (NVC), each chunk a specialisation
 * with constant NVC and P = 12 / NVC pixels at a time (then single pixels for the row's tail):
 * ROW(NVC, P) runs one chunk starting at vector v0. Used by the downsampling and the first layer. */
#define BY_CHUNKS(ROW)                                                                                     \
    for (int64_t v0 = 0; v0 < co / 8; v0 += 4) {                                                           \
        switch ((int)(co / 8 - v0 < 4 ? co / 8 - v0 : 4)) {                                                \
            case 4: ROW(4, 3); break;                                                                      \
            case 3: ROW(3, 4); break;                                                                      \
            case 2: ROW(2, 6); break;                                                                      \
            default: ROW(1, 12); break;                                                                    \
        }                                                                                                  \
    }

#define DOWN_ROW(NVC, P)                                                                                   \
    do {                                                                                                   \
        int64_t x = 0;                                                                                     \
        for (; x + P <= w2; x += P) down_pixels(e, w, c, wt, co, bias, out, y, x, v0, P, NVC);             \
        for (; x < w2; x++) down_pixels(e, w, c, wt, co, bias, out, y, x, v0, 1, NVC);                     \
    } while (0)

int rcd_relu_down(const float *e, int64_t h, int64_t w, int64_t c, const float *wt, const float *bias, int64_t co,
                  float *out, int threads) {
    if (h < 2 || w < 2 || h % 2 || w % 2 || c < 1 || co < 8 || co % 8) return 1;
    const int64_t h2 = h / 2, w2 = w / 2;
    const int64_t n = threads < 1 ? 1 : (threads > h2 ? h2 : threads);
#pragma omp parallel for num_threads(n) schedule(static)
    for (int64_t t = 0; t < n; t++)
        for (int64_t y = h2 * t / n; y < h2 * (t + 1) / n; y++)
            BY_CHUNKS(DOWN_ROW);
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
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) acc[p][v] = _mm256_loadu_ps(bias + 8 * (v0 + v));
    for (int ky = 0; ky < 4; ky++) {
        const float *in = rows + ky * len + 6 * x0;  /* output pixel x reads 12 floats from 6·x */
        const float *wk = wt + ky * 12 * co + 8 * v0;
        for (int j = 0; j < 12; j++) {
            __m256 wv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NVC; v++) wv[v] = _mm256_loadu_ps(wk + j * co + 8 * v);
#pragma GCC unroll 12
            for (int p = 0; p < P; p++) {
                const __m256 xv = _mm256_broadcast_ss(in + 6 * p + j);
#pragma GCC unroll 4
                for (int v = 0; v < NVC; v++) acc[p][v] = _mm256_fmadd_ps(xv, wv[v], acc[p][v]);
            }
        }
    }
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < NVC; v++) _mm256_storeu_ps(out + (x0 + p) * co + 8 * (v0 + v), acc[p][v]);
}

#define INP_ROW(NVC, P)                                                                                    \
    do {                                                                                                   \
        int64_t x = 0;                                                                                     \
        for (; x + P <= w2; x += P) inp_pixels(rows, len, wt, co, bias, orow, x, v0, P, NVC);             \
        for (; x < w2; x++) inp_pixels(rows, len, wt, co, bias, orow, x, v0, 1, NVC);                     \
    } while (0)

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
            BY_CHUNKS(INP_ROW);
        }
        free(rows);
    }
    return failed ? 2 : 0;
}
