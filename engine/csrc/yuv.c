/* The decoder's YUV → RGB conversion for the formats swscale converts slowly: planar YUV whose
 * chroma is not subsampled (4:4:4) or whose samples are wider than 8 bits (ProRes, HEVC Main 10,
 * 4:4:4 H.264). swscale takes 5–8 ms a 720p frame for them on one core of the development machine
 * against 0.5 ms for 8-bit 4:2:0, whose hand-written path it keeps (player/decode.py chooses).
 *
 * Each output byte is the float32 value a·Y + b·U + c·V + d (player/colour.py makes the
 * coefficients from the file's matrix, range and bit depth), clamped to 0..255 and rounded to
 * nearest: within float32 rounding of the exact conversion, and without the ordered dither swscale
 * adds when it narrows 10-bit samples (a fixed 8×8 pattern the denoiser would take for picture).
 * Subsampled chroma (4:2:2, 4:2:0) is repeated over the pixels it covers, as swscale's 8-bit path
 * does. Samples wider than 8 bits are little-endian uint16. Chroma is planar (U and V planes) or
 * semi-planar (one plane of interleaved pairs: NV12, NV21, P010 …, what camera pipelines and raw
 * dumps hold; swscale took 5.9 ms a 720p NV12 frame); an MSB-aligned format's shift (P010's 6 bits)
 * is in the coefficients. Packed 8-bit 4:2:2 (YUYV, UYVY, YVYU: webcams and MIPI YUV sensors; 6.1
 * ms in swscale) is the same arithmetic on every other byte for Y and every fourth for U and V
 * (ystep 2, cstep 4). One thread: the decoder's.
 *
 * 16 pixels at a time in AVX2: their samples to float, the chroma terms once per chroma sample,
 * three FMAs per pixel and channel, then R, G and B bytes interleaved with byte shuffles; the
 * row's last w mod 16 pixels by the same arithmetic one at a time (the same bytes). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* k: {a, c_r, b_g, c_g, b_b, d_r, d_g, d_b}: R = a·Y + c_r·V + d_r, G = a·Y + b_g·U + c_g·V + d_g,
 * B = a·Y + b_b·U + d_b (the matrices' zeros left out). */
enum { K_Y, K_RV, K_GU, K_GV, K_BU, K_DR, K_DG, K_DB };

static inline float sample(const uint8_t *row, int depth, int64_t x) {
    return depth == 8 ? (float)row[x] : (float)((const uint16_t *)row)[x];
}

/* One pixel's R, G and B, unclamped: the tails' arithmetic (the vector loops' lane for lane). */
static inline void pixel_rgb(float yy, float u, float v, const float *k, float rgb[3]) {
    rgb[0] = fmaf(yy, k[K_Y], fmaf(v, k[K_RV], k[K_DR]));
    rgb[1] = fmaf(yy, k[K_Y], fmaf(u, k[K_GU], fmaf(v, k[K_GV], k[K_DG])));
    rgb[2] = fmaf(yy, k[K_Y], fmaf(u, k[K_BU], k[K_DB]));
}

static inline uint8_t to_byte(float v) {
    v = fminf(fmaxf(v, 0.0f), 255.0f);
    return (uint8_t)lrintf(v);  /* round to nearest even, as _mm256_cvtps_epi32 does */
}

/* 8 samples from x on, as floats. */
static inline __m256 load8(const uint8_t *row, int depth, int64_t x) {
    if (depth == 8) return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + x))));
    return _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + x))));
}

/* The 8 interleaved chroma pairs from pair i on (a semi-planar row), as U and V floats; vfirst:
 * V comes first in each pair (NV21). A pair is one 16- or 32-bit lane: its low half, its high half. */
static inline void load8_pairs(const uint8_t *row, int depth, int64_t i, int vfirst, __m256 *u, __m256 *v) {
    __m256i lo, hi;
    if (depth == 8) {
        const __m256i p = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * i)));
        lo = _mm256_and_si256(p, _mm256_set1_epi32(0xFF)), hi = _mm256_srli_epi32(p, 8);
    } else {
        const __m256i p = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + 2 * i));
        lo = _mm256_and_si256(p, _mm256_set1_epi32(0xFFFF)), hi = _mm256_srli_epi32(p, 16);
    }
    *u = _mm256_cvtepi32_ps(vfirst ? hi : lo), *v = _mm256_cvtepi32_ps(vfirst ? lo : hi);
}

/* The 8 chroma samples of U and V from sample i on: planar rows, or one semi-planar row (cstep 2). */
static inline void load8_uv(const uint8_t *ru, const uint8_t *rv, int depth, int cstep, int64_t i, __m256 *u, __m256 *v) {
    if (cstep == 1) {
        *u = load8(ru, depth, i), *v = load8(rv, depth, i);
    } else {
        load8_pairs(rv < ru ? rv : ru, depth, i, rv < ru, u, v);
    }
}

/* 16 values (two vectors of 8, clamped to 0..255) as 16 bytes in order. */
static inline __m128i bytes16(__m256 lo, __m256 hi) {
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
    const __m256i a = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(lo, zero), top));
    const __m256i b = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(hi, zero), top));
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);  /* 16 int16 in order */
    return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

/* 16 pixels of packed 4:2:2 from pixel x on: 8 groups of 4 bytes (two Y, one U, one V), whose byte
 * offsets within a group are oy (and oy + 2), ou, ov. R, G and B of the 16, in order. */
static inline void packed16(const uint8_t *g, int64_t x, __m256i oy, __m256i oy2, __m256i ou, __m256i ov,
                            const float *k, __m128i *r, __m128i *gg, __m128i *b) {
    const __m256i p = _mm256_loadu_si256((const __m256i *)(g + 2 * x)), ff = _mm256_set1_epi32(0xFF);
    const __m256 ye = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(p, oy), ff));   /* pixels x, x+2 … */
    const __m256 yo = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(p, oy2), ff));  /* pixels x+1, x+3 … */
    const __m256 u = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(p, ou), ff));
    const __m256 v = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(p, ov), ff));
    const __m256 ky = _mm256_set1_ps(k[K_Y]);
    const __m256 c[3] = {_mm256_fmadd_ps(v, _mm256_set1_ps(k[K_RV]), _mm256_set1_ps(k[K_DR])),
                         _mm256_fmadd_ps(u, _mm256_set1_ps(k[K_GU]), _mm256_fmadd_ps(v, _mm256_set1_ps(k[K_GV]), _mm256_set1_ps(k[K_DG]))),
                         _mm256_fmadd_ps(u, _mm256_set1_ps(k[K_BU]), _mm256_set1_ps(k[K_DB]))};
    __m128i *o[3] = {r, gg, b};
    for (int ch = 0; ch < 3; ch++) {
        const __m256 e = _mm256_fmadd_ps(ye, ky, c[ch]), d = _mm256_fmadd_ps(yo, ky, c[ch]);
        const __m256 lo = _mm256_unpacklo_ps(e, d), hi = _mm256_unpackhi_ps(e, d);  /* pixel pairs, by lane */
        *o[ch] = bytes16(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
    }
}

/* 16 pixels of planar or semi-planar YUV from pixel x on, unclamped: R, G and B of pixels x..x+7 and
 * x+8..x+15 as out[0], out[1] (R), out[2], out[3] (G), out[4], out[5] (B). */
static inline __attribute__((always_inline)) void planar16(const uint8_t *ry, const uint8_t *ru, const uint8_t *rv,
                                                           int depth, int cstep, int xshift, int64_t x, const float *k,
                                                           __m256 out[6]) {
    const __m256 ky = _mm256_set1_ps(k[K_Y]), krv = _mm256_set1_ps(k[K_RV]), kgu = _mm256_set1_ps(k[K_GU]),
                 kgv = _mm256_set1_ps(k[K_GV]), kbu = _mm256_set1_ps(k[K_BU]), kdr = _mm256_set1_ps(k[K_DR]),
                 kdg = _mm256_set1_ps(k[K_DG]), kdb = _mm256_set1_ps(k[K_DB]);
    __m256 cr[2], cg[2], cb[2];  /* the chroma terms of pixels x..x+7 and x+8..x+15 */
    if (xshift == 0) {
        for (int half = 0; half < 2; half++) {
            __m256 u, v;
            load8_uv(ru, rv, depth, cstep, x + 8 * half, &u, &v);
            cr[half] = _mm256_fmadd_ps(v, krv, kdr);
            cg[half] = _mm256_fmadd_ps(u, kgu, _mm256_fmadd_ps(v, kgv, kdg));
            cb[half] = _mm256_fmadd_ps(u, kbu, kdb);
        }
    } else {  /* 4:2:x chroma: sample i of 8 to pixels 2i and 2i + 1 */
        const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), dup_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
        __m256 u, v;
        load8_uv(ru, rv, depth, cstep, x / 2, &u, &v);
        const __m256 r8 = _mm256_fmadd_ps(v, krv, kdr), g8 = _mm256_fmadd_ps(u, kgu, _mm256_fmadd_ps(v, kgv, kdg)),
                     b8 = _mm256_fmadd_ps(u, kbu, kdb);
        cr[0] = _mm256_permutevar8x32_ps(r8, dup_lo), cr[1] = _mm256_permutevar8x32_ps(r8, dup_hi);
        cg[0] = _mm256_permutevar8x32_ps(g8, dup_lo), cg[1] = _mm256_permutevar8x32_ps(g8, dup_hi);
        cb[0] = _mm256_permutevar8x32_ps(b8, dup_lo), cb[1] = _mm256_permutevar8x32_ps(b8, dup_hi);
    }
    const __m256 y0 = load8(ry, depth, x), y1 = load8(ry, depth, x + 8);
    out[0] = _mm256_fmadd_ps(y0, ky, cr[0]), out[1] = _mm256_fmadd_ps(y1, ky, cr[1]);
    out[2] = _mm256_fmadd_ps(y0, ky, cg[0]), out[3] = _mm256_fmadd_ps(y1, ky, cg[1]);
    out[4] = _mm256_fmadd_ps(y0, ky, cb[0]), out[5] = _mm256_fmadd_ps(y1, ky, cb[1]);
}

int rcd_yuv_rgb(const uint8_t *py, int64_t sy, const uint8_t *pu, int64_t su, const uint8_t *pv, int64_t sv,
                int64_t h, int64_t w, int xshift, int yshift, int depth, int ystep, int cstep, const float *k,
                uint8_t *out) {
    if (h < 0 || w < 0 || xshift < 0 || xshift > 1 || yshift < 0 || yshift > 1 || depth < 8 || depth > 16) return 1;
    if (cstep < 1 || cstep > 4 || cstep == 3 || ystep < 1 || ystep > 2 || (ystep == 2) != (cstep == 4)) return 1;
    if (cstep == 2 && pu + (depth == 8 ? 1 : 2) != pv && pv + (depth == 8 ? 1 : 2) != pu) return 1;
    /* packed: 8-bit 4:2:2, the three pointers within one group of 4 bytes, Y's two at o and o + 2 */
    const uint8_t *group = py < pu ? (py < pv ? py : pv) : (pu < pv ? pu : pv);
    if (ystep == 2 && (depth != 8 || xshift != 1 || yshift != 0 || py - group > 1 || pu - group > 3 || pv - group > 3)) return 1;
    const __m256i oy = _mm256_set1_epi32(8 * (int)(py - group)), oy2 = _mm256_set1_epi32(8 * (int)(py - group + 2)),
                  ou = _mm256_set1_epi32(8 * (int)(pu - group)), ov = _mm256_set1_epi32(8 * (int)(pv - group));
    /* The shuffles that interleave 16 R, G and B bytes into 48: output byte j of block q is
     * channel j mod 3 of pixel j / 3; each source's mask picks its bytes and zeroes the rest. */
    uint8_t masks[3][3][16];
    for (int q = 0; q < 3; q++)
        for (int j = 0; j < 16; j++)
            for (int c = 0; c < 3; c++) masks[q][c][j] = (16 * q + j) % 3 == c ? (uint8_t)((16 * q + j) / 3) : 0x80;
    __m128i m[3][3];
    for (int q = 0; q < 3; q++)
        for (int c = 0; c < 3; c++) m[q][c] = _mm_loadu_si128((const __m128i *)masks[q][c]);
    const int64_t fast = w - w % 16;
    for (int64_t y = 0; y < h; y++) {
        const uint8_t *ry = py + y * sy, *ru = pu + (y >> yshift) * su, *rv = pv + (y >> yshift) * sv;
        uint8_t *o = out + y * w * 3;
        for (int64_t x = 0; ystep == 2 && x < fast; x += 16) {
            __m128i r, g, b;
            packed16(group + y * sy, x, oy, oy2, ou, ov, k, &r, &g, &b);
            for (int q = 0; q < 3; q++) {
                const __m128i v = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(r, m[q][0]), _mm_shuffle_epi8(g, m[q][1])),
                                               _mm_shuffle_epi8(b, m[q][2]));
                _mm_storeu_si128((__m128i *)(o + 3 * x + 16 * q), v);
            }
        }
        for (int64_t x = 0; ystep == 1 && x < fast; x += 16) {
            __m256 c[6];
            planar16(ry, ru, rv, depth, cstep, xshift, x, k, c);
            const __m128i r = bytes16(c[0], c[1]), g = bytes16(c[2], c[3]), b = bytes16(c[4], c[5]);
            for (int q = 0; q < 3; q++) {
                const __m128i v = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(r, m[q][0]), _mm_shuffle_epi8(g, m[q][1])),
                                               _mm_shuffle_epi8(b, m[q][2]));
                _mm_storeu_si128((__m128i *)(o + 3 * x + 16 * q), v);
            }
        }
        for (int64_t x = fast; x < w; x++) {
            const int64_t c = (x >> xshift) * cstep;
            const float yy = sample(ry, depth, x * ystep), u = sample(ru, depth, c), v = sample(rv, depth, c);
            float p[3];
            pixel_rgb(yy, u, v, k, p);
            for (int c = 0; c < 3; c++) o[3 * x + c] = to_byte(p[c]);
        }
    }
    return 0;
}

/* The same conversion unrounded: float32 R, G, B in 8-bit units, clamped to 0..255 and not rounded,
 * for renders that keep a deeper source's bits (player/colour.py, to_rgb_fine). Planar and
 * semi-planar YUV (ystep 1); 16 pixels at a time with rcd_yuv_rgb's arithmetic, so that rounding
 * it gives rcd_yuv_rgb's bytes, which out8 (if not NULL) receives in the same pass. */
static inline float clamp255(float v) { return fminf(fmaxf(v, 0.0f), 255.0f); }

int rcd_yuv_rgbf(const uint8_t *py, int64_t sy, const uint8_t *pu, int64_t su, const uint8_t *pv, int64_t sv,
                 int64_t h, int64_t w, int xshift, int yshift, int depth, int cstep, const float *k, float *out,
                 uint8_t *out8) {
    if (h < 0 || w < 0 || xshift < 0 || xshift > 1 || yshift < 0 || yshift > 1 || depth < 8 || depth > 16) return 1;
    if (cstep < 1 || cstep > 2) return 1;
    if (cstep == 2 && pu + (depth == 8 ? 1 : 2) != pv && pv + (depth == 8 ? 1 : 2) != pu) return 1;
    const int64_t fast = w - w % 16;
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
    for (int64_t y = 0; y < h; y++) {
        const uint8_t *ry = py + y * sy, *ru = pu + (y >> yshift) * su, *rv = pv + (y >> yshift) * sv;
        float *o = out + y * w * 3;
        uint8_t *o8 = out8 ? out8 + y * w * 3 : NULL;
        for (int64_t x = 0; x < fast; x += 16) {
            __m256 c[6];
            float t[6][8];  /* interleaved through the stack: 16 pixels' 48 floats */
            planar16(ry, ru, rv, depth, cstep, xshift, x, k, c);
            for (int i = 0; i < 6; i++) _mm256_storeu_ps(t[i], _mm256_min_ps(_mm256_max_ps(c[i], zero), top));
            for (int i = 0; i < 16; i++) {
                o[3 * (x + i)] = t[i / 8][i % 8], o[3 * (x + i) + 1] = t[2 + i / 8][i % 8], o[3 * (x + i) + 2] = t[4 + i / 8][i % 8];
            }
            if (o8) {  /* and rounded, in the same pass: rcd_yuv_rgb's bytes */
                const __m128i r = bytes16(c[0], c[1]), g = bytes16(c[2], c[3]), b = bytes16(c[4], c[5]);
                uint8_t tr[16], tg[16], tb[16];
                _mm_storeu_si128((__m128i *)tr, r), _mm_storeu_si128((__m128i *)tg, g), _mm_storeu_si128((__m128i *)tb, b);
                for (int i = 0; i < 16; i++) o8[3 * (x + i)] = tr[i], o8[3 * (x + i) + 1] = tg[i], o8[3 * (x + i) + 2] = tb[i];
            }
        }
        for (int64_t x = fast; x < w; x++) {
            const int64_t c = (x >> xshift) * cstep;
            const float yy = sample(ry, depth, x), u = sample(ru, depth, c), v = sample(rv, depth, c);
            float p[3];
            pixel_rgb(yy, u, v, k, p);
            for (int c = 0; c < 3; c++) {
                o[3 * x + c] = clamp255(p[c]);
                if (o8) o8[3 * x + c] = to_byte(p[c]);
            }
        }
    }
    return 0;
}

/* The way back for renders that keep a deeper source's bits: float32 RGB (h, w, 3) in 8-bit units →
 * planar or semi-planar YUV of 1- or 2-byte samples (player/colour.py, from_rgb, whose NumPy
 * arithmetic this is, in the same order; about 22 ms a 720p frame there). k: {Kr·ys, Kg·ys, Kb·ys,
 * y0, Kr, Kg, Kb, cu, cv, c0}: Y = R·k0 + G·k1 + B·k2 + y0; each chroma sample from the mean of the
 * sy × sx pixels it covers (an odd edge's block repeats its last pixel, as edge padding does),
 * U = (B̄ − Ȳ)·cu + c0, V = (R̄ − Ȳ)·cv + c0 with Ȳ = Kr·R̄ + Kg·Ḡ + Kb·B̄. Samples are rounded to
 * nearest even, clamped to 0..top and shifted up by `shift` (P010's 6). cstep 2: U and V
 * interleaved in one plane (pu and pv one sample apart). 0 = done. */
static inline void put_sample(uint8_t *row, int size, int64_t i, float v, float top, int shift) {
    v = rintf(fminf(fmaxf(v, 0.0f), top));
    if (size == 1) row[i] = (uint8_t)v;
    else ((uint16_t *)row)[i] = (uint16_t)((uint32_t)v << shift);
}

int rcd_rgbf_yuv(const float *rgb, int64_t h, int64_t w, const float *k, int sy, int sx, int size, int shift,
                 float top, uint8_t *py, int64_t spy, uint8_t *pu, int64_t spu, uint8_t *pv, int64_t spv, int cstep) {
    if (h < 1 || w < 1 || sy < 1 || sy > 2 || sx < 1 || sx > 2 || size < 1 || size > 2 || cstep < 1 || cstep > 2 ||
        shift < 0 || shift > 8)
        return 1;
    for (int64_t y = 0; y < h; y++) {
        const float *p = rgb + y * w * 3;
        uint8_t *row = py + y * spy;
        for (int64_t x = 0; x < w; x++) {
            float v = p[3 * x] * k[0];
            v += p[3 * x + 1] * k[1];
            v += p[3 * x + 2] * k[2];
            put_sample(row, size, x, v + k[3], top, shift);
        }
    }
    const int64_t ch = (h + sy - 1) / sy, cw = (w + sx - 1) / sx;
    const float inv = 1.0f / (float)(sy * sx);
    for (int64_t cy = 0; cy < ch; cy++) {
        uint8_t *ru = pu + cy * spu, *rv = pv + cy * spv;
        for (int64_t cx = 0; cx < cw; cx++) {
            float s[3] = {0.0f, 0.0f, 0.0f};
            for (int i = 0; i < sy; i++)
                for (int j = 0; j < sx; j++) {
                    const int64_t yy = cy * sy + i < h ? cy * sy + i : h - 1, xx = cx * sx + j < w ? cx * sx + j : w - 1;
                    const float *q = rgb + (yy * w + xx) * 3;
                    s[0] += q[0], s[1] += q[1], s[2] += q[2];
                }
            const float r = s[0] * inv, g = s[1] * inv, b = s[2] * inv;
            const float yc = r * k[4] + g * k[5] + b * k[6];
            put_sample(ru, size, cx * cstep, (b - yc) * k[7] + k[9], top, shift);
            put_sample(rv, size, cx * cstep, (r - yc) * k[8] + k[9], top, shift);
        }
    }
    return 0;
}
