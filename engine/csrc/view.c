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
