// Activation-aware column scaling (ops/column_scaling.h): the search never does worse than plain rounding by its
// own error model, finds a scale where a few columns carry most of the input energy, keeps plain rounding where
// every column is alike, reports the error it promises, and refuses mismatched sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "ops/column_scaling.h"
#include "ops/ops.h"
#include "support/expect_error.h"
#include "support/random_weight.h"
#include "wisp/errors.h"

namespace wisp::ops {
namespace {

using core::DType;
using core::Tensor;

using test::random_weight;

// Σ_j Σ_i mean_sq[i] · (Ŵ[j, i] / s[i] − W[j, i])², recomputed from the public quantisers.
double model_error(const Tensor& w, const std::vector<float>& s, const std::vector<float>& mean_sq, int bits,
                   int64_t group) {
  const int64_t n = w.dim(0), k = w.dim(1);
  Tensor scaled = Tensor::empty({n, k}, DType::kF32);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i) scaled.data<float>()[j * k + i] = w.data<float>()[j * k + i] * s[size_t(i)];
  const QuantizedWeight q = bits == 8 ? quantize_int8(scaled) : quantize_int4(scaled, group);
  // dequantise through the linear kernel: x = identity rows give Ŵ's columns
  Tensor eye = Tensor::zeros({k, k}, DType::kF32);
  for (int64_t i = 0; i < k; ++i) eye.data<float>()[i * k + i] = 1.0f;
  const Tensor back = linear(eye, q.codes, q.scale, Tensor());  // [k, n]: back[i, j] = Ŵ[j, i]
  double e = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) {
      const double d = double(back.data<float>()[i * n + j]) / s[size_t(i)] - w.data<float>()[j * k + i];
      e += mean_sq[size_t(i)] * d * d;
    }
  }
  return e;
}

struct Stats {
  std::vector<float> mean_abs, mean_sq;
};

// Inputs of typical magnitude 1 with a few columns 30× larger (the outlier channels of a transformer's norms).
Stats outlier_stats(int64_t k) {
  Stats s;
  for (int64_t i = 0; i < k; ++i) {
    const float a = i % 37 == 5 ? 30.0f : 1.0f + 0.1f * float(i % 7);
    s.mean_abs.push_back(a);
    s.mean_sq.push_back(1.3f * a * a);
  }
  return s;
}

TEST(ColumnScaling, OutlierColumnsGetAScaleThatLowersTheError) {
  const Tensor w = random_weight(96, 256, 1);
  const Stats st = outlier_stats(256);
  for (const auto& [bits, group] : {std::pair{8, int64_t{0}}, std::pair{4, int64_t{64}}, std::pair{4, int64_t{128}}}) {
    SCOPED_TRACE(bits * 1000 + group);
    const ColumnScaling c = search_column_scaling(w, st.mean_abs, st.mean_sq, bits, group);
    EXPECT_GT(c.exponent, 0.0f);
    EXPECT_LT(c.error, 0.9 * c.plain_error);
    ASSERT_EQ(c.scale.size(), 256u);
    for (float v : c.scale) EXPECT_TRUE(std::isfinite(v) && v > 0.0f);
    // The outlier columns are the ones scaled up.
    EXPECT_GT(c.scale[5], c.scale[6]);
    // The reported errors are the model's values for the returned and for unit scales.
    EXPECT_NEAR(c.error, model_error(w, c.scale, st.mean_sq, bits, group), 1e-6 * c.plain_error);
    EXPECT_NEAR(c.plain_error, model_error(w, std::vector<float>(256, 1.0f), st.mean_sq, bits, group),
                1e-6 * c.plain_error);
  }
}

TEST(ColumnScaling, AlikeColumnsKeepPlainRounding) {
  const Tensor w = random_weight(64, 128, 2);
  const std::vector<float> mean_abs(128, 0.8f), mean_sq(128, 1.0f);
  const ColumnScaling c = search_column_scaling(w, mean_abs, mean_sq, 4, 64);
  EXPECT_EQ(c.exponent, 0.0f);
  EXPECT_EQ(c.error, c.plain_error);
  for (float v : c.scale) EXPECT_EQ(v, 1.0f);
}

TEST(ColumnScaling, NeverWorseThanPlainAndUnusedColumnsStayFinite) {
  const Tensor w = random_weight(32, 128, 3);
  Stats st = outlier_stats(128);
  st.mean_abs[7] = 0.0f;  // a column no calibration input reached
  st.mean_sq[7] = 0.0f;
  const ColumnScaling c = search_column_scaling(w, st.mean_abs, st.mean_sq, 8, 0);
  EXPECT_LE(c.error, c.plain_error);
  for (float v : c.scale) EXPECT_TRUE(std::isfinite(v) && v > 0.0f);
}

TEST(ColumnScaling, RefusesMismatchedSizes) {
  const Tensor w = random_weight(16, 128, 4);
  const std::vector<float> ok(128, 1.0f), short_(127, 1.0f);
  test::expect_error<InvalidArgument>([&] { search_column_scaling(w, short_, ok, 8, 0); }, "127");
  test::expect_error<InvalidArgument>([&] { search_column_scaling(w, ok, ok, 4, 96); }, "group 96");
  test::expect_error<InvalidArgument>([&] { search_column_scaling(w, ok, ok, 2, 64); }, "int2");
  const Tensor v = Tensor::empty({128}, DType::kF32);
  test::expect_error<InvalidArgument>([&] { search_column_scaling(v, ok, ok, 8, 0); }, "[n, k]");
}

}  // namespace
}  // namespace wisp::ops
