/* One precision of the fused chain step; included twice by chain.c (REAL = double with V = 8 lanes,
 * then float with V = 16: one 512-bit vector either way).
 *
 * Runs go into vector lanes: a group of V runs is gathered into "interleaved" buffers (entry e of run
 * lane l at e·V + l), so every operation below acts on V runs at once with full vectors, whatever the
 * widths and n, and no sum ever crosses lanes (no horizontal reductions). For each group:
 *
 *   H_0 = Xᵀ (d_0 × n, the same in every lane),  Z_k = W_k H_k,  H_{k+1} = σ(Z_k) and S_{k+1} = σ′(Z_k)
 *   (hidden layers),  Fᵀ = Z_{L−1},  obj = c Σ ℓ,  D_{L−1} = ∂obj/∂Fᵀ,
 *   G_k = D_k H_kᵀ,  D_{k−1} = S_k ⊙ (W_kᵀ D_k)    (k = L−1 … 0),
 *
 * then the gradients are scattered back to the (R, out, in) layout. A lane's arithmetic is the same
 * whichever group and lane it sits in, so run r's numbers do not depend on the other runs (a short last
 * group fills its spare lanes with copies of its last run and drops their results). The
 * transcendental functions go through glibc's vector math library (libmvec) where the compiler finds
 * it. σ and σ′ are computed together in the forward pass (GELU: one erfc and one exp per entry).
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
#pragma omp simd
        for (int64_t i = 0; i < m; i++) s[i] = (REAL)1;
    }
}

/* Wg (m × V) = the m entries of runs r0 … r0 + V − 1 of W (R × m); lanes past R repeat run R − 1 */
static inline void FN(gather)(int64_t R, int64_t r0, int64_t m, const REAL* restrict W, REAL* restrict Wg) {
    for (int64_t l = 0; l < V; l++) {
        const REAL* restrict src = W + (r0 + l < R ? r0 + l : R - 1) * m;
        for (int64_t e = 0; e < m; e++) Wg[e * V + l] = src[e];
    }
}

static inline void FN(scatter)(int64_t R, int64_t r0, int64_t m, const REAL* restrict Gg, REAL* restrict G) {
    for (int64_t l = 0; l < V && r0 + l < R; l++) {
        REAL* restrict dst = G + (r0 + l) * m;
        for (int64_t e = 0; e < m; e++) dst[e] = Gg[e * V + l];
    }
}

/* The products hold one V-lane vector per entry in a GCC/Clang vector type, so sums stay in registers
 * (a plain array accumulator was kept on the stack and re-read with a store-forwarding stall). Every
 * interleaved buffer is 64-byte aligned and an entry is V·sizeof(REAL) = 64 bytes, so the casts are aligned. */
typedef REAL FN(vec) __attribute__((vector_size(V * sizeof(REAL))));
#define VEC FN(vec)
#define AT(ptr, e) (((VEC*)(ptr))[e])
#define CAT(ptr, e) (((const VEC*)(ptr))[e])

/* The three products below are register-blocked four ways (four examples, or four columns, at a time):
 * one load of the shared operand feeds four multiply-adds, and the four sums are independent chains,
 * so neither the load ports nor the FMA latency set the pace. */

/* Z (rows × n) = W (rows × cols) H (cols × n), every entry a V-lane vector */
static inline void FN(matmul)(int64_t rows, int64_t cols, int64_t n, const REAL* restrict W,
                              const REAL* restrict H, REAL* restrict Z) {
    const int64_t n4 = n - n % 4;
    for (int64_t i = 0; i < rows; i++) {
        const REAL* restrict w = W + i * cols * V;
        int64_t t = 0;
        for (; t < n4; t += 4) {
            const VEC w0 = CAT(w, 0);
            VEC a0 = w0 * CAT(H, t), a1 = w0 * CAT(H, t + 1), a2 = w0 * CAT(H, t + 2), a3 = w0 * CAT(H, t + 3);
            for (int64_t j = 1; j < cols; j++) {
                const VEC wj = CAT(w, j);
                const REAL* restrict h = H + (j * n + t) * V;
                a0 += wj * CAT(h, 0);
                a1 += wj * CAT(h, 1);
                a2 += wj * CAT(h, 2);
                a3 += wj * CAT(h, 3);
            }
            AT(Z, i * n + t) = a0;
            AT(Z, i * n + t + 1) = a1;
            AT(Z, i * n + t + 2) = a2;
            AT(Z, i * n + t + 3) = a3;
        }
        for (; t < n; t++) {
            VEC acc = CAT(w, 0) * CAT(H, t);
            for (int64_t j = 1; j < cols; j++) acc += CAT(w, j) * CAT(H, j * n + t);
            AT(Z, i * n + t) = acc;
        }
    }
}

/* G (rows × cols) = D (rows × n) Hᵀ (n × cols), per lane: four columns of G per pass over D's row */
static inline void FN(outer)(int64_t rows, int64_t cols, int64_t n, const REAL* restrict D,
                             const REAL* restrict H, REAL* restrict G) {
    const int64_t c4 = cols - cols % 4;
    for (int64_t i = 0; i < rows; i++) {
        const REAL* restrict d = D + i * n * V;
        int64_t j = 0;
        for (; j < c4; j += 4) {
            const REAL* restrict h0 = H + j * n * V;
            const REAL* restrict h1 = h0 + n * V;
            const REAL* restrict h2 = h1 + n * V;
            const REAL* restrict h3 = h2 + n * V;
            VEC a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t t = 0; t < n; t++) {
                const VEC dv = CAT(d, t);
                a0 += dv * CAT(h0, t);
                a1 += dv * CAT(h1, t);
                a2 += dv * CAT(h2, t);
                a3 += dv * CAT(h3, t);
            }
            AT(G, i * cols + j) = a0;
            AT(G, i * cols + j + 1) = a1;
            AT(G, i * cols + j + 2) = a2;
            AT(G, i * cols + j + 3) = a3;
        }
        for (; j < cols; j++) { /* the last columns: four partial sums over the examples */
            const REAL* restrict h = H + j * n * V;
            const int64_t n4 = n - n % 4;
            VEC a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t t = 0; t < n4; t += 4) {
                a0 += CAT(d, t) * CAT(h, t);
                a1 += CAT(d, t + 1) * CAT(h, t + 1);
                a2 += CAT(d, t + 2) * CAT(h, t + 2);
                a3 += CAT(d, t + 3) * CAT(h, t + 3);
            }
            for (int64_t t = n4; t < n; t++) a0 += CAT(d, t) * CAT(h, t);
            AT(G, i * cols + j) = (a0 + a1) + (a2 + a3);
        }
    }
}

/* P (cols × n) = S ⊙ (Wᵀ D),  W (rows × cols), D (rows × n), per lane */
static inline void FN(back)(int64_t rows, int64_t cols, int64_t n, const REAL* restrict W,
                            const REAL* restrict D, const REAL* restrict S, REAL* restrict P) {
    const int64_t n4 = n - n % 4;
    for (int64_t j = 0; j < cols; j++) {
        int64_t t = 0;
        for (; t < n4; t += 4) {
            const VEC w0 = CAT(W, j);
            VEC a0 = w0 * CAT(D, t), a1 = w0 * CAT(D, t + 1), a2 = w0 * CAT(D, t + 2), a3 = w0 * CAT(D, t + 3);
            for (int64_t i = 1; i < rows; i++) {
                const VEC wi = CAT(W, i * cols + j);
                const REAL* restrict d = D + (i * n + t) * V;
                a0 += wi * CAT(d, 0);
                a1 += wi * CAT(d, 1);
                a2 += wi * CAT(d, 2);
                a3 += wi * CAT(d, 3);
            }
            AT(P, j * n + t) = a0 * CAT(S, j * n + t);
            AT(P, j * n + t + 1) = a1 * CAT(S, j * n + t + 1);
            AT(P, j * n + t + 2) = a2 * CAT(S, j * n + t + 2);
            AT(P, j * n + t + 3) = a3 * CAT(S, j * n + t + 3);
        }
        for (; t < n; t++) {
            VEC acc = CAT(W, j) * CAT(D, t);
            for (int64_t i = 1; i < rows; i++) acc += CAT(W, i * cols + j) * CAT(D, i * n + t);
            AT(P, j * n + t) = acc * CAT(S, j * n + t);
        }
    }
}

#undef VEC
#undef AT
#undef CAT

/* total (V lanes) = Σ ℓ and D = c ∂ℓ/∂Fᵀ for outputs F (dout × n), per lane; the caller scales total by c */
static inline void FN(loss)(int loss, REAL c, int64_t dout, int64_t n, const REAL* restrict F,
                            const REAL* restrict target, const int64_t* restrict label, REAL* restrict D,
                            REAL* restrict total) {
    for (int l = 0; l < V; l++) total[l] = 0;
    if (loss == LOSS_SQUARE) { /* ℓ = Σ_o (f_o − y_o)², no ½; target (n × dout) */
        for (int64_t o = 0; o < dout; o++) {
            for (int64_t t = 0; t < n; t++) {
                const REAL y = target[t * dout + o];
                const REAL* restrict f = F + (o * n + t) * V;
                REAL* restrict d = D + (o * n + t) * V;
#pragma omp simd
                for (int l = 0; l < V; l++) {
                    REAL e = f[l] - y;
                    total[l] += e * e;
                    d[l] = (REAL)2 * c * e;
                }
            }
        }
    } else if (loss == LOSS_EXP) { /* one output, y ∈ {−1, +1}: ℓ = e^{−y f} */
        for (int64_t t = 0; t < n; t++) {
            const REAL y = target[t];
#pragma omp simd
            for (int l = 0; l < V; l++) {
                REAL e = EXP(-y * F[t * V + l]);
                total[l] += e;
                D[t * V + l] = -c * y * e;
            }
        }
    } else if (loss == LOSS_LOGISTIC) { /* ℓ = log(1 + e^{−m}), m = y f, stably; ℓ′ = −σ(−m) */
        for (int64_t t = 0; t < n; t++) {
            const REAL y = target[t];
#pragma omp simd
            for (int l = 0; l < V; l++) {
                REAL m = y * F[t * V + l];
                REAL e = EXP(-FABS(m));
                total[l] += ((m < (REAL)0) ? -m : (REAL)0) + LOG1P(e);
                REAL sneg = (m >= (REAL)0) ? e / ((REAL)1 + e) : (REAL)1 / ((REAL)1 + e);
                D[t * V + l] = -c * y * sneg;
            }
        }
    } else { /* LOSS_CE: ℓ = logsumexp_o f_o − f_y; ∂ = softmax − onehot */
        for (int64_t t = 0; t < n; t++) {
            REAL mx[V], se[V];
            const int64_t y = label[t];
#pragma omp simd
            for (int l = 0; l < V; l++) { mx[l] = F[t * V + l]; se[l] = 0; }
            for (int64_t o = 1; o < dout; o++) {
                const REAL* restrict f = F + (o * n + t) * V;
#pragma omp simd
                for (int l = 0; l < V; l++) mx[l] = (f[l] > mx[l] || f[l] != f[l]) ? f[l] : mx[l]; /* NaN wins */
            }
            for (int64_t o = 0; o < dout; o++) {
                const REAL* restrict f = F + (o * n + t) * V;
                REAL* restrict d = D + (o * n + t) * V;
#pragma omp simd
                for (int l = 0; l < V; l++) {
                    REAL e = EXP(f[l] - mx[l]);
                    d[l] = e;
                    se[l] += e;
                }
            }
#pragma omp simd
            for (int l = 0; l < V; l++) total[l] += mx[l] + LOG(se[l]) - F[(y * n + t) * V + l];
            for (int64_t o = 0; o < dout; o++) {
                REAL* restrict d = D + (o * n + t) * V;
#pragma omp simd
                for (int l = 0; l < V; l++) d[l] *= c / se[l];
            }
            REAL* restrict dy = D + (y * n + t) * V;
#pragma omp simd
            for (int l = 0; l < V; l++) dy[l] -= c;
        }
    }
}

int FN(chain_step)(int64_t R, int64_t L, const int64_t* dims, int64_t n, const REAL* XT,
                   const REAL* const* W, REAL* const* G, const REAL* target, const int64_t* label,
                   int loss, double c_in, int act, double eps, REAL* obj) {
    const REAL c = (REAL)c_in, eps2 = (REAL)(eps * eps);
    int64_t maxw = 0, hidden = 0, params = 0;
    for (int64_t k = 0; k <= L; k++) maxw = dims[k] > maxw ? dims[k] : maxw;
    for (int64_t k = 1; k < L; k++) hidden += dims[k];
    for (int64_t k = 0; k < L; k++) params += dims[k + 1] * dims[k];
    /* scratch, all V-lane interleaved: H_0, H and S of every hidden layer, two D buffers, weights, gradients */
    size_t total = (size_t)((dims[0] + 2 * hidden + 2 * maxw) * n + 2 * params) * V;
    size_t bytes = (sizeof(REAL) * total + 63) / 64 * 64; /* aligned_alloc wants a multiple of 64 */
    REAL* buf = (REAL*)aligned_alloc(64, bytes ? bytes : 64);
    if (!buf) return 1;
    REAL** H = (REAL**)malloc(sizeof(REAL*) * (size_t)(4 * (L + 1)));
    if (!H) { free(buf); return 1; }
    REAL** S = H + (L + 1);
    REAL** Wg = S + (L + 1);
    REAL** Gg = Wg + (L + 1);
    REAL* p = buf;
    H[0] = p; p += dims[0] * n * V;
    S[0] = 0;
    for (int64_t k = 1; k < L; k++) { H[k] = p; p += dims[k] * n * V; S[k] = p; p += dims[k] * n * V; }
    REAL* D0 = p; p += maxw * n * V;
    REAL* D1 = p; p += maxw * n * V;
    for (int64_t k = 0; k < L; k++) { Wg[k] = p; p += dims[k + 1] * dims[k] * V; Gg[k] = p; p += dims[k + 1] * dims[k] * V; }
    for (int64_t e = 0; e < dims[0] * n; e++)
        for (int l = 0; l < V; l++) H[0][e * V + l] = XT[e]; /* the shared inputs, in every lane */

    REAL tot[V];
    for (int64_t r0 = 0; r0 < R; r0 += V) {
        for (int64_t k = 0; k < L; k++) FN(gather)(R, r0, dims[k + 1] * dims[k], W[k], Wg[k]);
        /* forward: the last layer writes Fᵀ into D1 (read by the loss, then overwritten) */
        for (int64_t k = 0; k < L; k++) {
            REAL* Z = (k < L - 1) ? H[k + 1] : D1;
            FN(matmul)(dims[k + 1], dims[k], n, Wg[k], H[k], Z);
            if (k < L - 1) FN(activate)(act, eps2, dims[k + 1] * n * V, H[k + 1], S[k + 1]);
        }
        FN(loss)(loss, c, dims[L], n, D1, target, label, D0, tot);
        for (int64_t l = 0; l < V && r0 + l < R; l++) obj[r0 + l] = c * tot[l];
        /* backward */
        REAL* D = D0;
        REAL* Dn = D1;
        for (int64_t k = L - 1; k >= 0; k--) {
            FN(outer)(dims[k + 1], dims[k], n, D, H[k], Gg[k]);
            if (k > 0) {
                FN(back)(dims[k + 1], dims[k], n, Wg[k], D, S[k], Dn);
                REAL* tmp = D; D = Dn; Dn = tmp;
            }
        }
        for (int64_t k = 0; k < L; k++) FN(scatter)(R, r0, dims[k + 1] * dims[k], Gg[k], G[k]);
    }
    free(H);
    free(buf);
    return 0;
}
