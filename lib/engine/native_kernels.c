// Batch-norm passes for the onnxruntime backend, on the OpenMP threads that oneDNN already runs on
// (both link the one GNU OpenMP runtime, so its team is shared; the wasm kernel threads would compete
// with it for the cores). native_kernels.ts compiles this file with the system's C compiler and loads
// it; without one, batch_norm_kernel.ts keeps the forward on the SIMD kernels and the gradient on oneDNN.
//
// Every function computes bit for bit what its namesake in simd_kernels.wat computes: the same float32
// operations in the same order per channel (no contraction into FMA: -ffp-contract=off), sums over
// blocks of 16 rows in float32 added into float64 totals, one total per part of rows, laid out as the
// wasm kernels lay them out (channel j's sum at (j / 4) * 8 + j % 4, its second sum 4 further).
// Arrays are channels last: rows of c floats.
#include <stddef.h>
#include <stdint.h>

#define BLOCK 16

// Where channel j's first sum goes in a part's float64 totals.
static inline size_t sum_at(size_t j) { return (j >> 2) * 8 + (j & 3); }

// Adds one block's float32 sums into the part's float64 totals.
static void flush(const float *restrict s, const float *restrict q, double *restrict acc, size_t c) {
  for (size_t j = 0; j < c; j++) {
    acc[sum_at(j)] += (double)s[j];
    acc[sum_at(j) + 4] += (double)q[j];
  }
}

// Batch-norm statistics of one part of `rows` rows: sums of (x - shift) and of its square (moments).
static void moments_part(const float *restrict x, size_t rows, size_t c, const float *restrict shift,
                         double *restrict acc, float *restrict s, float *restrict q) {
  for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {
    size_t n = rows - r0 < BLOCK ? rows - r0 : BLOCK;
    for (size_t j = 0; j < c; j++) s[j] = q[j] = 0.0f;
    for (size_t r = r0; r < r0 + n; r++) {
      const float *xr = x + r * c;
      for (size_t j = 0; j < c; j++) {
        float v = xr[j] - shift[j];
        s[j] += v;
        q[j] += v * v;
      }
    }
    flush(s, q, acc, c);
  }
}

// The two sums of the batch-norm gradient over one part (bn_grad_sums): of g and of g * (x - mean), where g
// is dy where the recomputed pre-activation lies in (0, hi) (masked), else dy.
static void grad_sums_part(const float *restrict dy, const float *restrict x, size_t rows, size_t c,
                           const float *restrict mean, const float *restrict scale, const float *restrict beta,
                           float hi, int masked, double *restrict acc, float *restrict s, float *restrict q) {
  for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {
    size_t n = rows - r0 < BLOCK ? rows - r0 : BLOCK;
    for (size_t j = 0; j < c; j++) s[j] = q[j] = 0.0f;
    for (size_t r = r0; r < r0 + n; r++) {
      const float *xr = x + r * c, *dyr = dy + r * c;
      for (size_t j = 0; j < c; j++) {
        float xc = xr[j] - mean[j];
        float v = beta[j] + scale[j] * xc;
        float g = (!masked || (v > 0.0f && v < hi)) ? dyr[j] : 0.0f;
        s[j] += g;
        q[j] += g * xc;
      }
    }
    flush(s, q, acc, c);
  }
}

// Statistics over `parts` parts of rows (part i: rows starting at starts[i], counts[i] of them), one thread
// per part; part i's totals at acc + 2 * c * i (zeroed by the caller).
void ssd_moments(const float *restrict x, int32_t c, const float *restrict shift, double *restrict acc,
                 const int32_t *starts, const int32_t *counts, int32_t parts) {
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int32_t i = 0; i < parts; i++) {
    float s[2 * (size_t)c]; // this block's float32 sums, then their squares' (c is at most a few thousand)
    moments_part(x + (size_t)starts[i] * c, (size_t)counts[i], (size_t)c, shift, acc + 2 * (size_t)c * i, s, s + c);
  }
}

// One row of bn_apply into yr.
static inline void apply_row(const float *restrict xr, float *restrict yr, int32_t c, const float *restrict mean,
                             const float *restrict scale, const float *restrict beta, float lo, float hi) {
  for (int32_t j = 0; j < c; j++) {
    float v = beta[j] + scale[j] * (xr[j] - mean[j]);
    v = v < lo ? lo : v;
    yr[j] = hi < v ? hi : v;
  }
}

// y = min(max(beta + scale * (x - mean), lo), hi) over `rows` rows (bn_apply; NaN passes through).
void ssd_bn_apply(const float *restrict x, float *restrict y, int32_t rows, int32_t c, const float *restrict mean,
                  const float *restrict scale, const float *restrict beta, float lo, float hi) {
#pragma omp parallel for schedule(static)
  for (int32_t r = 0; r < rows; r++) apply_row(x + (size_t)r * c, y + (size_t)r * c, c, mean, scale, beta, lo, hi);
}

// The gradient's sums over parts, as ssd_moments.
void ssd_bn_grad_sums(const float *restrict dy, const float *restrict x, int32_t c, const float *restrict mean,
                      const float *restrict scale, const float *restrict beta, float hi, int32_t masked,
                      double *restrict acc, const int32_t *starts, const int32_t *counts, int32_t parts) {
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int32_t i = 0; i < parts; i++) {
    float s[2 * (size_t)c];
    size_t at = (size_t)starts[i] * c;
    grad_sums_part(dy + at, x + at, (size_t)counts[i], (size_t)c, mean, scale, beta, hi, masked,
                   acc + 2 * (size_t)c * i, s, s + c);
  }
}

// One row of bn_grad_dx into dxr.
static inline void dx_row(const float *restrict dyr, const float *restrict xr, float *restrict dxr, int32_t c,
                          const float *restrict mean, const float *restrict scale, const float *restrict beta,
                          const float *restrict k, const float *restrict a, const float *restrict b, float hi,
                          int32_t masked) {
  for (int32_t j = 0; j < c; j++) {
    float xc = xr[j] - mean[j];
    float v = beta[j] + scale[j] * xc;
    float g = (!masked || (v > 0.0f && v < hi)) ? dyr[j] : 0.0f;
    dxr[j] = k[j] * ((g - a[j]) - b[j] * xc);
  }
}

// dx = k * ((g - a) - b * (x - mean)) over `rows` rows, g as in ssd_bn_grad_sums (bn_grad_dx).
void ssd_bn_grad_dx(const float *restrict dy, const float *restrict x, float *restrict dx, int32_t rows, int32_t c,
                    const float *restrict mean, const float *restrict scale, const float *restrict beta,
                    const float *restrict k, const float *restrict a, const float *restrict b, float hi,
                    int32_t masked) {
#pragma omp parallel for schedule(static)
  for (int32_t r = 0; r < rows; r++) {
    size_t at = (size_t)r * c;
    dx_row(dy + at, x + at, dx + at, c, mean, scale, beta, k, a, b, hi, masked);
  }
}
