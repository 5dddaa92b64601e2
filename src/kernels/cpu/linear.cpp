#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_kernels.h"

namespace wisp::kernels::cpu {

namespace {

// Rows of x handled together by the GEMV path: each weight row is loaded once for all of them (a decode
// step of 5 beams or samples reads the weights once).
constexpr int64_t kGemvRows = 8;
// Above this many rows the blocked convert-then-BLAS path wins (weights are reused enough).
constexpr int64_t kGemvMaxM = 8;
// Rows of w converted to f32 per BLAS call: 256 × k floats stay within the L2/L3 caches.
constexpr int64_t kBlockN = 256;

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}

// y[r, j] = dot(x[r, :k], w[j, :k]) for r < Rows, j in [n0, n1). Rows is a template parameter so the
// accumulators stay in registers; each row's sum is formed in the same order whatever Rows is.
template <int Rows>
void gemv_f16_rows(const float* x, const uint16_t* w, const float* bias, float* y, int64_t n, int64_t k, int64_t n0,
                   int64_t n1) {
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t j = n0; j < n1; ++j) {
    const uint16_t* wj = w + j * k;
    __m256 acc[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < k8; i += 8) {
      const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wj + i)));
      for (int r = 0; r < Rows; ++r) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * k + i), acc[r]);
    }
    for (int r = 0; r < Rows; ++r) {
      float s = hsum(acc[r]);
      for (int64_t i = k8; i < k; ++i) s += core::half_to_float(wj[i]) * x[r * k + i];
      y[r * n + j] = s + (bias ? bias[j] : 0.0f);
    }
  }
}

// The same for rows <= kGemvRows.
void gemv_f16_block(const float* x, const uint16_t* w, const float* bias, float* y, int64_t rows, int64_t n, int64_t k,
                    int64_t n0, int64_t n1) {
  switch (rows) {
    case 1:
      return gemv_f16_rows<1>(x, w, bias, y, n, k, n0, n1);
    case 2:
      return gemv_f16_rows<2>(x, w, bias, y, n, k, n0, n1);
    case 3:
      return gemv_f16_rows<3>(x, w, bias, y, n, k, n0, n1);
    case 4:
      return gemv_f16_rows<4>(x, w, bias, y, n, k, n0, n1);
    case 5:
      return gemv_f16_rows<5>(x, w, bias, y, n, k, n0, n1);
    case 6:
      return gemv_f16_rows<6>(x, w, bias, y, n, k, n0, n1);
    case 7:
      return gemv_f16_rows<7>(x, w, bias, y, n, k, n0, n1);
    default:
      return gemv_f16_rows<8>(x, w, bias, y, n, k, n0, n1);
  }
}

void add_bias(float* y, const float* bias, int64_t m, int64_t n) {
  if (!bias) return;
#pragma omp parallel for schedule(static) if (m * n > 65536)
  for (int64_t r = 0; r < m; ++r) {
    float* yr = y + r * n;
    for (int64_t j = 0; j < n; ++j) yr[j] += bias[j];
  }
}

void half_rows_to_float(const uint16_t* src, float* dst, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < count; ++i) dst[i] = core::half_to_float(src[i]);
}

}  // namespace

void linear_f32(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n, int64_t k) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
              1.0f, x, static_cast<int>(k), w, static_cast<int>(k), 0.0f, y, static_cast<int>(n));
  add_bias(y, bias, m, n);
}

void linear_f16w(const float* x, const uint16_t* w, const float* bias, float* y, int64_t m, int64_t n, int64_t k) {
  if (m <= kGemvMaxM) {
    for (int64_t r0 = 0; r0 < m; r0 += kGemvRows) {
      const int64_t rows = std::min(kGemvRows, m - r0);
      // Chunks of 64 output rows balance the threads without false sharing on y.
      const int64_t chunks = (n + 63) / 64;
#pragma omp parallel for schedule(static)
      for (int64_t c = 0; c < chunks; ++c) {
        gemv_f16_block(x + r0 * k, w, bias, y + r0 * n, rows, n, k, c * 64, std::min(n, (c + 1) * 64));
      }
    }
    return;
  }
  std::vector<float> block(static_cast<size_t>(kBlockN * k));
  for (int64_t n0 = 0; n0 < n; n0 += kBlockN) {
    const int64_t nb = std::min(kBlockN, n - n0);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < nb; ++j) half_rows_to_float(w + (n0 + j) * k, block.data() + j * k, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(nb), static_cast<int>(k),
                1.0f, x, static_cast<int>(k), block.data(), static_cast<int>(k), 0.0f, y + n0, static_cast<int>(n));
  }
  add_bias(y, bias, m, n);
}

}  // namespace wisp::kernels::cpu
