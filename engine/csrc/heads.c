/* A frame's statistics algebra on a CPU: from the fill's [d | 1]ᵀ·X to the covariance of the maps,
 * and from that to the transform T (Router, Noise Decorrelation) and the AutoTune coefficients.
 *
 * engine/heads_np.py does the same in NumPy and engine/model.py in torch (the reference, tested
 * against both). Why a third: per frame it is about 150 operations on (L+1)×(L+1) matrices, run
 * right after the frame's passes have streamed tens of MB through the caches, where each NumPy
 * call costs ~10 µs; so the algebra took 1 ms a frame (live model, 960×540: 5 % of the backbone,
 * half of ND + AutoTune's budget). Here it is two calls of microseconds.
 * - rcd_gram_cov: the covariance of [L raw maps; noisy] from the fill's statistics;
 * - rcd_heads: Router, ND with Newton–Schulz iterated to convergence, AutoTune.
 * rcd_heads returns non-zero where heads_np's fallbacks apply (Newton–Schulz not converged, a map
 * without variance, anything not finite): the caller then runs the NumPy code, which has them.
 * Plain C, double precision; the float32 linear layers are summed in double and rounded to float
 * where the NumPy code holds float32 (the results agree to ~1e-7).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAXN 16     /* L + 1 ≤ 13 (a model has 4..12 levels): matrices live on the stack */
#define MAXC1 128   /* feature columns c1 + 1 for rcd_gram_cov's scratch row */
#define MAXZ 512    /* the heads' input vector: pooled features + 2L + 1 */

typedef double mat_t[MAXN][MAXN];

/* c = a·b for n×n matrices; c must not alias a or b */
static void matmul(int n, mat_t a, mat_t b, mat_t c) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int k = 0; k < n; k++) s += a[i][k] * b[k][j];
            c[i][j] = s;
        }
}

/* Covariance (l+1, l+1) of [raw maps; noisy] in 0..1 units over m samples (h·w·3), from
 * g (c1+1, k) = [d | 1]ᵀ·X (row stride k; column c1 is the ones column, columns c1+1.. the 12
 * noisy sub-pixels in 0..255), sq_noisy = Σ noisy² in 0..1 units, and the head a (12, l, c1+1):
 * raw map i at sub-pixel·colour s is a[s, i]·[d | 1]. engine/denoiser.py, _covariance, in NumPy. */
int rcd_gram_cov(const double *g, int64_t k, int64_t c1, const double *a, int64_t l, double sq_noisy, double m,
                 double *cov) {
    const int64_t f = c1 + 1, n = l + 1;
    if (l < 1 || n > MAXN || f > MAXC1 || k < f + 12) return 1;
    double prod[MAXN][MAXN] = {{0}}, total[MAXN] = {0}, ag[MAXC1];
    for (int64_t s = 0; s < 12; s++) {
        const double *as = a + s * l * f;  /* (l, c1+1) */
        for (int64_t i = 0; i < l; i++) {
            for (int64_t q = 0; q < f; q++) ag[q] = 0.0;
            for (int64_t p = 0; p < f; p++) {  /* ag = a_s[i]·G, G the (c1+1)² block of g */
                const double aip = as[i * f + p];
                for (int64_t q = 0; q < f; q++) ag[q] += aip * g[p * k + q];
            }
            for (int64_t j = i; j < l; j++) {  /* Σ raw_i raw_j: symmetric */
                double v = 0.0;
                for (int64_t q = 0; q < f; q++) v += ag[q] * as[j * f + q];
                prod[i][j] += v;
            }
            double cross = 0.0;  /* Σ raw_i · noisy of this sub-pixel·colour */
            for (int64_t p = 0; p < f; p++) cross += as[i * f + p] * g[p * k + f + s];
            prod[i][l] += cross / 255.0;
            total[i] += ag[c1];  /* a_s[i]·G's ones column: Σ raw_i */
        }
        total[l] += g[c1 * k + f + s] / 255.0;
    }
    prod[l][l] = sq_noisy;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            const double v = (prod[i][j] - total[i] * total[j] / m) / (m - 1.0 > 1.0 ? m - 1.0 : 1.0);
            cov[i * n + j] = cov[j * n + i] = v;
        }
    return 0;
}

typedef struct {  /* one model's heads (engine/native.py, Heads, keeps the arrays alive) */
    int64_t l, nz, la, sigma_feature;  /* levels; the heads' input length; routed levels; σ̂ input or not */
    const int64_t *active;             /* (la,) the routed levels */
    const double *levels;              /* (l,) 0..1 units */
    const float *router_w, *router_b;  /* (la², nz), (la²) */
    const float *auto_w, *auto_b;      /* (l, nz), (l) */
    double tau;                        /* AutoTune's softmax temperature */
    double ridge, tol, max_rescale;    /* engine/decorrelate.py's RIDGE, NS_TOL, MAX_RESCALE */
    int64_t max_iters, check_every;    /* its NS_MAX_ITERS, NS_CHECK_EVERY */
} heads_t;

/* Σ^(-1/2) of the SPD n×n matrix c by the coupled Newton–Schulz iteration on c / trace + ridge
 * (heads_np.inv_sqrt_newton_schulz); 0, or 1 where it did not converge (NumPy then decomposes). */
static int inv_sqrt_ns(const heads_t *h, int n, mat_t c, mat_t out) {
    double trace = 0.0;
    for (int i = 0; i < n; i++) trace += c[i][i];
    if (!(trace > 1e-30)) return 1;
    mat_t a, y, z, t, tmp, tmp2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            a[i][j] = y[i][j] = c[i][j] / trace + (i == j ? h->ridge / n : 0.0);
            z[i][j] = i == j;
        }
    double err = NAN;
    for (int64_t it = 1; it <= h->max_iters; it++) {
        matmul(n, z, y, tmp);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) t[i][j] = (i == j ? 1.5 : 0.0) - 0.5 * tmp[i][j];
        matmul(n, y, t, tmp);
        memcpy(y, tmp, sizeof(mat_t));
        matmul(n, t, z, tmp);
        memcpy(z, tmp, sizeof(mat_t));
        if (it % h->check_every == 0) {
            matmul(n, z, a, tmp);
            matmul(n, tmp, z, tmp2);
            err = 0.0;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) err = fmax(err, fabs(tmp2[i][j] - (i == j)));
            if (!(err >= h->tol)) break;
        }
    }
    if (!(err < 1e-4)) return 1;
    const double s = 1.0 / sqrt(trace);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) out[i][j] = z[i][j] * s;
    return 0;
}

/* ND for one frame (heads_np.transform): T (l, l), Ñ = T·raw with map i's std = levels[i]; the
 * zero level takes no part. 0, or non-zero where NumPy's fallbacks apply. */
static int nd_transform(const heads_t *h, mat_t cov, mat_t t) {
    int idx[MAXN], n = 0;
    for (int i = 0; i < h->l; i++)
        if (h->levels[i] > 0) idx[n++] = i;
    double d[MAXN], lv[MAXN];
    mat_t cn, p;
    for (int a = 0; a < n; a++) {
        lv[a] = h->levels[idx[a]];
        d[a] = lv[a] / sqrt(fmax(cov[idx[a]][idx[a]], 1e-30));  /* eq. 3 normalisation */
    }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) cn[a][b] = cov[idx[a]][idx[b]] * d[a] * d[b];
    if (inv_sqrt_ns(h, n, cn, p)) return 1;
    memset(t, 0, sizeof(mat_t));
    for (int a = 0; a < n; a++) {
        double var = 0.0;  /* (P Σ Pᵀ)_aa */
        for (int b = 0; b < n; b++)
            for (int c = 0; c < n; c++) var += p[a][b] * cn[b][c] * p[a][c];
        const double rescale = lv[a] / sqrt(fmax(var, 1e-30));
        if (!(rescale <= h->max_rescale)) return 2;  /* a singular Σ: NumPy keeps D */
        for (int b = 0; b < n; b++) {
            t[idx[a]][idx[b]] = rescale * p[a][b] * d[b];
            if (!isfinite(t[idx[a]][idx[b]])) return 2;
        }
    }
    return 0;
}

/* Parameter-free layer norm of x (n) into out (float32 values), as F.layer_norm with eps 1e-5. */
static void layer_norm(const float *x, int64_t n, float *out) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    const double inv = 1.0 / sqrt(var / (double)n + 1e-5);
    for (int64_t i = 0; i < n; i++) out[i] = (float)(((double)x[i] - mean) * inv);
}

/* One linear layer's output o = w·z + b, summed in double, rounded to float. */
static float linear_row(const float *w, const float *z, int64_t nz, float b) {
    double s = b;
    for (int64_t i = 0; i < nz; i++) s += (double)w[i] * z[i];
    return (float)s;
}

/* The heads' input: [layer-normed features | log std of each map | its correlation with the
 * noisy frame (given) | log(1 + σ̂)] from cov (l+1)², as heads_np (_stats) builds it. */
static void heads_input(const heads_t *h, mat_t cov, const float *ln, int64_t f, const double *corr, double sigma,
                        float *z) {
    const int64_t l = h->l;
    memcpy(z, ln, (size_t)f * sizeof(float));
    for (int64_t i = 0; i < l; i++) {
        z[f + i] = (float)(0.5 * log(fmax(cov[i][i], 1e-12)));
        z[f + l + i] = (float)corr[i];
    }
    if (h->sigma_feature) z[f + 2 * l] = (float)log1p(fmax(sigma, 0.0));
}

/* Router, ND and AutoTune for one frame (heads_np.StatsHeads.__call__): cov_in (l+1)² float64 of
 * [raw maps; noisy], feats (nz − 2l − sigma_feature) pooled features, sigma the input's noise
 * estimate (8-bit units) → t (l, l) and coefficients (l) summing to 1. 0, or non-zero: run NumPy. */
int rcd_heads(const heads_t *h, const double *cov_in, const float *feats, double sigma, double *t_out,
              double *auto_out) {
    const int64_t l = h->l, n = l + 1, f = h->nz - 2 * l - (h->sigma_feature ? 1 : 0), la = h->la;
    if (l < 1 || n > MAXN || h->nz > MAXZ || f < 1) return 3;
    mat_t cov, g, gc, cov2, p;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) cov[i][j] = cov_in[i * n + j];
    float ln[MAXZ], z[MAXZ];
    double corr[MAXN];
    layer_norm(feats, f, ln);
    const double var_n = fmax(cov[l][l], 1e-12);
    for (int64_t i = 0; i < l; i++) corr[i] = cov[i][l] / sqrt(fmax(cov[i][i], 1e-12) * var_n);
    heads_input(h, cov, ln, f, corr, sigma, z);
    for (int64_t i = 0; i < n; i++)  /* G = I + the Router's la × la block on the routed levels */
        for (int64_t j = 0; j < n; j++) g[i][j] = i == j;
    for (int64_t a = 0; a < la; a++)
        for (int64_t b = 0; b < la; b++)
            g[h->active[a]][h->active[b]] += linear_row(h->router_w + (a * la + b) * h->nz, z, h->nz, h->router_b[a * la + b]);
    matmul((int)n, g, cov, gc);  /* statistics of [G·raw; noisy]: G Σ Gᵀ */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < n; k++) s += gc[i][k] * g[j][k];
            cov2[i][j] = s;
        }
    const int rc = nd_transform(h, cov2, p);  /* on the first l rows and columns */
    if (rc) return rc;
    const double sd_n = sqrt(fmax(cov2[l][l], 1e-12));
    for (int64_t i = 0; i < l; i++) {  /* each decorrelated map's correlation with the noisy frame */
        double s = 0.0;
        for (int64_t j = 0; j < l; j++) s += p[i][j] * cov2[j][l];
        corr[i] = s / (fmax(h->levels[i], 1e-6) * sd_n);  /* the zero level's is 0/ε = 0 */
    }
    heads_input(h, cov2, ln, f, corr, sigma, z);
    double logit[MAXN], top = -INFINITY, sum = 0.0;
    for (int64_t i = 0; i < l; i++) {
        logit[i] = (double)(linear_row(h->auto_w + i * h->nz, z, h->nz, h->auto_b[i]) / (float)h->tau);
        top = fmax(top, logit[i]);
    }
    for (int64_t i = 0; i < l; i++) sum += (auto_out[i] = exp(logit[i] - top));
    for (int64_t i = 0; i < l; i++) auto_out[i] /= sum;
    for (int64_t i = 0; i < l; i++)  /* T = P · G[:l, :l] */
        for (int64_t j = 0; j < l; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < l; k++) s += p[i][k] * g[k][j];
            t_out[i * l + j] = s;
        }
    for (int64_t i = 0; i < l; i++)
        if (!isfinite(auto_out[i])) return 2;
    return 0;
}
