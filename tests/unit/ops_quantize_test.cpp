// Weight-only quantisation (docs/quantization.md): the quantisers against hand-computed codes and their error
// bound, the nibble order of packed int4, and the mixed-precision linear kernels (through ops::linear) against
// a double-precision product over the dequantised weights.
//
// Tolerance of the products: as in ops_kernels_test, wisp's largest error against the double reference must
// stay within twice that of a naive float32 loop over the same dequantised weights plus 4 float ulps of the
// output's scale. The int8 GEMV applies the row scale after the sum and the int4 GEMV per 8 weights, so they
// round differently from the naive loop, but only by a few ulps; a wrong nibble order, a scale of the wrong
// group or row, or a lost tail shows up as errors of the order of the outputs themselves.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/quantize.h"
#include "ops/ops.h"
#include "support/naive_bound.h"
#include "wisp/errors.h"

namespace wisp::ops {
namespace {

namespace cpu = kernels::cpu;
using core::DType;
using core::Shape;
using test::expect_within_naive_bound;
using test::random_f32;

Tensor from_values(Shape shape, const std::vector<float>& v) {
  Tensor t = Tensor::empty(std::move(shape), DType::kF32);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

// The dequantised weights [n, k] of either format.
std::vector<float> dequantized(const QuantizedWeight& q, int64_t n, int64_t k) {
  std::vector<float> w(static_cast<size_t>(n * k));
  if (q.codes.dtype() == DType::kI8) {
    cpu::dequantize_i8(q.codes.data<int8_t>(), q.scale.data<float>(), w.data(), n, k);
  } else {
    cpu::dequantize_i4(q.codes.data<uint8_t>(), q.scale.data<float>(), w.data(), n, k, k / q.scale.dim(1));
  }
  return w;
}

// ---------------------------------------------------------------- int8 codes

TEST(QuantizeInt8, HandMadeRowsGiveExactCodes) {
  // Row 0: max 127 → scale 1, so the codes are the rounded values, ties to even. Row 1: all zeros → scale 0,
  // codes 0. Row 2: max 254 → scale 2.
  const std::vector<float> w = {127, -127, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 3.49f, -3.51f, 0,  //
                                0,   0,    0,    0,    0,    0,     0,     0,     0,      0,  //
                                254, 1,    3,    5,    -7,   -254,  100,   0.9f,  -1.1f,  126.9f};
  const QuantizedWeight q = quantize_int8(from_values({3, 10}, w));
  ASSERT_EQ(q.codes.dtype(), DType::kI8);
  ASSERT_EQ(q.codes.shape(), (Shape{3, 10}));
  ASSERT_EQ(q.scale.shape(), (Shape{3}));
  const std::vector<int> want = {127, -127, 0, 2, 2,  0,    -2, 3, -4, 0,  //
                                 0,   0,    0, 0, 0,  0,    0,  0, 0,  0,  //
                                 127, 0,    2, 2, -4, -127, 50, 0, -1, 63};
  const int8_t* c = q.codes.data<int8_t>();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(c[i], want[i]) << "element " << i;
  EXPECT_EQ(q.scale.data<float>()[0], 1.0f);
  EXPECT_EQ(q.scale.data<float>()[1], 0.0f);
  EXPECT_EQ(q.scale.data<float>()[2], 2.0f);
}

TEST(QuantizeInt8, RoundTripErrorAtMostHalfAScale) {
  std::mt19937 rng(11);
  const int64_t n = 37, k = 301;
  const Tensor w = random_f32({n, k}, rng, -3.0f, 3.0f);
  const QuantizedWeight q = quantize_int8(w);
  const std::vector<float> back = dequantized(q, n, k);
  const float* src = w.data<float>();
  const int8_t* c = q.codes.data<int8_t>();
  for (int64_t j = 0; j < n; ++j) {
    const float s = q.scale.data<float>()[j];
    float row_max = 0.0f;
    for (int64_t i = 0; i < k; ++i) row_max = std::max(row_max, std::fabs(src[j * k + i]));
    EXPECT_FLOAT_EQ(s, row_max / 127.0f) << "row " << j;
    for (int64_t i = 0; i < k; ++i) {
      const size_t at = static_cast<size_t>(j * k + i);
      ASSERT_GE(c[at], -127);
      // Dequantisation is exactly code · scale; the rounding costs at most half a step (plus float noise).
      EXPECT_EQ(back[at], static_cast<float>(c[at]) * s);
      EXPECT_LE(std::fabs(back[at] - src[at]), 0.5f * s * (1.0f + 1e-5f)) << "row " << j << " col " << i;
    }
  }
}

// ---------------------------------------------------------------- int4 codes and nibbles

TEST(QuantizeInt4, HandMadeGroupsAndNibbleOrder) {
  // One row, k = 128, group 64. Group 0: max 7 → scale 1 (codes are the rounded values, ties to even);
  // group 1: all zeros → scale 0, codes 0 (nibble 8).
  std::vector<float> w(128, 0.0f);
  const std::vector<float> head = {7, -7, 0.5f, 1.5f, 2.5f, -2.5f, 6.6f, -3.4f, 1, 0};
  std::copy(head.begin(), head.end(), w.begin());
  const QuantizedWeight q = quantize_int4(from_values({1, 128}, w), 64);
  ASSERT_EQ(q.codes.dtype(), DType::kU8);
  ASSERT_EQ(q.codes.shape(), (Shape{1, 64}));
  ASSERT_EQ(q.scale.shape(), (Shape{1, 2}));
  EXPECT_EQ(q.scale.data<float>()[0], 1.0f);
  EXPECT_EQ(q.scale.data<float>()[1], 0.0f);
  // Codes 7, -7, 0, 2, 2, -2, 7, -3, 1, 0 → nibbles 15, 1, 8, 10, 10, 6, 15, 5, 9, 8; the even column
  // goes to the low nibble.
  const uint8_t* p = q.codes.data<uint8_t>();
  EXPECT_EQ(p[0], 0x1F);
  EXPECT_EQ(p[1], 0xA8);
  EXPECT_EQ(p[2], 0x6A);
  EXPECT_EQ(p[3], 0x5F);
  EXPECT_EQ(p[4], 0x89);
  for (int c = 5; c < 64; ++c) EXPECT_EQ(p[c], 0x88) << "byte " << c;
}

TEST(QuantizeInt4, DequantizeReadsLowNibbleFirst) {
  // Hand-packed: byte 0x2F holds column 0 = 15 - 8 = 7 and column 1 = 2 - 8 = -6.
  std::vector<uint8_t> packed(32, 0x88);
  packed[0] = 0x2F;
  const float scale = 0.5f;
  std::vector<float> w(64);
  cpu::dequantize_i4(packed.data(), &scale, w.data(), 1, 64, 64);
  EXPECT_EQ(w[0], 3.5f);
  EXPECT_EQ(w[1], -3.0f);
  for (int i = 2; i < 64; ++i) EXPECT_EQ(w[static_cast<size_t>(i)], 0.0f);
}

TEST(QuantizeInt4, RoundTripErrorAtMostHalfAScale) {
  std::mt19937 rng(12);
  for (int64_t group : {64, 128}) {
    const int64_t n = 29, k = 384;
    const Tensor w = random_f32({n, k}, rng, -2.0f, 2.0f);
    const QuantizedWeight q = quantize_int4(w, group);
    ASSERT_EQ(q.scale.shape(), (Shape{n, k / group}));
    const std::vector<float> back = dequantized(q, n, k);
    const float* src = w.data<float>();
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t g = 0; g < k / group; ++g) {
        const float s = q.scale.data<float>()[j * (k / group) + g];
        float group_max = 0.0f;
        for (int64_t i = g * group; i < (g + 1) * group; ++i)
          group_max = std::max(group_max, std::fabs(src[j * k + i]));
        EXPECT_FLOAT_EQ(s, group_max / 7.0f) << "row " << j << " group " << g;
        for (int64_t i = g * group; i < (g + 1) * group; ++i) {
          const size_t at = static_cast<size_t>(j * k + i);
          EXPECT_LE(std::fabs(back[at] - src[at]), 0.5f * s * (1.0f + 1e-5f)) << "row " << j << " col " << i;
        }
      }
    }
  }
}

// ---------------------------------------------------------------- mixed-precision linear

// x [m, k] · Wᵀ + bias over the quantised weight, against double and naive float products over the
// dequantised weights.
void check_quantized_linear(const QuantizedWeight& q, int64_t m, int64_t n, int64_t k, std::mt19937& rng,
                            const std::string& what) {
  const Tensor x = random_f32({m, k}, rng);
  const Tensor bias = random_f32({n}, rng);
  const test::Products p =
      test::plus_bias(test::linear_products(x, dequantized(q, n, k), m, n, k), bias.data<float>(), n);
  const Tensor y = linear(x, q.codes, q.scale, bias);
  ASSERT_EQ(y.shape(), (Shape{m, n})) << what;
  expect_within_naive_bound(y.data<float>(), p.naive, p.ref, what);
}

// m 1..8 runs the GEMV (weight rows read once per block of up to 8 rows of x); 9 and more run the blocked
// dequantise-then-BLAS path, whose blocks are 256 rows of w (n = 257 and 769 leave tails of 1 row).
const std::vector<int64_t> kRows = {1, 2, 3, 4, 5, 6, 7, 8, 9, 100};

TEST(QuantizedLinear, Int8AllPaths) {
  std::mt19937 rng(21);
  // n odd; k = 383 and 1 leave tails after the 8-wide loop.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {67, 64}, {257, 383}, {769, 384}, {385, 1536}};
  for (const auto& [n, k] : shapes) {
    const QuantizedWeight q = quantize_int8(random_f32({n, k}, rng));
    for (int64_t m : kRows) {
      check_quantized_linear(q, m, n, k, rng,
                             "int8 m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
    }
  }
}

TEST(QuantizedLinear, Int4AllPaths) {
  std::mt19937 rng(22);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 128}, {67, 128}, {257, 384}, {769, 512}, {385, 1536}};
  for (int64_t group : {64, 128}) {
    for (const auto& [n, k] : shapes) {
      const QuantizedWeight q = quantize_int4(random_f32({n, k}, rng), group);
      for (int64_t m : kRows) {
        check_quantized_linear(q, m, n, k, rng,
                               "int4 g=" + std::to_string(group) + " m=" + std::to_string(m) +
                                   " n=" + std::to_string(n) + " k=" + std::to_string(k));
      }
    }
  }
}

TEST(QuantizedLinear, EncoderSizedInputs) {
  // A 30 s window (1500 frames) through the fc1 shape of tiny.
  std::mt19937 rng(23);
  const Tensor w = random_f32({1536, 384}, rng);
  check_quantized_linear(quantize_int8(w), 1500, 1536, 384, rng, "int8 encoder");
  check_quantized_linear(quantize_int4(w, 64), 1500, 1536, 384, rng, "int4 encoder");
}

TEST(QuantizedLinear, GemvRowsMatchOneRowAtATime) {
  // A beam of 5 decoded together gives every row bitwise what it gives alone (decode_batch relies on it).
  std::mt19937 rng(24);
  const Tensor x = random_f32({5, 384}, rng);
  const Tensor bias = random_f32({1152}, rng);
  const Tensor w = random_f32({1152, 384}, rng);
  for (const QuantizedWeight& q : {quantize_int8(w), quantize_int4(w, 64)}) {
    const Tensor all = linear(x, q.codes, q.scale, bias);
    for (int64_t r = 0; r < 5; ++r) {
      const Tensor one = linear(x.rows(r, r + 1).clone(), q.codes, q.scale, bias);
      for (int64_t j = 0; j < 1152; ++j) ASSERT_EQ(one.data<float>()[j], all.data<float>()[r * 1152 + j]);
    }
  }
}

// ---------------------------------------------------------------- ops checks

TEST(QuantizedLinear, MismatchedScalesThrowInternalError) {
  std::mt19937 rng(25);
  const Tensor x = random_f32({2, 128}, rng);
  const Tensor w = random_f32({16, 128}, rng);
  const QuantizedWeight q8 = quantize_int8(w);
  const QuantizedWeight q4 = quantize_int4(w, 64);
  EXPECT_THROW(linear(x, q8.codes, Tensor(), Tensor()), InternalError);                  // codes without a scale
  EXPECT_THROW(linear(x, w, q8.scale, Tensor()), InternalError);                         // a float weight with a scale
  EXPECT_THROW(linear(x, q8.codes, q4.scale, Tensor()), InternalError);                  // int8 codes, int4 scales
  EXPECT_THROW(linear(x, q4.codes, q8.scale, Tensor()), InternalError);                  // int4 codes, int8 scales
  EXPECT_THROW(linear(x, q4.codes, q4.scale.reshape({8, 4}), Tensor()), InternalError);  // wrong rows
  const Tensor x_odd = random_f32({2, 130}, rng);
  EXPECT_THROW(linear(x_odd, q4.codes, q4.scale, Tensor()), InternalError);  // x does not match the packed k
  EXPECT_THROW(quantize_int4(w, 32), InternalError);                         // groups are 64 or 128
  EXPECT_THROW(quantize_int4(random_f32({4, 96}, rng), 64), InternalError);  // k not a multiple of the group
}

}  // namespace
}  // namespace wisp::ops
