/* One precision of the fused chain step; included twice by chain.c (REAL = double, then float).
 *
 * For each run r, entirely in a per-run scratch area (a few KB for the small nets we sweep, so the
 * run stays in L1/L2 from its forward pass to its last gradient):
 *
 *   H_0 = Xᵀ (d_0 × n),  Z_k = W_k H_k,  H_{k+1} = σ(Z_k) and S_{k+1} = σ′(Z_k) (hidden layers),
 *   Fᵀ = Z_{L−1},  obj = c Σ ℓ,  D_{L−1} = ∂obj/∂Fᵀ,
 *   G_k = D_k H_kᵀ,  D_{k−1} = S_k ⊙ (W_kᵀ D_k)    (k = L−1 … 0),
 *
 * with examples as columns (n contiguous), so every inner loop runs over n and vectorises, the
 * transcendental functions through glibc's vector math library (libmvec) where the compiler finds it.
 * σ and σ′ are computed together in the forward pass (GELU: one erfc and one exp per element).
 */

static inline void FN(activate)(int act, REAL eps2, int64_t m, REAL* restrict a, REAL* restrict s) {
    /* in: a holds Z; out: a = σ(Z), s = σ′(Z) (elementwise, m entries) */
    if (act == ACT_RELU) {
#pragma omp simd
        for (int64_t i = 0; i < m; i++) {
            REAL z = a[i];
            s[i] = (z <= (REAL)0) ? (REAL)0 : (REAL)1; /* relu′(0) = 0, NaN passes (threshold_backward) */
            a[i] = (z < (REAL)0) ? (REAL)0 : z;        /* NaN stays NaN (clamp_min) */
        }
    } else if (act == ACT_GELU) {
#pragma omp simd
        for (int64_t i = 0; i < m; i++) {
            REAL z = a[i];
            REAL p = (REAL)0.5 * ERFC(-z * (REAL)M_SQRT1_2); /* Φ(z), no cancellation for z ≪ 0 */
            s[i] = p + z * (REAL)INV_SQRT_2PI * EXP((REAL)-0.5 * z * z);
            a[i] = z * p;
        }
    } else if (act == ACT_SMOOTH_RELU) {
#pragma omp simd
        for (int64_t i = 0; i < m; i++) {
            REAL z = a[i];
            REAL t = z / eps2;
            REAL g = (REAL)1 / ((REAL)1 + EXP(-t)); /* sigmoid(z/ε²) */
            s[i] = g + t * g * ((REAL)1 - g);
            a[i] = z * g;
        }
    } else if (act == ACT_TANH) {
#pragma omp simd
        for (int64_t i = 0; i < m; i++) {
            REAL h = TANH(a[i]);
            s[i] = (REAL)1 - h * h;
            a[i] = h;
        }
    } else { /* ACT_NONE */
        for (int64_t i = 0; i < m; i++) s[i] = (REAL)1;
    }
}

/* Z[:, t0:t0+B] = W H[:, t0:t0+B] for one block of B examples: the B sums accumulate in registers over
 * the (short) inner dimension, one store per output instead of one load and store per term. */
static inline void FN(mm_block)(int64_t cols, int64_t n, int64_t t0, const int B, const REAL* restrict w,
                                const REAL* restrict H, REAL* restrict z) {
    REAL acc[16];
#pragma omp simd
    for (int u = 0; u < B; u++) acc[u] = w[0] * H[t0 + u];
    for (int64_t j = 1; j < cols; j++) {
        const REAL wj = w[j];
        const REAL* restrict h = H + j * n + t0;
#pragma omp simd
        for (int u = 0; u < B; u++) acc[u] += wj * h[u];
    }
#pragma omp simd
    for (int u = 0; u < B; u++) z[t0 + u] = acc[u];
}

/* Z (rows × n) = W (rows × cols) H (cols × n): blocks of 16 examples, then of 8, then one at a time */
static inline void FN(matmul)(int64_t rows, int64_t cols, int64_t n, const REAL* restrict W,
                              const REAL* restrict H, REAL* restrict Z) {
    for (int64_t i = 0; i < rows; i++) {
        REAL* restrict z = Z + i * n;
        const REAL* restrict w = W + i * cols;
        int64_t t = 0;
        for (; t + 16 <= n; t += 16) FN(mm_block)(cols, n, t, 16, w, H, z);
        for (; t + 8 <= n; t += 8) FN(mm_block)(cols, n, t, 8, w, H, z);
        for (; t < n; t++) FN(mm_block)(cols, n, t, 1, w, H, z);
    }
}

/* G (rows × cols) = D (rows × n) Hᵀ (n × cols): for each row of D, four columns of G at a time, each
 * with 8 partial sums over the examples in registers (one load of D per block for four products),
 * summed at the end; the examples past the last block of 8 one at a time. */
static inline void FN(outer)(int64_t rows, int64_t cols, int64_t n, const REAL* restrict D,
                             const REAL* restrict H, REAL* restrict G) {
    const int64_t nb = n - n % 8;
    for (int64_t i = 0; i < rows; i++) {
        const REAL* restrict d = D + i * n;
        int64_t j = 0;
        for (; j + 4 <= cols; j += 4) {
            const REAL* restrict h0 = H + j * n;
            const REAL* restrict h1 = h0 + n;
            const REAL* restrict h2 = h1 + n;
            const REAL* restrict h3 = h2 + n;
            REAL a0[8] = {0}, a1[8] = {0}, a2[8] = {0}, a3[8] = {0};
            for (int64_t t0 = 0; t0 < nb; t0 += 8) {
#pragma omp simd
                for (int u = 0; u < 8; u++) {
                    const REAL dv = d[t0 + u];
                    a0[u] += dv * h0[t0 + u];
                    a1[u] += dv * h1[t0 + u];
                    a2[u] += dv * h2[t0 + u];
                    a3[u] += dv * h3[t0 + u];
                }
            }
            REAL s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int u = 0; u < 8; u++) { s0 += a0[u]; s1 += a1[u]; s2 += a2[u]; s3 += a3[u]; }
            for (int64_t t = nb; t < n; t++) {
                s0 += d[t] * h0[t]; s1 += d[t] * h1[t]; s2 += d[t] * h2[t]; s3 += d[t] * h3[t];
            }
            G[i * cols + j] = s0;
            G[i * cols + j + 1] = s1;
            G[i * cols + j + 2] = s2;
            G[i * cols + j + 3] = s3;
        }
        for (; j < cols; j++) {
            const REAL* restrict h = H + j * n;
            REAL acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int64_t t = 0; t < n; t++) acc += d[t] * h[t];
            G[i * cols + j] = acc;
        }
    }
}

/* P (cols × n) = S ⊙ (Wᵀ D),  W (rows × cols), D (rows × n): Wᵀ gathered per column (at most 16 × 16
 * entries), then the blocked product of matmul and the elementwise factor S */
static inline void FN(back)(int64_t rows, int64_t cols, int64_t n, const REAL* restrict W,
                            const REAL* restrict D, const REAL* restrict S, REAL* restrict P) {
    REAL wt[64];
    for (int64_t j = 0; j < cols; j++) {
        REAL* restrict p = P + j * n;
        const REAL* restrict s = S + j * n;
        const REAL* restrict w = wt;
        if (rows <= 64) {
            for (int64_t i = 0; i < rows; i++) wt[i] = W[i * cols + j];
        }
        int64_t t = 0;
        if (rows <= 64) {
            for (; t + 16 <= n; t += 16) FN(mm_block)(rows, n, t, 16, w, D, p);
            for (; t + 8 <= n; t += 8) FN(mm_block)(rows, n, t, 8, w, D, p);
            for (; t < n; t++) FN(mm_block)(rows, n, t, 1, w, D, p);
        } else {
            for (; t < n; t++) {
                REAL acc = 0;
                for (int64_t i = 0; i < rows; i++) acc += W[i * cols + j] * D[i * n + t];
                p[t] = acc;
            }
        }
#pragma omp simd
        for (int64_t u = 0; u < n; u++) p[u] *= s[u];
    }
}

/* obj = c Σ ℓ and D = ∂obj/∂Fᵀ for outputs F (dout × n). */
static inline REAL FN(loss)(int loss, REAL c, int64_t dout, int64_t n, const REAL* restrict F,
                            const REAL* restrict target, const int64_t* restrict label, REAL* restrict D) {
    REAL total = 0;
    if (loss == LOSS_SQUARE) { /* ℓ = Σ_o (f_o − y_o)², no ½; target (n × dout) */
        for (int64_t o = 0; o < dout; o++) {
            const REAL* restrict f = F + o * n;
            REAL* restrict d = D + o * n;
            REAL acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int64_t t = 0; t < n; t++) {
                REAL e = f[t] - target[t * dout + o];
                acc += e * e;
                d[t] = (REAL)2 * c * e;
            }
            total += acc;
        }
    } else if (loss == LOSS_EXP) { /* one output, y ∈ {−1, +1}: ℓ = e^{−y f} */
        REAL acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t t = 0; t < n; t++) {
            REAL y = target[t];
            REAL e = EXP(-y * F[t]);
            acc += e;
            D[t] = -c * y * e;
        }
        total = acc;
    } else if (loss == LOSS_LOGISTIC) { /* ℓ = log(1 + e^{−m}), m = y f, stably; ℓ′ = −σ(−m) */
        REAL acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t t = 0; t < n; t++) {
            REAL y = target[t];
            REAL m = y * F[t];
            REAL e = EXP(-FABS(m));
            acc += ((m < (REAL)0) ? -m : (REAL)0) + LOG1P(e);
            REAL sneg = (m >= (REAL)0) ? e / ((REAL)1 + e) : (REAL)1 / ((REAL)1 + e);
            D[t] = -c * y * sneg;
        }
        total = acc;
    } else { /* LOSS_CE: ℓ = logsumexp_o f_o − f_y; ∂ = softmax − onehot */
        for (int64_t t = 0; t < n; t++) {
            REAL mx = F[t];
            for (int64_t o = 1; o < dout; o++) mx = (F[o * n + t] > mx || F[o * n + t] != F[o * n + t]) ? F[o * n + t] : mx;
            REAL se = 0;
            for (int64_t o = 0; o < dout; o++) {
                REAL e = EXP(F[o * n + t] - mx);
                D[o * n + t] = e;
                se += e;
            }
            total += mx + LOG(se) - F[label[t] * n + t];
            REAL inv = c / se;
            for (int64_t o = 0; o < dout; o++) D[o * n + t] *= inv;
            D[label[t] * n + t] -= c;
        }
    }
    return c * total;
}

int FN(chain_step)(int64_t R, int64_t L, const int64_t* dims, int64_t n, const REAL* XT,
                   const REAL* const* W, REAL* const* G, const REAL* target, const int64_t* label,
                   int loss, double c_in, int act, double eps, REAL* obj) {
    const REAL c = (REAL)c_in, eps2 = (REAL)(eps * eps);
    int64_t maxw = 0, hidden = 0;
    for (int64_t k = 0; k <= L; k++) maxw = dims[k] > maxw ? dims[k] : maxw;
    for (int64_t k = 1; k < L; k++) hidden += dims[k];
    /* scratch: H and S of every hidden layer, two D buffers */
    REAL* buf = (REAL*)malloc(sizeof(REAL) * (size_t)((2 * hidden + 2 * maxw) * n));
    if (!buf) return 1;
    REAL** H = (REAL**)malloc(sizeof(REAL*) * (size_t)(2 * (L + 1)));
    if (!H) { free(buf); return 1; }
    REAL** S = H + (L + 1);
    REAL* p = buf;
    H[0] = (REAL*)XT;
    S[0] = 0;
    for (int64_t k = 1; k < L; k++) { H[k] = p; p += dims[k] * n; S[k] = p; p += dims[k] * n; }
    REAL* D0 = p; p += maxw * n;
    REAL* D1 = p;

    for (int64_t r = 0; r < R; r++) {
        /* forward: the last layer writes Fᵀ into D1 (read by the loss, then overwritten) */
        for (int64_t k = 0; k < L; k++) {
            const REAL* Wk = W[k] + r * dims[k + 1] * dims[k];
            REAL* Z = (k < L - 1) ? H[k + 1] : D1;
            FN(matmul)(dims[k + 1], dims[k], n, Wk, H[k], Z);
            if (k < L - 1) FN(activate)(act, eps2, dims[k + 1] * n, H[k + 1], S[k + 1]);
        }
        obj[r] = FN(loss)(loss, c, dims[L], n, D1, target, label, D0);
        /* backward */
        REAL* D = D0;
        REAL* Dn = D1;
        for (int64_t k = L - 1; k >= 0; k--) {
            const REAL* Wk = W[k] + r * dims[k + 1] * dims[k];
            FN(outer)(dims[k + 1], dims[k], n, D, H[k], G[k] + r * dims[k + 1] * dims[k]);
            if (k > 0) {
                FN(back)(dims[k + 1], dims[k], n, Wk, D, S[k], Dn);
                REAL* tmp = D; D = Dn; Dn = tmp;
            }
        }
    }
    free(H);
    free(buf);
    return 0;
}
