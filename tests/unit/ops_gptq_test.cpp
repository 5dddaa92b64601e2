// GPTQ rounding (ops::gptq_int8 / gptq_int4, kernels/cpu/quantize.h): with uncorrelated inputs of equal power
// (gram = I) it is plain rounding, code for code; with correlated inputs its expected output error
// tr(ΔW · H · ΔWᵀ) is well below plain rounding's; every code stays in range with the plain quantisers' scales
// (int8) or group scales that bound the group (int4); mismatched sizes and a gram that is not positive definite are
// refused. The Gram accumulation (ops::add_gram_upper) against a direct sum.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "ops/ops.h"
#include "support/expect_error.h"
#include "support/random_weight.h"
#include "wisp/errors.h"

namespace wisp::ops {
namespace {

using core::DType;
using core::Tensor;

using test::random_weight;

// Inputs x [rows, k] with strongly correlated columns (a few shared factors plus noise) and a few loud columns,
// like a layer's activations; gram = xᵀx / rows, symmetric.
Tensor correlated_gram(int64_t k, int64_t rows, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  constexpr int kFactors = 6;
  std::vector<float> mix(static_cast<size_t>(kFactors * k));
  for (float& m : mix) m = dist(gen);
  Tensor x = Tensor::empty({rows, k}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    float f[kFactors];
    for (float& v : f) v = dist(gen);
    for (int64_t i = 0; i < k; ++i) {
      float v = 0.3f * dist(gen);
      for (int q = 0; q < kFactors; ++q) v += f[q] * mix[static_cast<size_t>(q * k + i)];
      x.data<float>()[r * k + i] = i % 37 == 5 ? 8.0f * v : v;
    }
  }
  Tensor gram = Tensor::zeros({k, k}, DType::kF32);
  add_gram_upper(x, gram);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = i; j < k; ++j) {
      const float v = gram.data<float>()[i * k + j] / static_cast<float>(rows);
      gram.data<float>()[i * k + j] = gram.data<float>()[j * k + i] = v;
    }
  }
  return gram;
}

// Ŵ of a quantised weight, through the linear kernel: identity rows give its columns.
Tensor dequantized(const QuantizedWeight& q, int64_t n, int64_t k) {
  Tensor eye = Tensor::zeros({k, k}, DType::kF32);
  for (int64_t i = 0; i < k; ++i) eye.data<float>()[i * k + i] = 1.0f;
  const Tensor cols = linear(eye, q.codes, q.scale, Tensor());  // [k, n] = Ŵᵀ
  Tensor w = Tensor::empty({n, k}, DType::kF32);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i) w.data<float>()[j * k + i] = cols.data<float>()[i * n + j];
  return w;
}

// tr(ΔW · H · ΔWᵀ): the expected squared output error over inputs with Gram matrix H.
double output_error(const Tensor& w, const QuantizedWeight& q, const Tensor& gram) {
  const int64_t n = w.dim(0), k = w.dim(1);
  const Tensor wq = dequantized(q, n, k);
  double total = 0.0;
  std::vector<double> d(static_cast<size_t>(k));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) d[size_t(i)] = double(wq.data<float>()[j * k + i]) - w.data<float>()[j * k + i];
    for (int64_t a = 0; a < k; ++a) {
      double row = 0.0;
      for (int64_t b = 0; b < k; ++b) row += double(gram.data<float>()[a * k + b]) * d[size_t(b)];
      total += d[size_t(a)] * row;
    }
  }
  return total;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(Gptq, IdentityGramIsPlainRounding) {
  const int64_t n = 24, k = 256;
  const Tensor w = random_weight(n, k, 3);
  Tensor eye = Tensor::zeros({k, k}, DType::kF32);
  for (int64_t i = 0; i < k; ++i) eye.data<float>()[i * k + i] = 1.0f;
  const QuantizedWeight g8 = gptq_int8(w, eye), p8 = quantize_int8(w);
  EXPECT_TRUE(same_bytes(g8.codes, p8.codes));
  EXPECT_TRUE(same_bytes(g8.scale, p8.scale));
  for (int64_t group : {64, 128}) {
    const QuantizedWeight g4 = gptq_int4(w, eye, group), p4 = quantize_int4(w, group);
    EXPECT_TRUE(same_bytes(g4.codes, p4.codes)) << group;
    EXPECT_TRUE(same_bytes(g4.scale, p4.scale)) << group;
  }
}

TEST(Gptq, CorrelatedInputsHaveLessOutputError) {
  const int64_t n = 32, k = 256;
  const Tensor w = random_weight(n, k, 7);
  const Tensor gram = correlated_gram(k, 2048, 11);
  const double plain8 = output_error(w, quantize_int8(w), gram), gptq8 = output_error(w, gptq_int8(w, gram), gram);
  EXPECT_LT(gptq8, 0.5 * plain8) << plain8 << " vs " << gptq8;
  for (int64_t group : {64, 128}) {
    const double plain4 = output_error(w, quantize_int4(w, group), gram);
    const double gptq4 = output_error(w, gptq_int4(w, gram, group), gram);
    EXPECT_LT(gptq4, 0.5 * plain4) << group << ": " << plain4 << " vs " << gptq4;
  }
}

TEST(Gptq, CodesStayInRange) {
  const int64_t n = 16, k = 128;
  const Tensor w = random_weight(n, k, 5);
  const Tensor gram = correlated_gram(k, 512, 13);
  const QuantizedWeight q8 = gptq_int8(w, gram);
  EXPECT_TRUE(same_bytes(q8.scale, quantize_int8(w).scale));  // int8 scales from the original rows
  for (int64_t i = 0; i < q8.codes.numel(); ++i) {
    EXPECT_GE(q8.codes.data<int8_t>()[i], -127);
  }
  // int4: every dequantised weight lies within its group's range (the scale bounds what the group held when
  // its first input was reached), and the group scales are positive for a non-zero weight.
  const QuantizedWeight q4 = gptq_int4(w, gram, 64);
  for (int64_t i = 0; i < q4.scale.numel(); ++i) EXPECT_GT(q4.scale.data<float>()[i], 0.0f);
  const Tensor wq = dequantized(q4, n, k);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) {
      const float s = q4.scale.data<float>()[j * (k / 64) + i / 64];
      EXPECT_LE(std::fabs(wq.data<float>()[j * k + i]), 8.0f * s * 1.0001f);
    }
  }
}

TEST(Gptq, RefusesMismatchAndIndefiniteGram) {
  const Tensor w = random_weight(8, 64, 1);
  test::expect_error<InternalError>([&] { gptq_int8(w, Tensor::zeros({32, 32}, DType::kF32)); }, "does not match");
  Tensor bad = Tensor::zeros({64, 64}, DType::kF32);
  for (int64_t i = 0; i < 64; ++i) bad.data<float>()[i * 64 + i] = i == 3 ? -50.0f : 1.0f;
  test::expect_error<InternalError>([&] { gptq_int4(w, bad, 64); }, "not positive definite");
  test::expect_error<InternalError>([&] { gptq_int4(w, Tensor::zeros({64, 64}, DType::kF32), 48); }, "group 48");
}

TEST(Gptq, GramAccumulatesTheUpperTriangle) {
  const int64_t rows = 37, k = 19;
  Tensor x = Tensor::empty({rows, k}, DType::kF32);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = std::sin(0.3f * float(i)) + 0.1f * float(i % 7);
  Tensor gram = Tensor::zeros({k, k}, DType::kF32);
  add_gram_upper(x.rows(0, 20), gram);
  add_gram_upper(x.rows(20, rows), gram);
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t b = a; b < k; ++b) {
      double want = 0.0;
      for (int64_t r = 0; r < rows; ++r) want += double(x.data<float>()[r * k + a]) * x.data<float>()[r * k + b];
      EXPECT_NEAR(gram.data<float>()[a * k + b], want, 1e-4 * (1.0 + std::fabs(want))) << a << "," << b;
    }
  }
}

}  // namespace
}  // namespace wisp::ops
