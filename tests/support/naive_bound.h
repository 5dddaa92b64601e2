// The tolerance rule of the CPU op tests (ops_kernels_test, ops_quantize_test): wisp's largest error against a
// double-precision reference must stay within twice that of a naive float32 implementation of the same formula
// plus a floor of 4 float ulps at the output's scale. Also the random float32 inputs the tests feed the ops and
// the reference and naive products of linear.
// Header-only: a test that includes it links wisp_core.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace wisp::test {

inline core::Tensor random_f32(core::Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  core::Tensor t = core::Tensor::empty(std::move(shape), core::DType::kF32);
  std::uniform_real_distribution<float> u(lo, hi);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  return t;
}

// Reference (double) and naive float32 results of one op, element for element.
struct Products {
  std::vector<double> ref;
  std::vector<float> naive;
};

// The products x[m, k] · w[n, k]ᵀ without bias. x: f32 [m, k]; w: [n, k].
inline Products linear_products(const core::Tensor& x, const std::vector<float>& w, int64_t m, int64_t n, int64_t k) {
  Products p;
  p.ref.resize(static_cast<size_t>(m * n));
  p.naive.resize(static_cast<size_t>(m * n));
  const float* xp = x.data<float>();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double a = 0.0;
      float b = 0.0f;
      for (int64_t q = 0; q < k; ++q) {
        a += static_cast<double>(xp[i * k + q]) * w[static_cast<size_t>(j * k + q)];
        b += xp[i * k + q] * w[static_cast<size_t>(j * k + q)];
      }
      p.ref[static_cast<size_t>(i * n + j)] = a;
      p.naive[static_cast<size_t>(i * n + j)] = b;
    }
  }
  return p;
}

// p [m, n] with bias [n] added to every row.
inline Products plus_bias(Products p, const float* bias, int64_t n) {
  for (size_t i = 0; i < p.ref.size(); ++i) {
    p.ref[i] += bias[i % static_cast<size_t>(n)];
    p.naive[i] += bias[i % static_cast<size_t>(n)];
  }
  return p;
}

// Largest |x - ref|; NaN or infinity counts as an infinite error so that it can never pass. x: [ref.size()].
inline double max_error(const float* x, const std::vector<double>& ref) {
  double e = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(static_cast<double>(x[i]) - ref[i]);
    e = std::isfinite(d) ? std::max(e, d) : std::numeric_limits<double>::infinity();
  }
  return e;
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// wisp's error must stay within 2x the naive float32 error plus a floor of 4 float ulps at the output's scale
// (the floor covers outputs the naive version happens to get exactly right, e.g. sums of one product).
// got: [ref.size()].
inline void expect_within_naive_bound(const float* got, const std::vector<float>& naive, const std::vector<double>& ref,
                                      const std::string& what) {
  ASSERT_EQ(naive.size(), ref.size());
  const double err = max_error(got, ref);
  const double naive_err = max_error(naive.data(), ref);
  const double floor = 4.0 * FLT_EPSILON * std::max(max_abs(ref), 1e-30);
  EXPECT_LE(err, 2.0 * naive_err + floor) << what << ": wisp error " << err << ", naive float32 error " << naive_err
                                          << ", floor " << floor << ", scale " << max_abs(ref);
}

}  // namespace wisp::test
