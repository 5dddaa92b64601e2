// Every op of the ops layer against a naive double-precision reference written here.
//
// Tolerances follow the arithmetic rather than magic numbers: alongside the double reference each test runs a
// naive float32 implementation of the same formula (float accumulation in natural order) and requires wisp's
// largest error to be at most twice the naive one plus a floor of a few float ulps of the output's scale
// (the rule flash-attention's tests use). A kernel that loses precision (a wrong tail, a half-precision
// accumulator, a missed bias, a wrong mask) overshoots that bound by orders of magnitude, while a correct one
// that merely sums in another order stays well inside it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "support/naive_bound.h"
#include "wisp/errors.h"

namespace wisp::ops {
namespace {

using core::DType;
using core::Shape;
using test::expect_within_naive_bound;
using test::random_f32;

// ---------------------------------------------------------------- helpers

Tensor random_f16(Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape), DType::kF16);
  std::uniform_real_distribution<float> u(lo, hi);
  auto* p = t.data<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = core::float_to_half(u(rng));
  return t;
}

// The exact values a tensor holds (f16 widens to float without rounding).
std::vector<float> values_of(const Tensor& t) {
  const Tensor f = t.to_f32();
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
float gelu_naive(float x) { return 0.5f * x * (1.0f + std::erf(x / std::sqrt(2.0f))); }

// ---------------------------------------------------------------- linear

void check_linear(int64_t m, int64_t n, int64_t k, DType wtype, std::mt19937& rng) {
  const std::string what = "linear " + std::string(core::dtype_name(wtype)) + " m=" + std::to_string(m) +
                           " n=" + std::to_string(n) + " k=" + std::to_string(k);
  const Tensor x = random_f32({m, k}, rng);
  const Tensor w = wtype == DType::kF16 ? random_f16({n, k}, rng) : random_f32({n, k}, rng);
  const Tensor bias = random_f32({n}, rng);
  const test::Products p = test::linear_products(x, values_of(w), m, n, k);

  const Tensor y = linear(x, w, Tensor());
  ASSERT_EQ(y.shape(), (Shape{m, n})) << what;
  expect_within_naive_bound(y.data<float>(), p.naive, p.ref, what + " (no bias)");

  const test::Products pb = test::plus_bias(p, bias.data<float>(), n);
  const Tensor yb = linear(x, w, bias);
  expect_within_naive_bound(yb.data<float>(), pb.naive, pb.ref, what + " (bias)");

  // linear_into writes the same values into a caller's tensor.
  Tensor into = Tensor::empty({m, n}, DType::kF32);
  linear_into(x, w, bias, into);
  expect_within_naive_bound(into.data<float>(), pb.naive, pb.ref, what + " (linear_into)");
}

// m up to 8 runs the half-precision GEMV (rows in groups of 4); more rows run the blocked BLAS path, whose
// blocks are 256 rows of w: 769 and 5125 leave tails of 1 and 5 rows, 383 and 5125 leave k tails of 7 and 5
// after the 8-wide vector loop.
const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1},      {1, 383},   {769, 1},    {769, 383},
                                                          {384, 384},  {512, 512}, {1536, 384}, {384, 1536},
                                                          {2048, 512}, {5125, 65}, {7, 5125}};
const std::vector<int64_t> kRows = {1, 3, 4, 5, 8, 9, 100};

TEST(OpsLinear, F32WeightsAllPaths) {
  std::mt19937 rng(1);
  for (int64_t m : kRows) {
    for (const auto& [n, k] : kShapes) check_linear(m, n, k, DType::kF32, rng);
  }
}

TEST(OpsLinear, F16WeightsAllPaths) {
  std::mt19937 rng(2);
  for (int64_t m : kRows) {
    for (const auto& [n, k] : kShapes) check_linear(m, n, k, DType::kF16, rng);
  }
}

TEST(OpsLinear, EncoderSizedInputs) {
  // A 30 s window: 1500 frames through a square projection and an odd-sized one.
  std::mt19937 rng(3);
  for (DType t : {DType::kF32, DType::kF16}) {
    check_linear(1500, 384, 384, t, rng);
    check_linear(1500, 385, 383, t, rng);
  }
}

TEST(OpsLinear, VocabularyProjectionDecodeStep) {
  // The logits of one decode step: 51865 tokens × 384 (tiny/base's text state), half weights.
  std::mt19937 rng(4);
  check_linear(1, 51865, 384, DType::kF16, rng);
  check_linear(1, 51865, 384, DType::kF32, rng);
}

// ---------------------------------------------------------------- layer_norm, gelu, add

TEST(OpsElementwise, LayerNorm) {
  std::mt19937 rng(5);
  const float eps = 1e-5f;
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {1, 384}, {3, 7}, {17, 383}, {100, 512}, {1500, 384}, {2, 1537}}) {
    const std::string what = "layer_norm " + std::to_string(rows) + "x" + std::to_string(cols);
    // An offset mean makes the centring matter: statistics computed carelessly lose digits here.
    const Tensor x = random_f32({rows, cols}, rng, 2.0f, 4.0f);
    const Tensor gamma = random_f32({cols}, rng, 0.5f, 1.5f);
    const Tensor beta = random_f32({cols}, rng);
    const float* xp = x.data<float>();
    const float* g = gamma.data<float>();
    const float* b = beta.data<float>();
    std::vector<double> ref(static_cast<size_t>(rows * cols));
    std::vector<float> naive(ref.size());
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * cols;
      double mean = 0.0, var = 0.0;
      float fmean = 0.0f, fvar = 0.0f;
      for (int64_t i = 0; i < cols; ++i) {
        mean += xr[i];
        fmean += xr[i];
      }
      mean /= static_cast<double>(cols);
      fmean /= static_cast<float>(cols);
      for (int64_t i = 0; i < cols; ++i) {
        var += (xr[i] - mean) * (xr[i] - mean);
        fvar += (xr[i] - fmean) * (xr[i] - fmean);
      }
      var /= static_cast<double>(cols);
      fvar /= static_cast<float>(cols);
      const double inv = 1.0 / std::sqrt(var + eps);
      const float finv = 1.0f / std::sqrt(fvar + eps);
      for (int64_t i = 0; i < cols; ++i) {
        ref[static_cast<size_t>(r * cols + i)] = (xr[i] - mean) * inv * g[i] + b[i];
        naive[static_cast<size_t>(r * cols + i)] = (xr[i] - fmean) * finv * g[i] + b[i];
      }
    }
    const Tensor y = layer_norm(x, gamma, beta, eps);
    ASSERT_EQ(y.shape(), x.shape());
    expect_within_naive_bound(y.data<float>(), naive, ref, what);
  }
}

TEST(OpsElementwise, LayerNormOfConstantRowIsBeta) {
  // Zero variance: the output is beta exactly, not NaN (eps keeps the division finite).
  Tensor x = Tensor::empty({2, 5}, DType::kF32);
  for (int i = 0; i < 10; ++i) x.data<float>()[i] = 7.25f;
  std::mt19937 rng(6);
  const Tensor gamma = random_f32({5}, rng);
  const Tensor beta = random_f32({5}, rng);
  const Tensor y = layer_norm(x, gamma, beta);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(y.data<float>()[i], beta.data<float>()[i % 5]);
}

TEST(OpsElementwise, GeluErfForm) {
  std::mt19937 rng(7);
  // Sizes below and above the threshold where the loop goes parallel, plus the tails and extremes.
  for (int64_t n : {int64_t{1}, int64_t{1023}, int64_t{70001}}) {
    Tensor x = random_f32({n}, rng, -8.0f, 8.0f);
    if (n > 4) {
      x.data<float>()[0] = 0.0f;
      x.data<float>()[1] = -30.0f;
      x.data<float>()[2] = 30.0f;
      x.data<float>()[3] = 1e-20f;
    }
    std::vector<double> ref(static_cast<size_t>(n));
    std::vector<float> naive(ref.size());
    for (int64_t i = 0; i < n; ++i) {
      ref[static_cast<size_t>(i)] = gelu_ref(x.data<float>()[i]);
      naive[static_cast<size_t>(i)] = gelu_naive(x.data<float>()[i]);
    }
    gelu_(x);
    expect_within_naive_bound(x.data<float>(), naive, ref, "gelu n=" + std::to_string(n));
  }
}

TEST(OpsElementwise, AddInPlace) {
  std::mt19937 rng(8);
  for (int64_t n : {int64_t{1}, int64_t{383}, int64_t{100000}}) {
    Tensor y = random_f32({n}, rng, -100.0f, 100.0f);
    const Tensor x = random_f32({n}, rng, -1e-3f, 1e-3f);
    std::vector<double> ref(static_cast<size_t>(n));
    std::vector<float> naive(ref.size());
    for (int64_t i = 0; i < n; ++i) {
      ref[static_cast<size_t>(i)] = static_cast<double>(y.data<float>()[i]) + x.data<float>()[i];
      naive[static_cast<size_t>(i)] = y.data<float>()[i] + x.data<float>()[i];
    }
    add_(y, x);
    expect_within_naive_bound(y.data<float>(), naive, ref, "add n=" + std::to_string(n));
    // One rounding of an exact sum: wisp must match the naive float sum bit for bit.
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y.data<float>()[i], naive[static_cast<size_t>(i)]) << i;
  }
  // 2-D shapes work the same.
  Tensor a = random_f32({3, 4}, rng);
  const Tensor a0 = a.clone();
  const Tensor b = random_f32({3, 4}, rng);
  add_(a, b);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(a.data<float>()[i], a0.data<float>()[i] + b.data<float>()[i]);
}

// ---------------------------------------------------------------- conv1d + gelu

void check_conv(int64_t t_in, int64_t c_in, int64_t c_out, int stride, DType wtype, std::mt19937& rng) {
  const std::string what = "conv1d_gelu t_in=" + std::to_string(t_in) + " c_in=" + std::to_string(c_in) +
                           " c_out=" + std::to_string(c_out) + " stride=" + std::to_string(stride) + " " +
                           core::dtype_name(wtype);
  const Tensor x = random_f32({t_in, c_in}, rng);
  const Tensor w = wtype == DType::kF16 ? random_f16({c_out, c_in, 3}, rng) : random_f32({c_out, c_in, 3}, rng);
  const Tensor bias = random_f32({c_out}, rng);
  const std::vector<float> wv = values_of(w);
  const float* xp = x.data<float>();
  const float* bp = bias.data<float>();
  const int64_t t_out = (t_in - 1) / stride + 1;
  std::vector<double> ref(static_cast<size_t>(t_out * c_out));
  std::vector<float> naive(ref.size());
  for (int64_t t = 0; t < t_out; ++t) {
    for (int64_t o = 0; o < c_out; ++o) {
      double a = 0.0;
      float f = 0.0f;
      for (int64_t c = 0; c < c_in; ++c) {
        for (int64_t j = 0; j < 3; ++j) {
          const int64_t src = t * stride + j - 1;  // padding 1 on both sides
          if (src < 0 || src >= t_in) continue;
          const float wx = wv[static_cast<size_t>((o * c_in + c) * 3 + j)];
          a += static_cast<double>(wx) * xp[src * c_in + c];
          f += wx * xp[src * c_in + c];
        }
      }
      ref[static_cast<size_t>(t * c_out + o)] = gelu_ref(a + bp[o]);
      naive[static_cast<size_t>(t * c_out + o)] = gelu_naive(f + bp[o]);
    }
  }
  const Tensor y = conv1d_gelu(x, w, bias, stride);
  ASSERT_EQ(y.shape(), (Shape{t_out, c_out})) << what;
  expect_within_naive_bound(y.data<float>(), naive, ref, what);
}

TEST(OpsConv, Conv1dGeluMatchesDirectConvolution) {
  std::mt19937 rng(9);
  for (DType t : {DType::kF32, DType::kF16}) {
    // Whisper's stem: conv1 (n_mels → d, stride 1) then conv2 (d → d, stride 2), at reduced length.
    check_conv(301, 80, 384, 1, t, rng);
    check_conv(301, 384, 384, 2, t, rng);
    // Odd sizes: odd t_in with both strides, odd channel counts, a single frame, two frames.
    check_conv(37, 13, 11, 1, t, rng);
    check_conv(37, 13, 11, 2, t, rng);
    check_conv(1, 5, 3, 1, t, rng);
    check_conv(1, 5, 3, 2, t, rng);
    check_conv(2, 7, 9, 2, t, rng);
  }
}

// ---------------------------------------------------------------- attention

struct AttnCase {
  int64_t n_q;
  int64_t n_kv;
  bool causal;
  int64_t q_offset;
};

// q lives in columns [0, d) of a fused [n_q, 3d] tensor; k and v in columns [d, 2d) and [2d, 3d) of another
// fused tensor with spare rows past n_kv, filled with NaN: attention must read only the rows it is given.
void check_attention(const AttnCase& c, std::mt19937& rng) {
  constexpr int64_t kHeads = 6, kHeadDim = 64, d = kHeads * kHeadDim;
  const std::string what = "attention n_q=" + std::to_string(c.n_q) + " n_kv=" + std::to_string(c.n_kv) +
                           (c.causal ? " causal q_offset=" + std::to_string(c.q_offset) : " full");
  const Tensor q_fused = random_f32({c.n_q, 3 * d}, rng, -1.5f, 1.5f);
  const int64_t capacity = c.n_kv + 3;
  Tensor kv_fused = random_f32({capacity, 3 * d}, rng, -1.5f, 1.5f);
  for (int64_t i = c.n_kv * 3 * d; i < capacity * 3 * d; ++i) {
    kv_fused.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
  }
  const float* qp = q_fused.data<float>();
  const float* kp = kv_fused.data<float>() + d;
  const float* vp = kv_fused.data<float>() + 2 * d;
  const int64_t ld = 3 * d;

  std::vector<double> ref(static_cast<size_t>(c.n_q * d));
  std::vector<float> naive(ref.size());
  std::vector<double> s(static_cast<size_t>(c.n_kv));
  std::vector<float> fs(s.size());
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  const float fscale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t i = 0; i < c.n_q; ++i) {
      const int64_t len = c.causal ? std::min(c.n_kv, c.q_offset + i + 1) : c.n_kv;
      const float* qi = qp + i * ld + h * kHeadDim;
      double mx = -INFINITY;
      float fmx = -INFINITY;
      for (int64_t j = 0; j < len; ++j) {
        const float* kj = kp + j * ld + h * kHeadDim;
        double a = 0.0;
        float f = 0.0f;
        for (int64_t e = 0; e < kHeadDim; ++e) {
          a += static_cast<double>(qi[e]) * kj[e];
          f += qi[e] * kj[e];
        }
        s[static_cast<size_t>(j)] = a * scale;
        fs[static_cast<size_t>(j)] = f * fscale;
        mx = std::max(mx, s[static_cast<size_t>(j)]);
        fmx = std::max(fmx, fs[static_cast<size_t>(j)]);
      }
      double sum = 0.0;
      float fsum = 0.0f;
      for (int64_t j = 0; j < len; ++j) {
        s[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - mx);
        fs[static_cast<size_t>(j)] = std::exp(fs[static_cast<size_t>(j)] - fmx);
        sum += s[static_cast<size_t>(j)];
        fsum += fs[static_cast<size_t>(j)];
      }
      for (int64_t e = 0; e < kHeadDim; ++e) {
        double a = 0.0;
        float f = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          const float vj = vp[j * ld + h * kHeadDim + e];
          a += s[static_cast<size_t>(j)] / sum * vj;
          f += fs[static_cast<size_t>(j)] / fsum * vj;
        }
        ref[static_cast<size_t>(i * d + h * kHeadDim + e)] = a;
        naive[static_cast<size_t>(i * d + h * kHeadDim + e)] = f;
      }
    }
  }
  const Tensor out = attention({&q_fused, 0, c.n_q}, {&kv_fused, d, c.n_kv}, {&kv_fused, 2 * d, c.n_kv}, d, kHeads,
                               c.causal, c.q_offset);
  ASSERT_EQ(out.shape(), (Shape{c.n_q, d})) << what;
  expect_within_naive_bound(out.data<float>(), naive, ref, what);
}

TEST(OpsAttention, FullAttention) {
  // n_q <= 4 runs per-head loops, more runs the BLAS path; 1500 keys is a cross-attention over a window.
  std::mt19937 rng(10);
  for (int64_t n_q : {1, 2, 5, 37}) {
    for (int64_t n_kv : {1, 7, 1500}) check_attention({n_q, n_kv, false, 0}, rng);
  }
  check_attention({37, 37, false, 0}, rng);
}

TEST(OpsAttention, CausalWithOffset) {
  std::mt19937 rng(11);
  for (int64_t n_q : {1, 2, 5, 37}) {
    // A prompt from position 0, a continuation after a cached prefix, and keys past the last query's position
    // (which a causal query must not see).
    check_attention({n_q, n_q, true, 0}, rng);
    check_attention({n_q, 20 + n_q, true, 20}, rng);
    check_attention({n_q, 20 + n_q + 9, true, 20}, rng);
  }
  check_attention({5, 448, true, 443}, rng);
}

TEST(OpsAttention, SelfAttentionOnOneFusedTensor) {
  // Encoder self-attention: q, k and v all column ranges of the same [n, 3d] projection output.
  std::mt19937 rng(12);
  constexpr int64_t d = 384;
  const int64_t n = 37;
  const Tensor qkv = random_f32({n, 3 * d}, rng);
  const Tensor out = attention({&qkv, 0, n}, {&qkv, d, n}, {&qkv, 2 * d, n}, d, 6, false, 0);
  // Same values once the projections are split into tensors of their own.
  Tensor q = Tensor::empty({n, d}, DType::kF32), k = Tensor::empty({n, d}, DType::kF32),
         v = Tensor::empty({n, d}, DType::kF32);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < d; ++c) {
      q.data<float>()[r * d + c] = qkv.data<float>()[r * 3 * d + c];
      k.data<float>()[r * d + c] = qkv.data<float>()[r * 3 * d + d + c];
      v.data<float>()[r * d + c] = qkv.data<float>()[r * 3 * d + 2 * d + c];
    }
  }
  const Tensor split = attention({&q, 0, n}, {&k, 0, n}, {&v, 0, n}, d, 6, false, 0);
  // Only the row strides differ, so any difference is summation order: allow a few ulps of the output scale.
  float scale = 0.0f;
  for (int64_t i = 0; i < n * d; ++i) scale = std::max(scale, std::fabs(split.data<float>()[i]));
  for (int64_t i = 0; i < n * d; ++i) {
    ASSERT_NEAR(out.data<float>()[i], split.data<float>()[i], 4 * FLT_EPSILON * scale) << i;
  }
}

// ---------------------------------------------------------------- copy_rows, log_softmax

TEST(OpsMisc, CopyRowsFromColumnRange) {
  std::mt19937 rng(13);
  const Tensor src = random_f32({5, 30}, rng);
  Tensor dst = Tensor::zeros({9, 10}, DType::kF32);
  copy_rows({&src, 10, 4}, 10, dst, 3);
  for (int64_t r = 0; r < 9; ++r) {
    for (int64_t c = 0; c < 10; ++c) {
      const float want = (r >= 3 && r < 7) ? src.data<float>()[(r - 3) * 30 + 10 + c] : 0.0f;
      ASSERT_EQ(dst.data<float>()[r * 10 + c], want) << r << "," << c;
    }
  }
  // Filling the last rows exactly is allowed.
  copy_rows({&src, 0, 5}, 10, dst, 4);
  EXPECT_EQ(dst.data<float>()[8 * 10 + 9], src.data<float>()[4 * 30 + 9]);
}

// The vectorised row reductions of the decoding loop against plain loops, at lengths around the 8-lane vectors
// and the vocabulary's; the maximum placed at every position of the first vectors and the tail.
TEST(OpsMisc, RowReductions) {
  std::mt19937 rng(15);
  std::uniform_real_distribution<float> u(-20.0f, 20.0f);
  for (int64_t n : {int64_t{1}, int64_t{5}, int64_t{8}, int64_t{13}, int64_t{51865}}) {
    std::vector<float> row(static_cast<size_t>(n));
    for (float& v : row) v = u(rng);
    for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
      std::vector<float> r = row;
      r[static_cast<size_t>(at)] = 30.0f;
      if (n > 2) r[static_cast<size_t>(n - 1 - at / 2)] = 30.0f;  // a tie: the first index wins
      const auto first = std::max_element(r.begin(), r.end()) - r.begin();
      EXPECT_EQ(argmax(r), first) << n << " " << at;
      EXPECT_EQ(max_value(r), 30.0f);
      double mx = -INFINITY, sum = 0.0;
      for (float v : r) mx = std::max(mx, static_cast<double>(v));
      for (float v : r) sum += std::exp(static_cast<double>(v) - mx);
      EXPECT_NEAR(log_sum_exp(r), mx + std::log(sum), 1e-6) << n;
      // first_above: the first index over a threshold, scanning from anywhere; none above gives the length.
      for (float t : {29.0f, 0.0f, 31.0f}) {
        int64_t want = n;
        for (int64_t i = 0; i < n; ++i) {
          if (r[static_cast<size_t>(i)] > t) {
            want = i;
            break;
          }
        }
        EXPECT_EQ(first_above(r, t), want) << n << " " << t;
      }
    }
  }
  const std::vector<float> none(9, -INFINITY);
  EXPECT_EQ(log_sum_exp(none), -INFINITY);
  EXPECT_EQ(max_value(std::span<const float>()), -INFINITY);
  EXPECT_EQ(first_above(none, -1.0f), 9);
}

TEST(OpsMisc, LogSoftmax) {
  std::mt19937 rng(14);
  // Lengths around the 8-lane vectors (a tail only, one vector, vector + tail) and the vocabulary's.
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{51865}}) {
    Tensor x = random_f32({n}, rng, -20.0f, 20.0f);
    if (n > 3) x.data<float>()[2] = -INFINITY;  // a suppressed token
    std::vector<float> row(x.data<float>(), x.data<float>() + n);
    double mx = -INFINITY;
    float fmx = -INFINITY;
    for (float v : row) {
      mx = std::max(mx, static_cast<double>(v));
      fmx = std::max(fmx, v);
    }
    double sum = 0.0;
    float fsum = 0.0f;
    for (float v : row) {
      sum += std::exp(v - mx);
      fsum += std::exp(v - fmx);
    }
    const double lse = mx + std::log(sum);
    const float flse = fmx + std::log(fsum);
    std::vector<double> ref;
    std::vector<float> naive;
    std::vector<float> got = row;
    log_softmax_(got);
    // A suppressed token stays -inf; compare the finite entries.
    std::vector<float> got_finite;
    for (int64_t i = 0; i < n; ++i) {
      if (std::isinf(row[static_cast<size_t>(i)])) {
        EXPECT_EQ(got[static_cast<size_t>(i)], -INFINITY);
        continue;
      }
      ref.push_back(row[static_cast<size_t>(i)] - lse);
      naive.push_back(row[static_cast<size_t>(i)] - flse);
      got_finite.push_back(got[static_cast<size_t>(i)]);
    }
    expect_within_naive_bound(got_finite.data(), naive, ref, "log_softmax n=" + std::to_string(n));
    double total = 0.0;
    for (float v : got) total += std::exp(static_cast<double>(v));
    EXPECT_NEAR(total, 1.0, 1e-5) << n;
  }
}

// ---------------------------------------------------------------- shape and type errors

TEST(OpsErrors, MismatchedShapesThrowInternalError) {
  std::mt19937 rng(15);
  const Tensor x = random_f32({3, 8}, rng);
  const Tensor w = random_f32({5, 8}, rng);
  const Tensor w_bad = random_f32({5, 9}, rng);
  const Tensor b = random_f32({5}, rng);
  const Tensor b_bad = random_f32({4}, rng);

  EXPECT_THROW(linear(x, w_bad, Tensor()), InternalError);
  EXPECT_THROW(linear(x, w, b_bad), InternalError);
  EXPECT_THROW(linear(x.reshape({24}), w, b), InternalError);
  EXPECT_THROW(linear(Tensor(), w, b), InternalError);
  EXPECT_THROW(linear(x, w.reshape({40}), b), InternalError);
  EXPECT_THROW(linear(random_f16({3, 8}, rng), w, b), InternalError);  // x must be f32
  EXPECT_THROW(linear(x, Tensor::zeros({5, 8}, DType::kI8), b), InternalError);
  EXPECT_THROW(linear(x, w, Tensor::zeros({5}, DType::kF16)), InternalError);
  Tensor y_bad = Tensor::empty({3, 4}, DType::kF32);
  EXPECT_THROW(linear_into(x, w, b, y_bad), InternalError);
  Tensor y_f16 = Tensor::empty({3, 5}, DType::kF16);
  EXPECT_THROW(linear_into(x, w, b, y_f16), InternalError);

  EXPECT_THROW(layer_norm(x, random_f32({7}, rng), random_f32({8}, rng)), InternalError);
  EXPECT_THROW(layer_norm(x, random_f32({8}, rng), random_f32({9}, rng)), InternalError);
  EXPECT_THROW(layer_norm(x, random_f16({8}, rng), random_f32({8}, rng)), InternalError);

  Tensor y = random_f32({3, 8}, rng);
  EXPECT_THROW(add_(y, random_f32({8, 3}, rng)), InternalError);
  EXPECT_THROW(add_(y, random_f32({24}, rng)), InternalError);
  Tensor h = random_f16({4}, rng);
  EXPECT_THROW(gelu_(h), InternalError);

  const Tensor cx = random_f32({10, 4}, rng);
  EXPECT_THROW(conv1d_gelu(cx, random_f32({6, 5, 3}, rng), random_f32({6}, rng), 1), InternalError);
  EXPECT_THROW(conv1d_gelu(cx, random_f32({6, 4, 2}, rng), random_f32({6}, rng), 1), InternalError);
  EXPECT_THROW(conv1d_gelu(cx, random_f32({6, 4, 3}, rng), random_f32({5}, rng), 1), InternalError);
  EXPECT_THROW(conv1d_gelu(cx, random_f32({6, 4, 3}, rng), random_f32({6}, rng), 0), InternalError);
  EXPECT_THROW(conv1d_gelu(cx.reshape({40}), random_f32({6, 4, 3}, rng), random_f32({6}, rng), 1), InternalError);

  const Tensor qkv = random_f32({4, 3 * 12}, rng);
  // A column range past the tensor's width, more rows than it has, a head split that does not divide, and
  // keys and values of different lengths.
  EXPECT_THROW(attention({&qkv, 30, 4}, {&qkv, 12, 4}, {&qkv, 24, 4}, 12, 2, false, 0), InternalError);
  EXPECT_THROW(attention({&qkv, 0, 5}, {&qkv, 12, 4}, {&qkv, 24, 4}, 12, 2, false, 0), InternalError);
  EXPECT_THROW(attention({&qkv, 0, 4}, {&qkv, 12, 4}, {&qkv, 24, 4}, 12, 5, false, 0), InternalError);
  EXPECT_THROW(attention({&qkv, 0, 4}, {&qkv, 12, 4}, {&qkv, 24, 3}, 12, 2, false, 0), InternalError);
  const Tensor q16 = random_f16({4, 36}, rng);
  EXPECT_THROW(attention({&q16, 0, 4}, {&qkv, 12, 4}, {&qkv, 24, 4}, 12, 2, false, 0), InternalError);

  Tensor dst = Tensor::zeros({4, 12}, DType::kF32);
  EXPECT_THROW(copy_rows({&qkv, 0, 4}, 12, dst, 1), InternalError);   // rows past the end
  EXPECT_THROW(copy_rows({&qkv, 30, 4}, 12, dst, 0), InternalError);  // columns past the source's width
  Tensor dst_wide = Tensor::zeros({4, 13}, DType::kF32);
  EXPECT_THROW(copy_rows({&qkv, 0, 4}, 12, dst_wide, 0), InternalError);
}

}  // namespace
}  // namespace wisp::ops
