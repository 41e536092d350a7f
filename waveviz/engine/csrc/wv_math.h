/* Fast float math for the kernels: a Cephes-style expf, tanhf and logistic sigmoid, branch-free
   (selects as arithmetic blends) so that GCC and clang vectorise the loops calling them. The float
   tanh is within ≈ 2 ulp of the true value (tested); NaN stays NaN, so a diverging run is still
   caught. The double versions are libm's. */
#ifndef WV_MATH_H
#define WV_MATH_H
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float wv_expf(float x) {           /* 0 ≤ x ≤ 88; Cephes expf, ≈ 1 ulp */
    int32_t k = (int32_t)(x * 1.44269504088896341f + 0.5f);   /* floor, as x ≥ 0 */
    float n = (float)k;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float r2 = r * r;
    float p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r2 + r + 1.0f;
    int32_t bits = (k + 127) << 23;              /* 2^k */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float wv_tanhf(float x) {
    float ax = fabsf(x);
    float big = (float)(ax > 44.0f);             /* tanh(44) is 1 in float */
    ax = ax - big * ax + big * 44.0f;
    float xc = copysignf(ax, x);
    float s = xc * xc;                           /* |x| < 0.625: odd polynomial (Cephes tanhf) */
    float p = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s
                + 1.33314422036e-1f) * s - 3.33332819422e-1f) * s * xc + xc;
    float e = wv_expf(2.0f * ax);                /* else 1 − 2 / (exp(2|x|) + 1) */
    float q = copysignf(1.0f - 2.0f / (e + 1.0f), x);
    float m = (float)(ax < 0.625f);
    return (m * p + (1.0f - m) * q) + (x - x);   /* x − x: NaN in, NaN out */
}

static inline double wv_tanh(double x) { return tanh(x); }

static inline float wv_sigmf(float x) {          /* 1 / (1 + e^{−x}) from e^{−|x|}, branch-free */
    float ax = fabsf(x);
    float big = (float)(ax > 88.0f);             /* (not fminf: GCC does not vectorise it) */
    float e = 1.0f / wv_expf(ax - big * ax + big * 88.0f);
    float r = 1.0f / (1.0f + e);
    float pos = (float)(x >= 0.0f);
    return (pos * r + (1.0f - pos) * e * r) + (x - x);
}

static inline double wv_sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

#endif
