/* The NWM's IMEX recurrence and its adjoint, for one floating type: REAL, with TANH its tanh and
   FN(name) the function's name for that type (name_f32, name_f64). waveviz_cpu.c includes this file
   once per type, so it has no include guard.

   Per image and step, the forward pads y_{t-1} circularly once, then walks the image row by row:
   the 3×3 stencil for every output channel into a row buffer, then tanh and both IMEX updates on
   that row. The backward walks a segment in reverse doing the same plus the adjoint updates; ∂W is
   accumulated in double. (The equations: waveviz/engine/__init__.py.) */

/* y (C, H, W) → rows r0 … r1-1 of p (C, H+2, W+2), circular (padded row r holds row r − 1 mod H) */
static void FN(pad_rows)(const REAL* y, REAL* p, int C, int H, int W, int r0, int r1) {
    const int Wp = W + 2;
    for (int c = 0; c < C; ++c)
        for (int h = r0 - 1; h < r1 - 1; ++h) {
            const REAL* src = y + ((int64_t)c * H + (h + H) % H) * W;
            REAL* dst = p + ((int64_t)c * (H + 2) + h + 1) * Wp;
            dst[0] = src[W - 1];
            memcpy(dst + 1, src, sizeof(REAL) * W);
            dst[W + 1] = src[0];
        }
}

static void FN(pad)(const REAL* y, REAL* p, int C, int H, int W) { FN(pad_rows)(y, p, C, H, W, 0, H + 2); }

/* row h of output channel co of the circular 3×3 convolution W ⊛ y, from the padded p */
static inline void FN(conv_row)(const REAL* p, const REAL* w, REAL* row, int co, int h, int C, int H, int W) {
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    for (int x = 0; x < W; ++x) row[x] = 0;
    for (int ci = 0; ci < C; ++ci)
        for (int dy = 0; dy < 3; ++dy) {
            const REAL* pr = p + ci * PHW + (int64_t)(h + dy) * Wp;
            const REAL* k = w + ((co * C + ci) * 3 + dy) * 3;
            const REAL k0 = k[0], k1 = k[1], k2 = k[2];
            for (int x = 0; x < W; ++x) row[x] += k0 * pr[x] + k1 * pr[x + 1] + k2 * pr[x + 2];
        }
}

/* row h of input channel k of the transposed circular convolution Wᵀ ⊛ s for a (Co, Ci, 3, 3) W */
static inline void FN(convT_rect_row)(const REAL* sp, const REAL* w, REAL* row, int k, int h, int Co, int Ci, int H, int W) {
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    for (int x = 0; x < W; ++x) row[x] = 0;
    for (int o = 0; o < Co; ++o)
        for (int dy = 0; dy < 3; ++dy) {
            const REAL* pr = sp + o * PHW + (int64_t)(h + 2 - dy) * Wp;
            const REAL* q = w + ((o * Ci + k) * 3 + dy) * 3;
            const REAL q0 = q[0], q1 = q[1], q2 = q[2];
            for (int x = 0; x < W; ++x) row[x] += q2 * pr[x] + q1 * pr[x + 1] + q0 * pr[x + 2];
        }
}

static inline void FN(convT_row)(const REAL* sp, const REAL* w, REAL* row, int ci, int h, int C, int H, int W) {
    FN(convT_rect_row)(sp, w, row, ci, h, C, C, H, W);
}

/* one IMEX step on rows h0 … h1-1 of one image, from y_{t-1} padded into p */
static inline void FN(fwd_rows)(const REAL* p, const REAL* w, REAL* row, const REAL* yp, const REAL* zp,
                                const REAL* omb, const REAL* alb, REAL* yn, REAL* zn, REAL dt,
                                int C, int H, int W, int h0, int h1) {
    const int64_t HW = (int64_t)H * W;
    for (int co = 0; co < C; ++co)
        for (int h = h0; h < h1; ++h) {
            FN(conv_row)(p, w, row, co, h, C, H, W);
            const int64_t o = co * HW + (int64_t)h * W;
            #pragma omp simd                        /* the reference's order of operations */
            for (int x = 0; x < W; ++x) {
                const REAL yv = yp[o + x], zv = zp[o + x];
                const REAL znew = zv + dt * ((TANH(row[x]) - omb[o + x] * yv) - alb[o + x] * zv);
                zn[o + x] = znew;
                yn[o + x] = yv + dt * znew;
            }
        }
}

/* n IMEX steps for images b0 … b1-1. y_in, z_in, om, al: (B, C, H, W) contiguous (z_in NULL = 0).
   Step j of image b is written to Y + b*ysb + j*ysj and Z + b*zsb + j*zsj (each C*H*W contiguous). */
int FN(nwm_fwd)(int b0, int b1, int n, int C, int H, int W, REAL dt,
                const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                REAL* Y, int64_t ysb, int64_t ysj, REAL* Z, int64_t zsb, int64_t zsj) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    REAL* p = (REAL*)calloc((int64_t)C * (H + 2) * (W + 2) + W + CHW, sizeof(REAL));
    if (!p) return 1;
    REAL* row = p + (int64_t)C * (H + 2) * (W + 2);
    const REAL* zeros = row + W;                 /* z_0 when z_in is NULL */
    for (int b = b0; b < b1; ++b) {
        const REAL* omb = om + b * CHW;
        const REAL* alb = al + b * CHW;
        for (int j = 0; j < n; ++j) {
            const REAL* yp = j ? Y + b * ysb + (j - 1) * ysj : y_in + b * CHW;
            const REAL* zp = j ? Z + b * zsb + (j - 1) * zsj : (z_in ? z_in + b * CHW : zeros);
            REAL* yn = Y + b * ysb + j * ysj;
            REAL* zn = Z + b * zsb + j * zsj;
            FN(pad)(yp, p, C, H, W);
            FN(fwd_rows)(p, w, row, yp, zp, omb, alb, yn, zn, dt, C, H, W, 0, H);
        }
    }
    free(p);
    return 0;
}

/* The adjoint of n steps (in reverse) for images b0 … b1-1, given the states the forward wrote
   (Y, Z: strides ysb, ysj and zsb, zsj) and the direct gradients G (strides gsb, gsj). Updates ybar, zbar in place
   (in: gradients w.r.t. the last state of the segment; out: w.r.t. its start state), adds into
   dom, dal (B, C, H, W) and dw (C*C*9 doubles, this call's share of ∂W). */
int FN(nwm_bwd)(int b0, int b1, int n, int C, int H, int W, REAL dt,
                const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                const REAL* Y, int64_t ysb, int64_t ysj, const REAL* Z, int64_t zsb, int64_t zsj, const REAL* G, int64_t gsb, int64_t gsj,
                REAL* ybar, REAL* zbar, REAL* dom, REAL* dal, double* dw) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    REAL* p = (REAL*)calloc(2 * C * PHW + 2 * CHW + W, sizeof(REAL));
    if (!p) return 1;
    REAL* sp = p + C * PHW;                     /* s, circularly padded */
    REAL* s = sp + C * PHW;                     /* s (C, H, W) */
    const REAL* zeros = s + CHW;                /* z_0 when z_in is NULL */
    REAL* row = s + 2 * CHW;
    for (int b = b0; b < b1; ++b) {
        const REAL* omb = om + b * CHW;
        const REAL* alb = al + b * CHW;
        REAL* yb = ybar + b * CHW;
        REAL* zb = zbar + b * CHW;
        REAL* domb = dom + b * CHW;
        REAL* dalb = dal + b * CHW;
        for (int j = n - 1; j >= 0; --j) {
            const REAL* yp = j ? Y + b * ysb + (j - 1) * ysj : y_in + b * CHW;
            const REAL* zp = j ? Z + b * zsb + (j - 1) * zsj : (z_in ? z_in + b * CHW : zeros);
            const REAL* g = G + b * gsb + j * gsj;
            FN(pad)(yp, p, C, H, W);
            for (int co = 0; co < C; ++co)
                for (int h = 0; h < H; ++h) {
                    FN(conv_row)(p, w, row, co, h, C, H, W);
                    const int64_t o = co * HW + (int64_t)h * W;
                    const REAL *gr = g + o, *ypr = yp + o, *zpr = zp + o, *omr = omb + o, *alr = alb + o;
                    REAL *ybr = yb + o, *zbr = zb + o, *sr = s + o, *domr = domb + o, *dalr = dalb + o;
                    #pragma omp simd                /* the rows never overlap */
                    for (int x = 0; x < W; ++x) {
                        const REAL yhat = ybr[x] + gr[x];
                        const REAL zhat = zbr[x] + dt * yhat;
                        const REAL u = dt * zhat;
                        const REAL th = TANH(row[x]);
                        sr[x] = u * (1 - th * th);
                        domr[x] += -u * ypr[x];
                        dalr[x] += -u * zpr[x];
                        zbr[x] = zhat + -u * alr[x];
                        ybr[x] = yhat + -u * omr[x];
                    }
                }
            FN(pad)(s, sp, C, H, W);
            /* ∂W[co, ci, dy, dx] += Σ_{h, x} s[co, h, x] · p[ci, h + dy, x + dx] */
            for (int co = 0; co < C; ++co)
                for (int ci = 0; ci < C; ++ci)
                    for (int dy = 0; dy < 3; ++dy) {
                        double a0 = 0, a1 = 0, a2 = 0;
                        for (int h = 0; h < H; ++h) {
                            const REAL* sr = s + co * HW + (int64_t)h * W;
                            const REAL* pr = p + ci * PHW + (int64_t)(h + dy) * Wp;
                            REAL r0 = 0, r1 = 0, r2 = 0;
                            #pragma omp simd reduction(+:r0, r1, r2)
                            for (int x = 0; x < W; ++x) {
                                r0 += sr[x] * pr[x];
                                r1 += sr[x] * pr[x + 1];
                                r2 += sr[x] * pr[x + 2];
                            }
                            a0 += r0; a1 += r1; a2 += r2;
                        }
                        double* d = dw + ((co * C + ci) * 3 + dy) * 3;
                        d[0] += a0; d[1] += a1; d[2] += a2;
                    }
            /* ȳ += Wᵀ ⊛ s */
            for (int ci = 0; ci < C; ++ci)
                for (int h = 0; h < H; ++h) {
                    FN(convT_row)(sp, w, row, ci, h, C, H, W);
                    REAL* yr = yb + ci * HW + (int64_t)h * W;
                    for (int x = 0; x < W; ++x) yr[x] += row[x];
                }
        }
    }
    free(p);
    return 0;
}

#ifdef _OPENMP
/* The same, on torch's own OpenMP thread team (the kernel is linked against the libgomp torch has
   loaded): nt threads, each a contiguous range of images; with fewer images than threads, the
   threads share each image's rows instead, meeting at a barrier twice per step. rc: nt ints. */
void FN(nwm_fwd_omp)(int B, int nt, int* rc, int n, int C, int H, int W, REAL dt,
                     const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                     REAL* Y, int64_t ysb, int64_t ysj, REAL* Z, int64_t zsb, int64_t zsj) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    if (B >= nt || H < 2 * nt) {
        #pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num(), T = omp_get_num_threads();
            rc[t] = FN(nwm_fwd)((int)((int64_t)B * t / T), (int)((int64_t)B * (t + 1) / T), n, C, H, W, dt,
                                y_in, z_in, om, al, w, Y, ysb, ysj, Z, zsb, zsj);
        }
        return;
    }
    REAL* p = (REAL*)calloc((int64_t)C * (H + 2) * (W + 2) + CHW, sizeof(REAL));   /* shared: padded y, zeros */
    if (!p) { rc[0] = 1; return; }
    const REAL* zeros = p + (int64_t)C * (H + 2) * (W + 2);
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const int h0 = H * t / T, h1 = H * (t + 1) / T;
        const int r0 = (H + 2) * t / T, r1 = (H + 2) * (t + 1) / T;
        REAL* row = (REAL*)malloc(sizeof(REAL) * W);
        rc[t] = row == NULL;
        #pragma omp barrier
        int ok = 1;
        for (int i = 0; i < T; ++i) ok &= !rc[i];
        for (int b = 0; ok && b < B; ++b) {
            const REAL* omb = om + b * CHW;
            const REAL* alb = al + b * CHW;
            for (int j = 0; j < n; ++j) {
                const REAL* yp = j ? Y + b * ysb + (j - 1) * ysj : y_in + b * CHW;
                const REAL* zp = j ? Z + b * zsb + (j - 1) * zsj : (z_in ? z_in + b * CHW : zeros);
                FN(pad_rows)(yp, p, C, H, W, r0, r1);
                #pragma omp barrier
                FN(fwd_rows)(p, w, row, yp, zp, omb, alb, Y + b * ysb + j * ysj, Z + b * zsb + j * zsj,
                             dt, C, H, W, h0, h1);
                #pragma omp barrier
            }
        }
        free(row);
    }
    free(p);
}

/* The adjoint on the thread team, a contiguous range of images per thread; thread t adds its ∂W
   share into dw + b0 * C*C*9, b0 its first image (so dw holds B rows, summed by the caller). */
void FN(nwm_bwd_omp)(int B, int nt, int* rc, int n, int C, int H, int W, REAL dt,
                     const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                     const REAL* Y, int64_t ysb, int64_t ysj, const REAL* Z, int64_t zsb, int64_t zsj,
                     const REAL* G, int64_t gsb, int64_t gsj,
                     REAL* ybar, REAL* zbar, REAL* dom, REAL* dal, double* dw) {
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const int b0 = (int)((int64_t)B * t / T), b1 = (int)((int64_t)B * (t + 1) / T);
        rc[t] = b1 > b0 ? FN(nwm_bwd)(b0, b1, n, C, H, W, dt, y_in, z_in, om, al, w, Y, ysb, ysj, Z, zsb, zsj,
                                      G, gsb, gsj, ybar, zbar, dom, dal, dw + (int64_t)b0 * C * C * 9) : 0;
    }
}
#endif
