/* Fused forward and backward passes of bias-free chains with an elementwise activation, one run
 * at a time (implicitlab.train.fused_chain builds and calls this; the maths is in chain_body.h). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef IMPLICITLAB_MVEC /* glibc ≥ 2.35 on x86_64: vector variants of these functions in libmvec */
#pragma omp declare simd notinbranch
extern double erfc(double);
#pragma omp declare simd notinbranch
extern double exp(double);
#pragma omp declare simd notinbranch
extern double tanh(double);
#pragma omp declare simd notinbranch
extern double log1p(double);
#pragma omp declare simd notinbranch
extern double log(double);
#pragma omp declare simd notinbranch
extern float erfcf(float);
#pragma omp declare simd notinbranch
extern float expf(float);
#pragma omp declare simd notinbranch
extern float tanhf(float);
#pragma omp declare simd notinbranch
extern float log1pf(float);
#pragma omp declare simd notinbranch
extern float logf(float);
#endif

#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_GELU 2
#define ACT_SMOOTH_RELU 3
#define ACT_TANH 4
#define LOSS_SQUARE 0
#define LOSS_EXP 1
#define LOSS_LOGISTIC 2
#define LOSS_CE 3
#define INV_SQRT_2PI 0.39894228040143267793994605993438

int implicitlab_kernel_version(void) { return 2; }

#define REAL double
#define V 8 /* runs per 512-bit vector */
#define FN(name) name##_f64
#define ERFC erfc
#define EXP exp
#define TANH tanh
#define LOG1P log1p
#define LOG log
#define FABS fabs
#include "chain_body.h"
#undef REAL
#undef V
#undef FN
#undef ERFC
#undef EXP
#undef TANH
#undef LOG1P
#undef LOG
#undef FABS

#define REAL float
#define V 16
#define FN(name) name##_f32
#define ERFC erfcf
#define EXP expf
#define TANH tanhf
#define LOG1P log1pf
#define LOG logf
#define FABS fabsf
#include "chain_body.h"

/* The activation pass alone, for the benchmark's floor: ``iterations`` times, σ and σ′ of the same m
 * entries z (copied into a first, so every pass sees the same arguments; m small enough to stay in cache). */
void activation_pass_f64(int act, double eps, int64_t m, const double* z, double* a, double* s, int64_t iterations) {
    for (int64_t it = 0; it < iterations; it++) {
        for (int64_t i = 0; i < m; i++) a[i] = z[i];
        activate_f64(act, eps * eps, m, a, s);
    }
}
