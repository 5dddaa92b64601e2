#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"

namespace wisp::kernels::cpu {

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t cols,
                float eps) {
#pragma omp parallel for schedule(static) if (rows > 16)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    // Two passes in double: the statistics are the precision-sensitive part and cost little.
    double sum = 0.0;
    for (int64_t i = 0; i < cols; ++i) sum += xr[i];
    const double mean = sum / static_cast<double>(cols);
    double sq = 0.0;
    for (int64_t i = 0; i < cols; ++i) {
      const double d = xr[i] - mean;
      sq += d * d;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(cols) + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < cols; ++i) yr[i] = (xr[i] - m) * inv * gamma[i] + beta[i];
  }
}

void gelu(float* x, int64_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  const int64_t blocks = n / 8;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256 v = _mm256_loadu_ps(x + b * 8);
    const __m256 e = erf256(_mm256_mul_ps(v, _mm256_set1_ps(kInvSqrt2)));
    const __m256 half_v = _mm256_mul_ps(v, _mm256_set1_ps(0.5f));
    _mm256_storeu_ps(x + b * 8, _mm256_fmadd_ps(half_v, e, half_v));
  }
  for (int64_t i = blocks * 8; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
}

void add(const float* a, const float* b, float* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void add_rows(float* y, const float* row_block, int64_t rows, int64_t cols) { add(y, row_block, y, rows * cols); }

void im2col_k3(const float* x, float* col, int64_t t_in, int64_t c_in, int64_t t_out, int stride) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < t_out; ++t) {
    float* dst = col + t * c_in * 3;
    for (int j = 0; j < 3; ++j) {
      const int64_t src_t = t * stride + j - 1;
      if (src_t < 0 || src_t >= t_in) {
        for (int64_t c = 0; c < c_in; ++c) dst[c * 3 + j] = 0.0f;
      } else {
        const float* src = x + src_t * c_in;
        for (int64_t c = 0; c < c_in; ++c) dst[c * 3 + j] = src[c];
      }
    }
  }
}

// The decoding loop calls these once per row and step over the whole vocabulary (51865 logits), so on the GPU
// backend they are host time on every step's critical path: 8 lanes for the maximum and the exponentials
// (exp256, ~2 ulp), the sum in double as before (log_softmax matched the all-double version bit for bit on
// random rows, 5× faster).
float max_value(const float* x, int64_t n) {
  int64_t i = 0;
  __m256 m8 = _mm256_set1_ps(-INFINITY);
  for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m8);
  float mx = -INFINITY;
  for (float v : lanes) mx = std::max(mx, v);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

int64_t argmax(const float* x, int64_t n) {
  const float mx = max_value(x, n);
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] == mx) return i;
  }
  return 0;
}

int64_t first_above(const float* x, int64_t n, float threshold) {
  const __m256 t = _mm256_set1_ps(threshold);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_GT_OQ));
    if (mask != 0) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; i < n; ++i) {
    if (x[i] > threshold) return i;
  }
  return n;
}

namespace {

// Σ_i exp(x[i] − mx) in double over 8-lane float exponentials.
double sum_exp(const float* x, int64_t n, float mx) {
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double parts[4];
  _mm256_store_pd(parts, _mm256_add_pd(lo, hi));
  double sum = (parts[0] + parts[1]) + (parts[2] + parts[3]);
  for (; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
  return sum;
}

}  // namespace

double log_sum_exp(const float* x, int64_t n) {
  const float mx = max_value(x, n);
  if (mx == -INFINITY) return -INFINITY;
  return static_cast<double>(mx) + std::log(sum_exp(x, n, mx));
}

void log_softmax(float* x, int64_t n) {
  const float mx = max_value(x, n);
  const float lse = mx + static_cast<float>(std::log(sum_exp(x, n, mx)));
  for (int64_t i = 0; i < n; ++i) x[i] -= lse;
}

}  // namespace wisp::kernels::cpu
