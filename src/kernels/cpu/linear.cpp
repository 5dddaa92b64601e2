#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/quantize.h"

namespace wisp::kernels::cpu {

namespace {

// Rows of x handled together by the GEMV path: each weight row is loaded once for all of them (a decode
// step of 5 beams or samples reads the weights once).
constexpr int64_t kGemvRows = 8;
// Above this many rows the blocked convert-then-BLAS path wins (weights are reused enough).
constexpr int64_t kGemvMaxM = 8;
// Rows of w converted to f32 per BLAS call: 256 × k floats stay within the L2/L3 caches.
constexpr int64_t kBlockN = 256;
// Output rows per GEMV work item: balances the threads without false sharing on y.
constexpr int64_t kGemvChunk = 64;

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}

// Calls f.operator()<Rows>() with Rows = rows (1..kGemvRows) as a compile-time constant, so the row kernels
// keep their accumulators in registers.
template <class F>
void with_rows(int64_t rows, F&& f) {
  switch (rows) {
    case 1:
      return f.template operator()<1>();
    case 2:
      return f.template operator()<2>();
    case 3:
      return f.template operator()<3>();
    case 4:
      return f.template operator()<4>();
    case 5:
      return f.template operator()<5>();
    case 6:
      return f.template operator()<6>();
    case 7:
      return f.template operator()<7>();
    default:
      return f.template operator()<8>();
  }
}

// The small-m path shared by the weight types: blocks of up to kGemvRows rows of x, the output rows split
// across the threads. rows_kernel(x_block, y_block, rows, n0, n1) computes y_block[r, j] for r < rows,
// j in [n0, n1).
template <class RowsKernel>
void gemv(const float* x, float* y, int64_t m, int64_t n, int64_t k, RowsKernel&& rows_kernel) {
  for (int64_t r0 = 0; r0 < m; r0 += kGemvRows) {
    const int64_t rows = std::min(kGemvRows, m - r0);
    const int64_t chunks = (n + kGemvChunk - 1) / kGemvChunk;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      rows_kernel(x + r0 * k, y + r0 * n, rows, c * kGemvChunk, std::min(n, (c + 1) * kGemvChunk));
    }
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

// The large-m path shared by the weight types: expand(n0, nb, block) writes rows [n0, n0 + nb) of w as f32
// into block [nb, k]; each block then goes through the BLAS.
template <class Expand>
void blocked_sgemm(const float* x, const float* bias, float* y, int64_t m, int64_t n, int64_t k, Expand&& expand) {
  std::vector<float> block(static_cast<size_t>(kBlockN * k));
  for (int64_t n0 = 0; n0 < n; n0 += kBlockN) {
    const int64_t nb = std::min(kBlockN, n - n0);
    expand(n0, nb, block.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(nb), static_cast<int>(k),
                1.0f, x, static_cast<int>(k), block.data(), static_cast<int>(k), 0.0f, y + n0, static_cast<int>(n));
  }
  add_bias(y, bias, m, n);
}

// y[r, j] = dot(x[r, :k], w[j, :k]) for r < Rows, j in [n0, n1). Each row's sum is formed in the same
// order whatever Rows is.
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

// The same over int8 codes: the codes widen exactly to f32, and the row's scale multiplies the finished
// sum (Σ q·x · s = Σ (q·s)·x), one multiply per output instead of one per weight.
template <int Rows>
void gemv_i8_rows(const float* x, const int8_t* w, const float* scale, const float* bias, float* y, int64_t n,
                  int64_t k, int64_t n0, int64_t n1) {
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t j = n0; j < n1; ++j) {
    const int8_t* wj = w + j * k;
    __m256 acc[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < k8; i += 8) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(wj + i));
      const __m256 wv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
      for (int r = 0; r < Rows; ++r) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * k + i), acc[r]);
    }
    for (int r = 0; r < Rows; ++r) {
      float s = hsum(acc[r]);
      for (int64_t i = k8; i < k; ++i) s += static_cast<float>(wj[i]) * x[r * k + i];
      y[r * n + j] = s * scale[j] + (bias ? bias[j] : 0.0f);
    }
  }
}

// The same over packed int4 codes, 32 columns (16 bytes) per step: the nibbles are split, put back in
// column order (low nibble first), re-centred, widened to f32 and multiplied by the group's scale in
// registers. group is a multiple of 32, so a step never straddles two groups.
template <int Rows>
void gemv_i4_rows(const float* x, const uint8_t* w, const float* scale, const float* bias, float* y, int64_t n,
                  int64_t k, int64_t group, int64_t n0, int64_t n1) {
  const __m128i low_nibble = _mm_set1_epi8(0x0F);
  const __m128i offset = _mm_set1_epi8(8);
  const int64_t groups = k / group;
  for (int64_t j = n0; j < n1; ++j) {
    const uint8_t* wj = w + j * (k / 2);
    const float* sj = scale + j * groups;
    __m256 acc[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < k; i += 32) {
      const __m256 s = _mm256_set1_ps(sj[i / group]);
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wj + i / 2));
      const __m128i lo = _mm_and_si128(b, low_nibble);
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), low_nibble);
      // Columns 0..15 and 16..31 as signed bytes q = u - 8.
      const __m128i c0 = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), offset);
      const __m128i c1 = _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), offset);
      const __m128i parts[4] = {c0, _mm_srli_si128(c0, 8), c1, _mm_srli_si128(c1, 8)};
      for (int p = 0; p < 4; ++p) {
        const __m256 wv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[p])), s);
        for (int r = 0; r < Rows; ++r) {
          acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * k + i + 8 * p), acc[r]);
        }
      }
    }
    for (int r = 0; r < Rows; ++r) y[r * n + j] = hsum(acc[r]) + (bias ? bias[j] : 0.0f);
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
    gemv(x, y, m, n, k, [&](const float* xb, float* yb, int64_t rows, int64_t n0, int64_t n1) {
      with_rows(rows, [&]<int Rows>() { gemv_f16_rows<Rows>(xb, w, bias, yb, n, k, n0, n1); });
    });
    return;
  }
  blocked_sgemm(x, bias, y, m, n, k, [&](int64_t n0, int64_t nb, float* block) {
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < nb; ++j) half_rows_to_float(w + (n0 + j) * k, block + j * k, k);
  });
}

void linear_i8w(const float* x, const int8_t* w, const float* scale, const float* bias, float* y, int64_t m, int64_t n,
                int64_t k) {
  if (m <= kGemvMaxM) {
    gemv(x, y, m, n, k, [&](const float* xb, float* yb, int64_t rows, int64_t n0, int64_t n1) {
      with_rows(rows, [&]<int Rows>() { gemv_i8_rows<Rows>(xb, w, scale, bias, yb, n, k, n0, n1); });
    });
    return;
  }
  blocked_sgemm(x, bias, y, m, n, k,
                [&](int64_t n0, int64_t nb, float* block) { dequantize_i8(w + n0 * k, scale + n0, block, nb, k); });
}

void linear_i4w(const float* x, const uint8_t* w, const float* scale, const float* bias, float* y, int64_t m, int64_t n,
                int64_t k, int64_t group) {
  if (m <= kGemvMaxM) {
    gemv(x, y, m, n, k, [&](const float* xb, float* yb, int64_t rows, int64_t n0, int64_t n1) {
      with_rows(rows, [&]<int Rows>() { gemv_i4_rows<Rows>(xb, w, scale, bias, yb, n, k, group, n0, n1); });
    });
    return;
  }
  blocked_sgemm(x, bias, y, m, n, k, [&](int64_t n0, int64_t nb, float* block) {
    dequantize_i4(w + n0 * (k / 2), scale + n0 * (k / group), block, nb, k, group);
  });
}

}  // namespace wisp::kernels::cpu
