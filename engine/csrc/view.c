/* What the player's difference view shows: min(4·|a − b|, 255) of two uint8 RGB frames, in one
 * pass (NumPy needs six over the frame: 19 ms at 1080p on the development machine, most of a
 * 30 fps frame's time on the display's thread). Rows may be strided (a zoomed view's crop);
 * the output is contiguous. Built and loaded with the other kernels (engine/native.py). */
#include <stdint.h>

int rcd_absdiff4(const uint8_t *a, int64_t sa, const uint8_t *b, int64_t sb, uint8_t *out, int64_t h, int64_t n) {
    if (h < 0 || n < 0) return 1;
    for (int64_t y = 0; y < h; y++) {
        const uint8_t *pa = a + y * sa, *pb = b + y * sb;
        uint8_t *po = out + y * n;
        for (int64_t i = 0; i < n; i++) {  /* (vectorised by the compiler: max, min, sub, compare, blend) */
            uint8_t hi = pa[i] > pb[i] ? pa[i] : pb[i], lo = pa[i] > pb[i] ? pb[i] : pa[i];
            uint8_t d = (uint8_t)(hi - lo);
            po[i] = d >= 64 ? 255 : (uint8_t)(d << 2);
        }
    }
    return 0;
}

/* The display's picture of an HDR or wide-gamut frame (player/tonemap.py, DisplayMap, makes the
 * tables and says why each is what it is). Per pixel of uint8 R'G'B' rows (strided; the output is
 * contiguous):
 *   l = lin[code]                       per channel: linear light, SDR white 1
 *   l *= ootf(ky · l)                   a gain of the pixel's luminance (HLG's OOTF), when ootf is
 *                                       given: no + 1 samples over Y^(1/4) in [0, 1]
 *   l = m · l                           3×3, to BT.709 primaries
 *   l *= tone(max(l))                   the tone curve's gain on the largest channel (hue kept),
 *                                       nt + 1 samples over [0, tone_max]; above tone_max the
 *                                       largest channel becomes the curve's top
 *   out = enc[√clamp(l, 0, 1)]          ne samples over √L: the dark end keeps the codes' resolution
 * The gains are interpolated linearly, enc read at the nearest sample. Eight pixels at a time in
 * AVX2 (the tables' reads are gathers), the rest of a row one at a time: the same arithmetic. */
#include <math.h>
#include <immintrin.h>

typedef struct {
    const float *lin, *ky, *ootf, *m, *tone;
    const uint8_t *enc;
    int64_t no, nt, ne;
    float tone_max, top;  /* top: the curve's output at tone_max */
} rcd_tm;

static inline float rcd_lut(const float *t, int64_t n, float x) {  /* t[0..n] at x in [0, n] */
    x = x < 0.0f ? 0.0f : (x > (float)n ? (float)n : x);
    int64_t i = (int64_t)x;
    if (i > n - 1) i = n - 1;
    float f = x - (float)i;
    return t[i] + f * (t[i + 1] - t[i]);
}

static inline __m256 rcd_lut8(const float *t, int64_t n, __m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps((float)n));
    __m256i i = _mm256_min_epi32(_mm256_cvttps_epi32(x), _mm256_set1_epi32((int)n - 1));
    __m256 f = _mm256_sub_ps(x, _mm256_cvtepi32_ps(i));
    __m256 a = _mm256_i32gather_ps(t, i, 4), b = _mm256_i32gather_ps(t + 1, i, 4);
    return _mm256_fmadd_ps(f, _mm256_sub_ps(b, a), a);
}

static inline void rcd_tm_pixel(const rcd_tm *T, const uint8_t *p, uint8_t *o) {
    const float *m = T->m;
    float r = T->lin[p[0]], g = T->lin[p[1]], b = T->lin[p[2]];
    if (T->ootf) {
        float y = T->ky[0] * r + T->ky[1] * g + T->ky[2] * b;
        float k = rcd_lut(T->ootf, T->no, sqrtf(sqrtf(y > 0.0f ? y : 0.0f)) * (float)T->no);
        r *= k, g *= k, b *= k;
    }
    float c[3] = {m[0] * r + m[1] * g + m[2] * b, m[3] * r + m[4] * g + m[5] * b, m[6] * r + m[7] * g + m[8] * b};
    float mx = c[0] > c[1] ? c[0] : c[1];
    mx = mx > c[2] ? mx : c[2];
    float k = mx <= 0.0f ? 1.0f : mx >= T->tone_max ? T->top / mx : rcd_lut(T->tone, T->nt, mx * ((float)T->nt / T->tone_max));
    for (int i = 0; i < 3; i++) {
        float v = c[i] * k;
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        o[i] = T->enc[(int64_t)(sqrtf(v) * (float)(T->ne - 1) + 0.5f)];
    }
}

/* One output row from the source row p: pixel x is p's pixel x, or cols[x] where cols is given. */
static void rcd_tm_row8(const rcd_tm *T, const uint8_t *p, const int32_t *cols, uint8_t *o, int64_t w) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    const __m256 ts = _mm256_set1_ps((float)T->nt / T->tone_max), tmax = _mm256_set1_ps(T->tone_max);
    const __m256 top = _mm256_set1_ps(T->top), es = _mm256_set1_ps((float)(T->ne - 1)), half = _mm256_set1_ps(0.5f);
    __m256 mm[9];
    for (int i = 0; i < 9; i++) mm[i] = _mm256_set1_ps(T->m[i]);
    int64_t x = 0;
    for (; x + 8 <= w; x += 8, o += 24) {
        float lr[8], lg[8], lb[8];
        for (int k = 0; k < 8; k++) {
            const uint8_t *q = p + 3 * (cols ? cols[x + k] : x + k);
            lr[k] = T->lin[q[0]], lg[k] = T->lin[q[1]], lb[k] = T->lin[q[2]];
        }
        __m256 r = _mm256_loadu_ps(lr), g = _mm256_loadu_ps(lg), b = _mm256_loadu_ps(lb);
        if (T->ootf) {
            __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(T->ky[0]), r,
                       _mm256_fmadd_ps(_mm256_set1_ps(T->ky[1]), g, _mm256_mul_ps(_mm256_set1_ps(T->ky[2]), b)));
            __m256 s = _mm256_sqrt_ps(_mm256_sqrt_ps(_mm256_max_ps(y, zero)));
            __m256 k = rcd_lut8(T->ootf, T->no, _mm256_mul_ps(s, _mm256_set1_ps((float)T->no)));
            r = _mm256_mul_ps(r, k), g = _mm256_mul_ps(g, k), b = _mm256_mul_ps(b, k);
        }
        __m256 c[3];
        for (int i = 0; i < 3; i++)
            c[i] = _mm256_fmadd_ps(mm[3 * i], r, _mm256_fmadd_ps(mm[3 * i + 1], g, _mm256_mul_ps(mm[3 * i + 2], b)));
        __m256 mx = _mm256_max_ps(_mm256_max_ps(c[0], c[1]), c[2]);
        __m256 k = rcd_lut8(T->tone, T->nt, _mm256_mul_ps(mx, ts));
        k = _mm256_blendv_ps(k, _mm256_div_ps(top, mx), _mm256_cmp_ps(mx, tmax, _CMP_GE_OQ));
        k = _mm256_blendv_ps(k, one, _mm256_cmp_ps(mx, zero, _CMP_LE_OQ));
        int32_t idx[3][8];
        for (int i = 0; i < 3; i++) {
            __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(c[i], k), zero), one);
            _mm256_storeu_si256((__m256i *)idx[i], _mm256_cvttps_epi32(_mm256_fmadd_ps(_mm256_sqrt_ps(v), es, half)));
        }
        for (int k2 = 0; k2 < 8; k2++)
            o[3 * k2] = T->enc[idx[0][k2]], o[3 * k2 + 1] = T->enc[idx[1][k2]], o[3 * k2 + 2] = T->enc[idx[2][k2]];
    }
    for (; x < w; x++, o += 3) rcd_tm_pixel(T, p + 3 * (cols ? cols[x] : x), o);
}

/* out (h, w, 3) from src's rows rows[y] (else y) and columns cols[x] (else x): a nearest-neighbour
 * downscale picked as it is mapped. */
int rcd_tonemap(const uint8_t *src, int64_t ss, const int32_t *rows, const int32_t *cols, uint8_t *out,
                int64_t h, int64_t w, const float *lin,
                const float *ky, const float *ootf, int64_t no, const float *m, const float *tone, int64_t nt,
                float tone_max, const uint8_t *enc, int64_t ne) {
    if (h < 0 || w < 0 || nt < 1 || ne < 2 || (ootf && no < 1) || !(tone_max > 0.0f)) return 1;
    rcd_tm T = {lin, ky, ootf, m, tone, enc, no, nt, ne, tone_max, tone[nt] * tone_max};
    for (int64_t y = 0; y < h; y++) rcd_tm_row8(&T, src + (rows ? rows[y] : y) * ss, cols, out + y * w * 3, w);
    return 0;
}
