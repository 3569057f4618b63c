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
#include <omp.h>

#define BLOCK 16
// The passes ask for the rows this far ahead of the one they read (prefetch_rows).
#define PREFETCH_ROWS 32

// Where channel j's first sum goes in a part's float64 totals.
static inline size_t sum_at(size_t j) { return (j >> 2) * 8 + (j & 3); }

// Adds one block's float32 sums into the part's float64 totals (four channels' sums, then their second sums).
static void flush(const float *restrict s, const float *restrict q, double *restrict acc, size_t c) {
  size_t whole = c - c % 4;
  for (size_t j = 0; j < whole; j += 4) {
    double *a = acc + 2 * j;
    for (size_t i = 0; i < 4; i++) a[i] += (double)s[j + i];
    for (size_t i = 0; i < 4; i++) a[4 + i] += (double)q[j + i];
  }
  for (size_t j = whole; j < c; j++) {
    acc[sum_at(j)] += (double)s[j];
    acc[sum_at(j) + 4] += (double)q[j];
  }
}

// The sums run over chunks of 16 channels, a block of rows at a time, with the sums in registers; each channel
// still adds its rows in row order, so the bits do not change. Over every channel of a row at once the sums
// lived in memory (the statistics of MobileNetV2's 90000 x 96 rows: 1.19 -> 0.96 ms).
#define CHUNK 16

// Asks for `floats` floats from p on into the cache. Without it the passes waited on memory: on one thread a
// float at 96 channels took 2.6x as long as at 32, and with the rows PREFETCH_ROWS ahead asked for, the
// gradient's sums over MobileNetV2's 90000 x 96 rows ran 2.85 -> 1.51 ms and its statistics 0.91 -> 0.48 ms
// (two threads, a development run).
static inline void prefetch_rows(const float *p, size_t floats) {
  const char *b = (const char *)p;
  for (size_t i = 0; i < floats * 4; i += 64) __builtin_prefetch(b + i, 0, 3);
}

// One element of the statistics: adds x - shift and its square.
static inline void moment_one(float x, float shift, float *s, float *q) {
  float v = x - shift;
  *s += v;
  *q += v * v;
}

// One element of the gradient's sums: g is dy where the recomputed pre-activation lies in (0, hi) (masked),
// else dy; adds g and g * (x - mean).
static inline void grad_sum_one(float dy, float x, float mean, float scale, float beta, float hi, int masked,
                                float *s, float *q) {
  float xc = x - mean;
  float v = beta + scale * xc;
  float g = (!masked || (v > 0.0f && v < hi)) ? dy : 0.0f;
  *s += g;
  *q += g * xc;
}

#ifdef __AVX512F__
#include <immintrin.h>

// 16 channels of `n` rows (row stride c): s = sum of (x - shift), q = sum of its square, in row order.
static inline void moments_chunk(const float *x, size_t n, size_t c, const float *shift, float *s, float *q) {
  __m512 sh = _mm512_loadu_ps(shift), sv = _mm512_setzero_ps(), qv = _mm512_setzero_ps();
  for (size_t r = 0; r < n; r++) {
    __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + r * c), sh);
    sv = _mm512_add_ps(sv, v);
    qv = _mm512_add_ps(qv, _mm512_mul_ps(v, v));
  }
  _mm512_storeu_ps(s, sv);
  _mm512_storeu_ps(q, qv);
}

// 16 channels of the gradient's two sums over `n` rows, as grad_sum_one in row order.
static inline void grad_sums_chunk(const float *dy, const float *x, size_t n, size_t c, const float *mean,
                                   const float *scale, const float *beta, float hi, int masked, float *s, float *q) {
  __m512 m = _mm512_loadu_ps(mean), k = _mm512_loadu_ps(scale), b = _mm512_loadu_ps(beta);
  __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(hi), sv = zero, qv = zero;
  for (size_t r = 0; r < n; r++) {
    __m512 xc = _mm512_sub_ps(_mm512_loadu_ps(x + r * c), m), g = _mm512_loadu_ps(dy + r * c);
    if (masked) {
      __m512 v = _mm512_add_ps(b, _mm512_mul_ps(k, xc));
      __mmask16 in = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ) & _mm512_cmp_ps_mask(v, top, _CMP_LT_OQ);
      g = _mm512_maskz_mov_ps(in, g);
    }
    sv = _mm512_add_ps(sv, g);
    qv = _mm512_add_ps(qv, _mm512_mul_ps(g, xc));
  }
  _mm512_storeu_ps(s, sv);
  _mm512_storeu_ps(q, qv);
}
#else
static inline void moments_chunk(const float *x, size_t n, size_t c, const float *shift, float *s, float *q) {
  float sv[CHUNK] = {0}, qv[CHUNK] = {0};
  for (size_t r = 0; r < n; r++) {
    for (size_t j = 0; j < CHUNK; j++) moment_one(x[r * c + j], shift[j], &sv[j], &qv[j]);
  }
  for (size_t j = 0; j < CHUNK; j++) s[j] = sv[j], q[j] = qv[j];
}

static inline void grad_sums_chunk(const float *dy, const float *x, size_t n, size_t c, const float *mean,
                                   const float *scale, const float *beta, float hi, int masked, float *s, float *q) {
  float sv[CHUNK] = {0}, qv[CHUNK] = {0};
  for (size_t r = 0; r < n; r++) {
    for (size_t j = 0; j < CHUNK; j++) {
      grad_sum_one(dy[r * c + j], x[r * c + j], mean[j], scale[j], beta[j], hi, masked, &sv[j], &qv[j]);
    }
  }
  for (size_t j = 0; j < CHUNK; j++) s[j] = sv[j], q[j] = qv[j];
}
#endif

// Batch-norm statistics of one part of `rows` rows: sums of (x - shift) and of its square (moments).
static void moments_part(const float *restrict x, size_t rows, size_t c, const float *restrict shift,
                         double *restrict acc, float *restrict s, float *restrict q) {
  size_t whole = c - c % CHUNK;
  for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {
    size_t n = rows - r0 < BLOCK ? rows - r0 : BLOCK;
    if (r0 + PREFETCH_ROWS + BLOCK <= rows) prefetch_rows(x + (r0 + PREFETCH_ROWS) * c, BLOCK * c);
    for (size_t j0 = 0; j0 < whole; j0 += CHUNK) moments_chunk(x + r0 * c + j0, n, c, shift + j0, s + j0, q + j0);
    for (size_t j = whole; j < c; j++) s[j] = q[j] = 0.0f;
    for (size_t r = r0; r < r0 + n; r++) {
      const float *xr = x + r * c;
      for (size_t j = whole; j < c; j++) moment_one(xr[j], shift[j], &s[j], &q[j]);
    }
    flush(s, q, acc, c);
  }
}

// The two sums of the batch-norm gradient over one part (bn_grad_sums): of g and of g * (x - mean), by chunks
// of channels as moments_part.
static void grad_sums_part(const float *restrict dy, const float *restrict x, size_t rows, size_t c,
                           const float *restrict mean, const float *restrict scale, const float *restrict beta,
                           float hi, int masked, double *restrict acc, float *restrict s, float *restrict q) {
  size_t whole = c - c % CHUNK;
  for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {
    size_t n = rows - r0 < BLOCK ? rows - r0 : BLOCK;
    if (r0 + PREFETCH_ROWS + BLOCK <= rows) {
      prefetch_rows(x + (r0 + PREFETCH_ROWS) * c, BLOCK * c);
      prefetch_rows(dy + (r0 + PREFETCH_ROWS) * c, BLOCK * c);
    }
    for (size_t j0 = 0; j0 < whole; j0 += CHUNK) {
      size_t at = r0 * c + j0;
      grad_sums_chunk(dy + at, x + at, n, c, mean + j0, scale + j0, beta + j0, hi, masked, s + j0, q + j0);
    }
    for (size_t j = whole; j < c; j++) s[j] = q[j] = 0.0f;
    for (size_t r = r0; r < r0 + n; r++) {
      const float *xr = x + r * c, *dyr = dy + r * c;
      for (size_t j = whole; j < c; j++) {
        grad_sum_one(dyr[j], xr[j], mean[j], scale[j], beta[j], hi, masked, &s[j], &q[j]);
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
  for (int32_t r = 0; r < rows; r++) {
    if (r + PREFETCH_ROWS < rows) prefetch_rows(x + (size_t)(r + PREFETCH_ROWS) * c, (size_t)c);
    apply_row(x + (size_t)r * c, y + (size_t)r * c, c, mean, scale, beta, lo, hi);
  }
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

// One element of bn_grad_dx: k * ((g - a) - b * (x - mean)), g as in grad_sum_one.
static inline float dx_one(float dy, float x, float mean, float scale, float beta, float k, float a, float b,
                           float hi, int32_t masked) {
  float xc = x - mean;
  float v = beta + scale * xc;
  float g = (!masked || (v > 0.0f && v < hi)) ? dy : 0.0f;
  return k * ((g - a) - b * xc);
}

// One row of bn_grad_dx into dxr.
static inline void dx_row(const float *restrict dyr, const float *restrict xr, float *restrict dxr, int32_t c,
                          const float *restrict mean, const float *restrict scale, const float *restrict beta,
                          const float *restrict k, const float *restrict a, const float *restrict b, float hi,
                          int32_t masked) {
  for (int32_t j = 0; j < c; j++) {
    dxr[j] = dx_one(dyr[j], xr[j], mean[j], scale[j], beta[j], k[j], a[j], b[j], hi, masked);
  }
}

// dx_row with dx written over dy (`io`): each element is read before it is written.
static inline void dx_row_in_place(float *restrict io, const float *restrict xr, int32_t c,
                                   const float *restrict mean, const float *restrict scale,
                                   const float *restrict beta, const float *restrict k, const float *restrict a,
                                   const float *restrict b, float hi, int32_t masked) {
  for (int32_t j = 0; j < c; j++) {
    io[j] = dx_one(io[j], xr[j], mean[j], scale[j], beta[j], k[j], a[j], b[j], hi, masked);
  }
}

// dx = k * ((g - a) - b * (x - mean)) over `rows` rows, g as in ssd_bn_grad_sums (bn_grad_dx). dx may be dy
// itself (the caller frees dy after): writing over it saves reading a fresh buffer into the cache before
// writing it, a fifth of the pass's memory traffic on maps too large for the cache.
void ssd_bn_grad_dx(const float *dy, const float *restrict x, float *dx, int32_t rows, int32_t c,
                    const float *restrict mean, const float *restrict scale, const float *restrict beta,
                    const float *restrict k, const float *restrict a, const float *restrict b, float hi,
                    int32_t masked) {
  int in_place = dx == dy;
#pragma omp parallel for schedule(static)
  for (int32_t r = 0; r < rows; r++) {
    size_t at = (size_t)r * c;
    if (r + PREFETCH_ROWS < rows) {
      prefetch_rows(dy + at + (size_t)PREFETCH_ROWS * c, (size_t)c);
      prefetch_rows(x + at + (size_t)PREFETCH_ROWS * c, (size_t)c);
    }
    if (in_place) dx_row_in_place(dx + at, x + at, c, mean, scale, beta, k, a, b, hi, masked);
    else dx_row(dy + at, x + at, dx + at, c, mean, scale, beta, k, a, b, hi, masked);
  }
}

// simd_kernels.wat's $exp_neg: exp(y) for y <= 0 (Cephes' expf polynomial; y clamped at -87, NaN kept).
static inline float exp_neg(float y) {
  y = y < -87.0f ? -87.0f : y;
  float k = __builtin_rintf(y * 1.44269504088896341f); // f32x4.nearest: to nearest, ties to even
  float r = (y - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = ((p * r) * r + r) + 1.0f;
  union { int32_t i; float f; } two = {.i = ((int32_t)k + 127) << 23}; // 2^k through the exponent bits
  return p * two.f;
}

// simd_kernels.wat's $log_1_2: log(u) for 1 <= u <= 2 (Cephes' logf).
static inline float log_1_2(float u) {
  int big = u > 1.41421356237309505f;
  float e = big ? 1.0f : 0.0f;
  float f = (big ? u * 0.5f : u) - 1.0f;
  float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f + -1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f + -1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f + -1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f + -2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  p = (p * f) * z;
  p = p + e * -2.12194440e-4f;
  p = p - z * 0.5f;
  return (f + p) + e * 0.693359375f;
}

// simd_kernels.wat's focal over one part of n floats (a multiple of 4): the gradient into g, the loss's
// float32 sums per lane (element j of a block in lane j % 4) over blocks of 64 floats into acc[4].
static void focal_part(const float *restrict x, const float *restrict z, float *restrict g, size_t n, float alpha,
                       double *restrict acc) {
  const float nalpha = 1.0f - alpha;
  float t[64];
  for (size_t b0 = 0; b0 < n; b0 += 64) {
    size_t m = n - b0 < 64 ? n - b0 : 64;
    const float *xb = x + b0, *zb = z + b0;
    float *gb = g + b0;
    for (size_t j = 0; j < m; j++) {
      float xv = xb[j], zv = zb[j];
      float e = exp_neg(-__builtin_fabsf(xv));
      float u = 1.0f + e, d = u - 1.0f;
      float l = d == 0.0f ? e : log_1_2(u) * (e / d);
      float mx = xv > 0.0f ? xv : (xv != xv ? xv : 0.0f); // f32x4.max(x, 0): NaN stays, -0 gives +0
      float bce = (mx - xv * zv) + l;
      int ge = xv >= 0.0f;
      float a = 1.0f / u, b = e / u;
      float p = ge ? a : b, pc = ge ? b : a;
      float zc = 1.0f - zv;
      float q = zv * pc + zc * p, qc = zv * p + zc * pc;
      float mq = q * q;
      t[j] = (mq * (zv * alpha + zc * nalpha)) * bce;
      gb[j] = ((zv - nalpha) * mq) * (((qc * bce) * -2.0f) - q);
    }
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (size_t j = 0; j < m; j += 4)
      for (size_t l = 0; l < 4; l++) s[l] += t[j + l];
    for (size_t l = 0; l < 4; l++) acc[l] += (double)s[l];
  }
}

// Sigmoid focal loss (gamma 2) and its gradient over parts of groups of four floats (part i: groups from
// starts[i], counts[i] of them), one thread per part; part i's lane sums at acc + 4 i (zeroed by the caller).
void ssd_focal(const float *restrict x, const float *restrict z, float *restrict g, float alpha,
               double *restrict acc, const int32_t *starts, const int32_t *counts, int32_t parts) {
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int32_t i = 0; i < parts; i++) {
    size_t at = 4 * (size_t)starts[i];
    focal_part(x + at, z + at, g + at, 4 * (size_t)counts[i], alpha, acc + 4 * (size_t)i);
  }
}

// The step of one value: s = g (* sens) (+ w wd) (* scale), each product as its own float32 operation.
static inline float step_of(float g, float w, float wd, float scale, float sens, int32_t f) {
  float s = g;
  if (f & 1) s = s * sens;
  if (f & 2) s = s + w * wd;
  if (f & 4) s = s * scale;
  return s;
}

// One tensor's update in place: v' over v, w' over w (flag 8: no w, v' alone: a moving average, no decay).
static void update_in_place(float *restrict w, float *restrict v, const float *restrict gr, int64_t from, int64_t to,
                            float m, float wd, float scale, float lr, float sens, int32_t f) {
  if (f & 8) {
    for (int64_t i = from; i < to; i++) v[i] = v[i] * m + step_of(gr[i], 0.0f, 0.0f, scale, sens, f & ~2);
    return;
  }
  for (int64_t i = from; i < to; i++) {
    float nv = v[i] * m + step_of(gr[i], w[i], wd, scale, sens, f);
    v[i] = nv;
    w[i] = w[i] - nv * lr;
  }
}

// Momentum updates of `n` tensors in one call (momentum_kernel.ts). Tensor k: float offsets into `heap` of
// w, v, g, w', v' at at[5k..5k+4], sizes[k] floats, constants m, wd, scale, lr, sens at c[5k..5k+4] and
// flags[k] (1: times sens, 2: plus w wd, 4: times scale). Per value, as simd_kernels.wat's momentum:
// s = g (* sens) (+ w wd) (* scale), v' = v m + s, w' = w - v' lr. The threads split all values evenly.
// Flag 16: in place, w' and v' over w and v (their own offsets are ignored); with 8 as well, v' alone.
void ssd_momentum_many(float *heap, int32_t n, const uint32_t *at, const int32_t *sizes, const float *c,
                       const int32_t *flags) {
  int64_t total = 0;
  for (int32_t k = 0; k < n; k++) total += sizes[k];
#pragma omp parallel
  {
    int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t lo = total * t / threads, hi = total * (t + 1) / threads, start = 0;
    for (int32_t k = 0; k < n && start < hi; start += sizes[k], k++) {
      int64_t from = lo > start ? lo - start : 0, to = hi - start < sizes[k] ? hi - start : sizes[k];
      if (from >= to) continue;
      const float *w = heap + at[5 * k], *v = heap + at[5 * k + 1], *gr = heap + at[5 * k + 2];
      float *wo = heap + at[5 * k + 3], *vo = heap + at[5 * k + 4];
      const float m = c[5 * k], wd = c[5 * k + 1], scale = c[5 * k + 2], lr = c[5 * k + 3], sens = c[5 * k + 4];
      const int32_t f = flags[k];
      if (f & 16) { // in place: w' at w, v' at v
        update_in_place(heap + at[5 * k], heap + at[5 * k + 1], gr, from, to, m, wd, scale, lr, sens, f);
        continue;
      }
      for (int64_t i = from; i < to; i++) {
        float nv = v[i] * m + step_of(gr[i], w[i], wd, scale, sens, f);
        vo[i] = nv;
        wo[i] = w[i] - nv * lr;
      }
    }
  }
}

// Per-channel sums of x [rows, c] into out[c]: channel j adds its rows in order, from 0, in float32, as
// tfjs-backend-wasm's Sum does over every axis but the last (it transposes the channels to the front and
// adds each one's values in a row). The threads split the channels at 64-byte lines, so each line is
// read by one of them.
void ssd_channel_sums(const float *restrict x, int32_t rows, int32_t c, float *restrict out) {
#pragma omp parallel
  {
    int32_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    int32_t lines = (c + 15) / 16;
    int32_t lo = 16 * (lines * t / threads), hi = 16 * (lines * (t + 1) / threads);
    if (hi > c) hi = c;
    if (lo < hi) {
      float s[hi - lo];
      for (int32_t j = 0; j < hi - lo; j++) s[j] = 0.0f;
      for (size_t r = 0; r < (size_t)rows; r++) {
        const float *xr = x + r * c + lo;
        for (int32_t j = 0; j < hi - lo; j++) s[j] += xr[j];
      }
      for (int32_t j = 0; j < hi - lo; j++) out[lo + j] = s[j];
    }
  }
}

// out = a + b over n floats (tfjs's Add of two tensors of one shape: exact, so any order gives its bits).
void ssd_add(const float *a, const float *b, float *out, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
