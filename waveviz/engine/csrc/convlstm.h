/* The ConvLSTM's T steps and their adjoint, for one floating type (REAL, TANH, SIGM, FN: as in
   nwm.h, whose padding and convolution rows this file uses). Included once per type, after nwm.h. */

/* ---- the ConvLSTM (SPEC §3), C hidden channels, an input MLP C → M → C ---------------------- */

static inline REAL FN(sigm)(REAL x) { return SIGM(x); }

/* T steps for images b0 … b1-1. u0, h0, c0: (B, C, H, W); wg (4C, 2C, 3, 3), bg (4C) with the gates
   in the order i, f, g, o; w1 (M, C), b1 (M), w2 (C, M), b2 (C). Writes U, Hs, Cs (B, T, C, H, W):
   u_t, h_t, c_t for t = 1 … T, and, unless A is NULL, A (B, T, 4C, H, W): σ(i), σ(f), tanh(g), σ(o). */
int FN(lstm_fwd)(int b0, int b1, int T, int C, int M, int H, int W,
                 const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg, const REAL* bg,
                 const REAL* w1, const REAL* b1w, const REAL* w2, const REAL* b2,
                 REAL* U, REAL* Hs, REAL* Cs, REAL* A) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    const int C2 = 2 * C, C4 = 4 * C;
    const int64_t PHW = (int64_t)(H + 2) * (W + 2);
    REAL* xp = (REAL*)malloc(sizeof(REAL) * (C2 * PHW + (int64_t)C4 * W + (int64_t)M * W));
    if (!xp) return 1;
    REAL* acc = xp + C2 * PHW;                   /* (4C, W): one row of every gate */
    REAL* m = acc + (int64_t)C4 * W;
    for (int b = b0; b < b1; ++b) {
        for (int t = 0; t < T; ++t) {
            const int64_t cur = ((int64_t)b * T + t) * CHW, prev = cur - CHW;
            const REAL* up = t ? U + prev : u0 + b * CHW;
            const REAL* hp = t ? Hs + prev : h0 + b * CHW;
            const REAL* cp = t ? Cs + prev : c0 + b * CHW;
            FN(pad)(up, xp, C, H, W);
            FN(pad)(hp, xp + C * PHW, C, H, W);
            for (int y = 0; y < H; ++y) {
                for (int o = 0; o < C4; ++o) {
                    REAL* r = acc + (int64_t)o * W;
                    FN(conv_row)(xp, wg, r, o, y, C2, H, W);
                    for (int x = 0; x < W; ++x) r[x] += bg[o];
                }
                const int64_t r0 = (int64_t)y * W;
                for (int o = 0; o < C4; ++o) {             /* the gates' activations, in place */
                    REAL* r = acc + (int64_t)o * W;
                    if (o >= 2 * C && o < 3 * C) {
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) r[x] = TANH(r[x]);
                    } else {
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) r[x] = FN(sigm)(r[x]);
                    }
                    if (A) memcpy(A + ((int64_t)b * T + t) * C4 * HW + o * HW + r0, r, sizeof(REAL) * W);
                }
                for (int c = 0; c < C; ++c) {
                    const REAL* ai = acc + (int64_t)c * W;
                    const REAL* af = acc + (int64_t)(C + c) * W;
                    const REAL* ag = acc + (int64_t)(2 * C + c) * W;
                    const REAL* ao = acc + (int64_t)(3 * C + c) * W;
                    const REAL* cpr = cp + c * HW + r0;
                    REAL* cn = Cs + cur + c * HW + r0;
                    REAL* hn = Hs + cur + c * HW + r0;
                    #pragma omp simd
                    for (int x = 0; x < W; ++x) {
                        const REAL cv = af[x] * cpr[x] + ai[x] * ag[x];
                        cn[x] = cv;
                        hn[x] = ao[x] * TANH(cv);
                    }
                }
                for (int j = 0; j < M; ++j) {              /* the input MLP, C → M → C, per pixel */
                    REAL* mj = m + (int64_t)j * W;
                    for (int x = 0; x < W; ++x) mj[x] = b1w[j];
                    for (int c = 0; c < C; ++c) {
                        const REAL q = w1[j * C + c];
                        const REAL* hn = Hs + cur + c * HW + r0;
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) mj[x] += q * hn[x];
                    }
                    for (int x = 0; x < W; ++x) mj[x] = mj[x] > 0 ? mj[x] : 0;
                }
                for (int c = 0; c < C; ++c) {
                    REAL* un = U + cur + c * HW + r0;
                    for (int x = 0; x < W; ++x) un[x] = b2[c];
                    for (int j = 0; j < M; ++j) {
                        const REAL q = w2[c * M + j];
                        const REAL* mj = m + (int64_t)j * W;
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) un[x] += q * mj[x];
                    }
                }
            }
        }
    }
    free(xp);
    return 0;
}

/* The adjoint for images b0 … b1-1, from what lstm_fwd wrote (with A) and G = ∂L/∂U (B, T, C, H, W).
   Writes du0, dh0, dc0 (B, C, H, W): the gradients at the initial states; adds this call's share of
   the parameters' gradients into dp (doubles): wg, bg, w1, b1, w2, b2, flattened in that order. */
int FN(lstm_bwd)(int b0, int b1, int T, int C, int M, int H, int W,
                 const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg,
                 const REAL* w1, const REAL* b1w, const REAL* w2,
                 const REAL* U, const REAL* Hs, const REAL* Cs, const REAL* A, const REAL* G,
                 REAL* du0, REAL* dh0, REAL* dc0, double* dp) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    const int C2 = 2 * C, C4 = 4 * C;
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    const int64_t np = (int64_t)C4 * C2 * 9 + C4 + 2 * (int64_t)M * C + M + C;   /* wg, bg, w1, b1, w2, b2 */
    /* padded x_{t-1} and s, s itself, a row, the MLP's hidden values, and per-image sums of dp in REAL */
    REAL* xp = (REAL*)malloc(sizeof(REAL) * (C2 * PHW + C4 * PHW + (int64_t)C4 * HW + W + 2 * M * HW + CHW + np));
    if (!xp) return 1;
    REAL* sp = xp + C2 * PHW;
    REAL* s = sp + C4 * PHW;
    REAL* row = s + (int64_t)C4 * HW;
    REAL* m = row + W;                           /* (M, H, W): the MLP's hidden values, and their gradient */
    REAL* dm = m + (int64_t)M * HW;
    REAL* gu = dm + (int64_t)M * HW;             /* (C, H, W) */
    REAL* step = gu + CHW;                       /* this step's parameter gradients (REAL), then added to dp */
    for (int b = b0; b < b1; ++b) {
        REAL* du = du0 + b * CHW;                /* carried: ∂L/∂u_t, ∂L/∂h_t, ∂L/∂c_t from later steps */
        REAL* dh = dh0 + b * CHW;
        REAL* dc = dc0 + b * CHW;
        memset(du, 0, sizeof(REAL) * CHW);
        memset(dh, 0, sizeof(REAL) * CHW);
        memset(dc, 0, sizeof(REAL) * CHW);
        for (int t = T - 1; t >= 0; --t) {
            const int64_t cur = ((int64_t)b * T + t) * CHW, prev = cur - CHW;
            const REAL* up = t ? U + prev : u0 + b * CHW;
            const REAL* hp = t ? Hs + prev : h0 + b * CHW;
            const REAL* cp = t ? Cs + prev : c0 + b * CHW;
            const REAL* a = A + ((int64_t)b * T + t) * C4 * HW;
            memset(step, 0, sizeof(REAL) * np);
            REAL* sw1 = step + (int64_t)C4 * C2 * 9 + C4;
            REAL* sb1 = sw1 + (int64_t)M * C;
            REAL* sw2 = sb1 + M;
            REAL* sb2 = sw2 + (int64_t)C * M;
            const REAL* hn = Hs + cur;              /* h_t */
            for (int j = 0; j < M; ++j) {            /* the MLP again: m = relu(w1 h_t + b1) */
                REAL* mj = m + j * HW;
                for (int64_t px = 0; px < HW; ++px) mj[px] = b1w[j];
                for (int c = 0; c < C; ++c) {
                    const REAL q = w1[j * C + c];
                    #pragma omp simd
                    for (int64_t px = 0; px < HW; ++px) mj[px] += q * hn[c * HW + px];
                }
                for (int64_t px = 0; px < HW; ++px) { mj[px] = mj[px] > 0 ? mj[px] : 0; dm[j * HW + px] = 0; }
            }
            for (int c = 0; c < C; ++c) {            /* ĝ = ∂L/∂u_t (direct + through step t+1) */
                REAL* gc = gu + c * HW;
                const REAL* Gc = G + cur + c * HW;
                const REAL* dc_ = du + c * HW;
                REAL sg = 0;
                #pragma omp simd reduction(+:sg)
                for (int64_t px = 0; px < HW; ++px) { gc[px] = Gc[px] + dc_[px]; sg += gc[px]; }
                sb2[c] += sg;
                for (int j = 0; j < M; ++j) {
                    const REAL q = w2[c * M + j];
                    const REAL* mj = m + j * HW;
                    REAL* dmj = dm + j * HW;
                    REAL sw = 0;
                    #pragma omp simd reduction(+:sw)
                    for (int64_t px = 0; px < HW; ++px) { sw += gc[px] * mj[px]; dmj[px] += q * gc[px]; }
                    sw2[c * M + j] += sw;
                }
            }
            for (int j = 0; j < M; ++j) {            /* through the ReLU; ∂w1, ∂b1 */
                REAL* dmj = dm + j * HW;
                const REAL* mj = m + j * HW;
                REAL sb = 0;
                #pragma omp simd reduction(+:sb)
                for (int64_t px = 0; px < HW; ++px) { dmj[px] = mj[px] > 0 ? dmj[px] : 0; sb += dmj[px]; }
                sb1[j] += sb;
                for (int c = 0; c < C; ++c) {
                    const REAL* hc = hn + c * HW;
                    REAL sw = 0;
                    #pragma omp simd reduction(+:sw)
                    for (int64_t px = 0; px < HW; ++px) sw += dmj[px] * hc[px];
                    sw1[j * C + c] += sw;
                }
            }
            for (int c = 0; c < C; ++c) {            /* ∂h_t, the cell, the gates → s (pre-activation) */
                REAL* dhv = gu + c * HW;             /* ĝ is no longer needed: reuse its memory */
                const REAL* dhc = dh + c * HW;
                for (int64_t px = 0; px < HW; ++px) dhv[px] = dhc[px];
                for (int j = 0; j < M; ++j) {
                    const REAL q = w1[j * C + c];
                    const REAL* dmj = dm + j * HW;
                    #pragma omp simd
                    for (int64_t px = 0; px < HW; ++px) dhv[px] += q * dmj[px];
                }
                const REAL *ai = a + c * HW, *af = a + (C + c) * HW, *ag = a + (2 * C + c) * HW, *ao = a + (3 * C + c) * HW;
                const REAL* cc = Cs + cur + c * HW;
                const REAL* cpc = cp + c * HW;
                REAL* dcc = dc + c * HW;
                REAL *si = s + c * HW, *sf = s + (C + c) * HW, *sg = s + (2 * C + c) * HW, *so = s + (3 * C + c) * HW;
                #pragma omp simd
                for (int64_t px = 0; px < HW; ++px) {
                    const REAL gi = ai[px], gf = af[px], gg = ag[px], go = ao[px];
                    const REAL tc = TANH(cc[px]);
                    const REAL dct = dcc[px] + dhv[px] * go * (1 - tc * tc);
                    si[px] = dct * gg * gi * (1 - gi);
                    sf[px] = dct * cpc[px] * gf * (1 - gf);
                    sg[px] = dct * gi * (1 - gg * gg);
                    so[px] = dhv[px] * tc * go * (1 - go);
                    dcc[px] = dct * gf;
                }
            }
            FN(pad)(up, xp, C, H, W);
            FN(pad)(hp, xp + C * PHW, C, H, W);
            FN(pad)(s, sp, C4, H, W);
            for (int o = 0; o < C4; ++o) {                 /* ∂bg, ∂wg += s ⋆ x_{t-1} */
                const REAL* so = s + (int64_t)o * HW;
                REAL sb = 0;
                for (int64_t px = 0; px < HW; ++px) sb += so[px];
                step[(int64_t)C4 * C2 * 9 + o] += sb;
                for (int k = 0; k < C2; ++k)
                    for (int dy = 0; dy < 3; ++dy) {
                        REAL q0 = 0, q1 = 0, q2 = 0;
                        for (int y = 0; y < H; ++y) {
                            const REAL* sr = so + (int64_t)y * W;
                            const REAL* xr = xp + k * PHW + (int64_t)(y + dy) * Wp;
                            for (int x = 0; x < W; ++x) { q0 += sr[x] * xr[x]; q1 += sr[x] * xr[x + 1]; q2 += sr[x] * xr[x + 2]; }
                        }
                        REAL* q = step + ((o * C2 + k) * 3 + dy) * 3;
                        q[0] += q0; q[1] += q1; q[2] += q2;
                    }
            }
            for (int k = 0; k < C2; ++k) {                 /* (∂u, ∂h) of step t-1 = Wᵀ ⊛ s */
                REAL* d = k < C ? du + (int64_t)k * HW : dh + (int64_t)(k - C) * HW;
                for (int y = 0; y < H; ++y) {
                    FN(convT_rect_row)(sp, wg, row, k, y, C4, C2, H, W);
                    memcpy(d + (int64_t)y * W, row, sizeof(REAL) * W);
                }
            }
            for (int64_t i = 0; i < np; ++i) dp[i] += step[i];
        }
    }
    free(xp);
    return 0;
}

#ifdef _OPENMP
/* Both on torch's OpenMP team, a contiguous range of images per thread; for the adjoint, thread t
   adds into dp + t·np (np doubles per thread, summed by the caller). */
void FN(lstm_fwd_omp)(int B, int nt, int* rc, int T, int C, int M, int H, int W,
                      const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg, const REAL* bg,
                      const REAL* w1, const REAL* b1w, const REAL* w2, const REAL* b2,
                      REAL* U, REAL* Hs, REAL* Cs, REAL* A) {
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        rc[t] = FN(lstm_fwd)((int)((int64_t)B * t / n), (int)((int64_t)B * (t + 1) / n), T, C, M, H, W,
                             u0, h0, c0, wg, bg, w1, b1w, w2, b2, U, Hs, Cs, A);
    }
}

void FN(lstm_bwd_omp)(int B, int nt, int* rc, int T, int C, int M, int H, int W,
                      const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg,
                      const REAL* w1, const REAL* b1w, const REAL* w2,
                      const REAL* U, const REAL* Hs, const REAL* Cs, const REAL* A, const REAL* G,
                      REAL* du0, REAL* dh0, REAL* dc0, double* dp) {
    const int64_t np = (int64_t)16 * C * C * 9 / 2 + 4 * C + 2 * (int64_t)M * C + M + C;
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        rc[t] = FN(lstm_bwd)((int)((int64_t)B * t / n), (int)((int64_t)B * (t + 1) / n), T, C, M, H, W,
                             u0, h0, c0, wg, w1, b1w, w2, U, Hs, Cs, A, G, du0, dh0, dc0, dp + t * np);
    }
}
#endif
