/* The CPU kernels of waveviz's fast engine, one shared library: the NWM recurrence (nwm.h) and the
   ConvLSTM (convlstm.h) in float and double, the per-pixel head's narrow-layer backward, and the
   float tanh and sigmoid exported for their accuracy tests. waveviz/engine/clib.py compiles this
   file with the system C compiler at first use, caches the library and calls it through ctypes;
   `cc -O3 -fopenmp -shared -fPIC waveviz_cpu.c -o waveviz_cpu.so -lm` builds it by hand. */
#include "wv_math.h"

void wv_sigm_f32(const float* x, float* y, int64_t n) {   /* exported for the accuracy test */
    for (int64_t i = 0; i < n; ++i) y[i] = wv_sigmf(x[i]);
}

void wv_tanh_f32(const float* x, float* y, int64_t n) {   /* exported for the accuracy test */
    for (int64_t i = 0; i < n; ++i) y[i] = wv_tanhf(x[i]);
}

/* The backward of a narrow layer out = h·Wᵀ + b (N ≤ 64 outputs, K inputs) that follows a ReLU,
   for rows p0 … p1-1, in one pass over h instead of three (BLAS is slow at N ≈ 6: the head's
   last layer): dw (N, K) += gᵀ·h, summed in float over blocks of 256 rows and in double across
   them; h ← (g·W) ⊙ (h > 0), in place — the gradient at the ReLU's input. rc: 1 on no memory. */
int mlp_narrow_bwd_f32(int64_t p0, int64_t p1, int N, int K, const float* g, const float* w, float* h, double* dw) {
    float* acc = (float*)malloc(sizeof(float) * (int64_t)K * (N + 1));
    if (!acc) return 1;
    float* part = acc + K;
    for (int64_t b0 = p0; b0 < p1; b0 += 256) {
        const int64_t b1 = b0 + 256 < p1 ? b0 + 256 : p1;
        memset(part, 0, sizeof(float) * (int64_t)K * N);
        for (int64_t p = b0; p < b1; ++p) {
            const float* gp = g + p * N;
            float* hp = h + p * K;
            for (int j = 0; j < K; ++j) acc[j] = 0.0f;
            for (int n = 0; n < N; ++n) {
                const float gn = gp[n];
                const float* wn = w + (int64_t)n * K;
                float* pn = part + (int64_t)n * K;
                #pragma omp simd
                for (int j = 0; j < K; ++j) { acc[j] += gn * wn[j]; pn[j] += gn * hp[j]; }
            }
            #pragma omp simd
            for (int j = 0; j < K; ++j) hp[j] = hp[j] > 0.0f ? acc[j] : 0.0f;
        }
        for (int64_t i = 0; i < (int64_t)K * N; ++i) dw[i] += part[i];
    }
    free(acc);
    return 0;
}

#ifdef _OPENMP
/* The same on torch's OpenMP team: thread t takes a contiguous range of rows and its own dw
   block dw + t·N·K (the caller sums the nt blocks). */
void mlp_narrow_bwd_omp_f32(int64_t P, int nt, int* rc, int N, int K, const float* g, const float* w, float* h, double* dw) {
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        rc[t] = mlp_narrow_bwd_f32(P * t / T, P * (t + 1) / T, N, K, g, w, h, dw + (int64_t)t * N * K);
    }
}
#endif

/* The templates, instantiated for float (f32) and double (f64). */
#define WV_CAT_(a, b) a##_##b
#define WV_CAT(a, b) WV_CAT_(a, b)
#define FN(name) WV_CAT(name, SUF)

#define REAL float
#define SUF f32
#define TANH wv_tanhf
#define SIGM wv_sigmf
#include "nwm.h"
#include "convlstm.h"
#undef REAL
#undef SUF
#undef TANH
#undef SIGM

#define REAL double
#define SUF f64
#define TANH wv_tanh
#define SIGM wv_sigm
#include "nwm.h"
#include "convlstm.h"
