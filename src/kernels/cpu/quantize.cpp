#include "kernels/cpu/quantize.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

// LAPACK (part of OpenBLAS): Cholesky factorisation and the inverse from it, column-major.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info);
}

namespace wisp::kernels::cpu {

namespace {

constexpr float kI8Max = 127.0f;
constexpr float kI4Max = 7.0f;
constexpr int kI4Offset = 8;  // the nibble stores q + 8, so q in [-8, 7] becomes 0..15

float max_abs(const float* w, int64_t count) {
  float m = 0.0f;
  for (int64_t i = 0; i < count; ++i) m = std::max(m, std::fabs(w[i]));
  return m;
}

// round_half_even(w / scale) clamped to [lo, hi]; the default rounding mode of nearbyint is to nearest, ties
// to even. A zero scale (an all-zero row or group) gives code 0 instead of 0/0.
int code(float w, float scale, int lo, int hi) {
  if (scale == 0.0f) return 0;
  return static_cast<int>(std::clamp(std::nearbyint(w / scale), static_cast<float>(lo), static_cast<float>(hi)));
}

}  // namespace

void quantize_i8(const float* w, int8_t* q, float* scale, int64_t n, int64_t k) {
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * k;
    const float s = max_abs(wj, k) / kI8Max;
    scale[j] = s;
    for (int64_t i = 0; i < k; ++i) q[j * k + i] = static_cast<int8_t>(code(wj[i], s, -127, 127));
  }
}

void dequantize_i8(const int8_t* q, const float* scale, float* w, int64_t n, int64_t k) {
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) w[j * k + i] = static_cast<float>(q[j * k + i]) * scale[j];
  }
}

void quantize_i4(const float* w, uint8_t* packed, float* scale, int64_t n, int64_t k, int64_t group) {
  const int64_t groups = k / group;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * k;
    uint8_t* pj = packed + j * (k / 2);
    for (int64_t g = 0; g < groups; ++g) {
      const float s = max_abs(wj + g * group, group) / kI4Max;
      scale[j * groups + g] = s;
      // group is even, so a byte's two columns share the group's scale.
      for (int64_t i = g * group; i < (g + 1) * group; i += 2) {
        const int lo = code(wj[i], s, -8, 7) + kI4Offset;
        const int hi = code(wj[i + 1], s, -8, 7) + kI4Offset;
        pj[i / 2] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
}

void dequantize_i4(const uint8_t* packed, const float* scale, float* w, int64_t n, int64_t k, int64_t group) {
  const int64_t groups = k / group;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* pj = packed + j * (k / 2);
    const float* sj = scale + j * groups;
    float* wj = w + j * k;
    for (int64_t i = 0; i < k; i += 2) {
      const float s = sj[i / group];
      wj[i] = static_cast<float>((pj[i / 2] & 0x0F) - kI4Offset) * s;
      wj[i + 1] = static_cast<float>((pj[i / 2] >> 4) - kI4Offset) * s;
    }
  }
}

namespace {

// U [k, k] row-major, upper: H⁻¹ = Uᵀ·U for H = gram + damp · mean(diag) · I (diagonal 0 → 1). Empty on failure.
std::vector<float> inverse_cholesky_upper(const float* gram, int64_t k, float damp) {
  const int kk = static_cast<int>(k);
  std::vector<double> h(static_cast<size_t>(k * k));
  double mean_diag = 0.0;
  for (int64_t i = 0; i < k; ++i) mean_diag += gram[i * k + i];
  mean_diag /= static_cast<double>(k);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) h[static_cast<size_t>(i * k + j)] = gram[i * k + j];
    double& d = h[static_cast<size_t>(i * k + i)];
    if (d == 0.0) d = 1.0;
    d += damp * mean_diag;
  }
  // H is symmetric, so row- and column-major are the same matrix; each call works on the triangle it names.
  int info = 0;
  dpotrf_("L", &kk, h.data(), &kk, &info);
  if (info != 0) return {};
  dpotri_("L", &kk, h.data(), &kk, &info);  // H⁻¹ in the lower triangle (column-major)
  if (info != 0) return {};
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t i = j + 1; i < k; ++i) h[static_cast<size_t>(j + i * k)] = h[static_cast<size_t>(i + j * k)];
  }
  dpotrf_("U", &kk, h.data(), &kk, &info);  // column-major: U(i, j), i ≤ j, at h[i + j·k]
  if (info != 0) return {};
  std::vector<float> u(static_cast<size_t>(k * k), 0.0f);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = i; j < k; ++j)
      u[static_cast<size_t>(i * k + j)] = static_cast<float>(h[static_cast<size_t>(i + j * k)]);
  }
  return u;
}

// One row's GPTQ codes, in the processing order (row, u and codes permuted alike): `scale_at(i)` gives input i's
// scale; codes[i] the chosen code in [lo, hi].
template <class ScaleAt>
void gptq_row(float* row, const float* u, int64_t k, int lo, int hi, ScaleAt scale_at, int* codes) {
  for (int64_t i = 0; i < k; ++i) {
    const float s = scale_at(i);
    const int c = code(row[i], s, lo, hi);
    codes[i] = c;
    const float err = (row[i] - static_cast<float>(c) * s) / u[i * k + i];
    const float* ui = u + i * k;
    for (int64_t j = i + 1; j < k; ++j) row[j] -= err * ui[j];
  }
}

// Every row of w [n, k] (in parallel), its inputs in order or (act_order) in the order of decreasing gram diagonal
// (the loudest inputs rounded first, while the most inputs remain to absorb their error), handed to
// `round_row(j, row, u, perm, codes)`: row[p] = w[j, perm[p]], u over the permuted gram; it rounds with gptq_row
// and stores its scales and codes (codes[p] belongs to input perm[p]).
template <class RoundRow>
bool gptq_rows(const float* w, const float* gram, int64_t n, int64_t k, float damp, bool act_order,
               RoundRow round_row) {
  std::vector<int64_t> perm(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) perm[size_t(i)] = i;
  if (act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return gram[a * k + a] > gram[b * k + b]; });
  }
  std::vector<float> permuted(static_cast<size_t>(k * k));
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = 0; b < k; ++b) permuted[size_t(a * k + b)] = gram[perm[size_t(a)] * k + perm[size_t(b)]];
  const std::vector<float> u = inverse_cholesky_upper(permuted.data(), k, damp);
  if (u.empty()) return false;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(k));
    std::vector<int> codes(static_cast<size_t>(k));
#pragma omp for schedule(dynamic, 4)
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t p = 0; p < k; ++p) row[size_t(p)] = w[j * k + perm[size_t(p)]];
      round_row(j, row.data(), u.data(), perm.data(), codes.data());
    }
  }
  return true;
}

}  // namespace

// int8 in act order: fewer errors than in order on both models with one calibration (tiny.en 83 → 78, base 106 →
// 100; docs/quantization.md "GPTQ", where the calibration itself moves results by as much).
bool gptq_quantize_i8(const float* w, const float* gram, int8_t* q, float* scale, int64_t n, int64_t k, float damp) {
  return gptq_rows(w, gram, n, k, damp, true,
                   [&](int64_t j, float* row, const float* u, const int64_t* perm, int* codes) {
                     const float s = max_abs(w + j * k, k) / kI8Max;
                     scale[j] = s;
                     gptq_row(
                         row, u, k, -127, 127, [s](int64_t) { return s; }, codes);
                     for (int64_t p = 0; p < k; ++p) q[j * k + perm[p]] = static_cast<int8_t>(codes[p]);
                   });
}

// int4 in order, each group's scale from its inputs as they stand when its first input is reached. (In act order a
// group's inputs are not rounded together, so its scale would have to come from the original row; measured worse on
// base G64, 74 → 109 errors, better on G128, 124 → 94: docs/quantization.md.)
bool gptq_quantize_i4(const float* w, const float* gram, uint8_t* packed, float* scale, int64_t n, int64_t k,
                      int64_t group, float damp) {
  const int64_t groups = k / group;
  return gptq_rows(w, gram, n, k, damp, false, [&](int64_t j, float* row, const float* u, const int64_t*, int* codes) {
    float* sj = scale + j * groups;
    gptq_row(
        row, u, k, -8, 7,
        [&](int64_t i) {
          if (i % group == 0) sj[i / group] = max_abs(row + i, group) / kI4Max;
          return sj[i / group];
        },
        codes);
    for (int64_t i = 0; i < k; i += 2) {
      packed[j * (k / 2) + i / 2] = static_cast<uint8_t>((codes[i] + kI4Offset) | ((codes[i + 1] + kI4Offset) << 4));
    }
  });
}

void add_gram_upper(const float* x, float* gram, int64_t n, int64_t k) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(k), static_cast<int>(n), 1.0f, x,
              static_cast<int>(k), 1.0f, gram, static_cast<int>(k));
}

}  // namespace wisp::kernels::cpu
