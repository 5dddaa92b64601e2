// CUDA kernels against CPU references, at Whisper sizes (d 384/512/1280, 6/8/20 heads, 1500 keys) and odd
// sizes that hit loop tails (37 queries, 769 and 5125 columns).
//
// Tolerances follow the dtype and the size instead of magic numbers (the flash-attention rule): for each
// case we compute, on the CPU,
//   ref   — fp64 arithmetic on the exact fp16 inputs,
//   naive — the straightforward implementation with the GPU's storage: fp32 accumulation, intermediates and
//           outputs rounded to fp16 where the GPU stores fp16 (the contract of the CPU twins in
//           src/kernels/cpu, which compute in fp32 over the same values),
// and require max|gpu − ref| ≤ 2 · max|naive − ref| + floor, the floor being half an fp16 ulp of the largest
// reference value (2^-20 of it for fp32 outputs). Pure data movement (conversions, adds, im2col, embeddings)
// must match bit for bit. Outputs are poisoned with NaN before each launch, so an unwritten element fails.
//
// Without a CUDA device every test skips with "no CUDA device".
#include "kernels/cuda/cuda_kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda_test_support.h"

namespace wisp::test {
namespace {

namespace cuda = wisp::kernels::cuda;
using wisp::core::float_to_half;
using wisp::core::half_to_float;

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- random data ---------------------------------------------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint32_t seed) : gen_(seed) {}
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
  std::vector<float> halfs(size_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (auto& x : v) x = r16(uniform(lo, hi));
    return v;
  }
  std::vector<float> floats(size_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
  // `count` distinct row indices of [0, n), always with the first and the last.
  std::vector<int64_t> rows(int64_t n, int64_t count) {
    if (n <= count) {
      std::vector<int64_t> all(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
      return all;
    }
    std::vector<int64_t> r = {0, n - 1};
    while (static_cast<int64_t>(r.size()) < count) {
      const int64_t i = std::uniform_int_distribution<int64_t>(1, n - 2)(gen_);
      if (std::find(r.begin(), r.end(), i) == r.end()) r.push_back(i);
    }
    std::sort(r.begin(), r.end());
    return r;
  }
  std::mt19937& gen() { return gen_; }

 private:
  std::mt19937 gen_;
};

class CudaKernels : public DeviceTest {};

// ---- references ----------------------------------------------------------------------------------------------

double gelu_tanh_d(double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
float gelu_tanh_f(float x) { return 0.5f * x * (1.0f + std::tanh(0.7978845608f * (x + 0.044715f * x * x * x))); }

// ============================================================================================================
// GEMM

struct LinearCase {
  int64_t m, n, k;
  cuda::Epilogue epilogue;
  bool f32_out;
  int64_t ldx = 0, ldy = 0;  // 0: contiguous
  bool accumulate = false;   // y holds a residual that the product is added to (fp16 out only)
};

void run_linear_case(const LinearCase& c, uint32_t seed) {
  Rng rng(seed);
  const int64_t ldx = c.ldx ? c.ldx : c.k, ldy = c.ldy ? c.ldy : c.n;
  const float a = std::sqrt(3.0f / static_cast<float>(c.k));
  const auto x = rng.halfs(static_cast<size_t>(c.m * ldx), -1.0f, 1.0f);
  const auto w = rng.halfs(static_cast<size_t>(c.n * c.k), -a, a);
  const bool has_bias = c.epilogue != cuda::Epilogue::kNone || (c.f32_out && c.ldy != 0);
  std::vector<float> bias;
  if (has_bias)
    bias = c.f32_out ? rng.floats(static_cast<size_t>(c.n), -0.5f, 0.5f)
                     : rng.halfs(static_cast<size_t>(c.n), -0.5f, 0.5f);

  std::vector<float> residual;  // c.accumulate: y's values before the call
  cuda::GemmContext ctx;
  ASSERT_EQ(ctx.init(), cuda::Status::kOk);
  auto dx = upload_half(x);
  auto dw = upload_half(w);
  std::vector<float> got;
  if (c.f32_out) {
    auto db = upload(bias);
    Dev<float> dy(static_cast<size_t>(c.m * ldy));
    dy.poison();
    EXPECT_STATUS_OK(cuda::linear_f32_out(ctx, dx->get(), ldx, dw->get(), has_bias ? db->get() : nullptr, dy.get(), ldy,
                                          c.m, c.n, c.k, nullptr));
    sync_ok();
    got = download(dy.get(), dy.size());
  } else {
    auto db = upload_half(bias);
    Dev<__half> dy(static_cast<size_t>(c.m * ldy));
    dy.poison();
    if (c.accumulate) {
      residual = rng.halfs(static_cast<size_t>(c.m * ldy), -2.0f, 2.0f);
      for (int64_t r = 0; r < c.m; ++r) {  // padding columns keep the poison
        for (int64_t j = c.n; j < ldy; ++j) residual[static_cast<size_t>(r * ldy + j)] = NAN;
      }
      auto dr = upload_half(residual);
      ASSERT_EQ(cudaMemcpy(dy.get(), dr->get(), residual.size() * sizeof(__half), cudaMemcpyDeviceToDevice),
                cudaSuccess);
    }
    EXPECT_STATUS_OK(cuda::linear(ctx, dx->get(), ldx, dw->get(), has_bias ? db->get() : nullptr, dy.get(), ldy, c.m,
                                  c.n, c.k, c.epilogue, nullptr, c.accumulate));
    sync_ok();
    got = download_half(dy.get(), dy.size());
  }

  const bool gelu_erf = c.epilogue == cuda::Epilogue::kBiasGeluErf;
  const bool gelu_tanh = c.epilogue == cuda::Epilogue::kBiasGeluTanh;
  char name[160];
  std::snprintf(name, sizeof(name), "linear m=%lld n=%lld k=%lld ep=%d %s ldx=%lld ldy=%lld%s",
                static_cast<long long>(c.m), static_cast<long long>(c.n), static_cast<long long>(c.k),
                static_cast<int>(c.epilogue), c.f32_out ? "f32" : "f16", static_cast<long long>(ldx),
                static_cast<long long>(ldy), c.accumulate ? " +=" : "");
  ErrorCheck check(name, c.f32_out ? Out::kFloat : Out::kHalf);
  double erf_vs_tanh = 0.0;
  for (int64_t r : rng.rows(c.m, 48)) {
    const float* xr = x.data() + r * ldx;
    for (int64_t j = 0; j < c.n; ++j) {
      const float* wj = w.data() + j * c.k;
      double sd = 0.0;
      float sf = 0.0f;
      for (int64_t i = 0; i < c.k; ++i) {
        sd += static_cast<double>(xr[i]) * wj[i];
        sf += xr[i] * wj[i];
      }
      if (has_bias) {
        sd += bias[static_cast<size_t>(j)];
        sf += bias[static_cast<size_t>(j)];
      }
      if (gelu_erf) {
        sd = gelu_erf_d(sd);
        sf = gelu_erf_f(sf);
      } else if (gelu_tanh) {
        erf_vs_tanh = std::max(erf_vs_tanh, std::fabs(gelu_tanh_d(sd) - gelu_erf_d(sd)));
        sd = gelu_tanh_d(sd);
        sf = gelu_tanh_f(sf);
      }
      if (c.accumulate) {
        sd += residual[static_cast<size_t>(r * ldy + j)];
        sf += residual[static_cast<size_t>(r * ldy + j)];
      }
      if (!c.f32_out) sf = r16(sf);
      check.add(sd, got[static_cast<size_t>(r * ldy + j)], sf);
    }
  }
  check.expect();
  if (gelu_tanh) std::printf("    (tanh vs erf GELU differ by up to %.3g on these values)\n", erf_vs_tanh);
  // Padding columns of y (ldy > n) must stay untouched: still the poison NaN.
  if (ldy > c.n) {
    EXPECT_TRUE(std::isnan(got[static_cast<size_t>(c.n)])) << name << ": wrote past n";
  }
}

TEST_F(CudaKernels, LinearWhisperShapes) {
  using E = cuda::Epilogue;
  const LinearCase cases[] = {
      {37, 384, 384, E::kBias, false},
      {1500, 1280, 1280, E::kBias, false},         // large-v2 attention out-projection
      {1500, 3840, 1280, E::kBias, false},         // fused QKV
      {1500, 5120, 1280, E::kBiasGeluErf, false},  // fc1 + GELU
      {1500, 1280, 5120, E::kBias, false},         // fc2
      {3000, 384, 240, E::kBiasGeluErf, false},    // conv1 of tiny as a GEMM (80 mels × 3)
      {64, 1280, 384, E::kBiasGeluTanh, false},
      {1, 51865, 1280, E::kNone, true},  // decode-step logits
      {5, 51865, 384, E::kNone, true},
  };
  uint32_t seed = 1;
  for (const auto& c : cases) run_linear_case(c, seed++);
}

TEST_F(CudaKernels, LinearOddSizesAndStrides) {
  using E = cuda::Epilogue;
  const LinearCase cases[] = {
      {769, 5125, 512, E::kNone, false},
      {37, 769, 384, E::kBias, false},
      {37, 512, 512, E::kBias, false, 1536, 1024},  // x a column range of a fused buffer, y padded
      {3, 769, 1280, E::kNone, true, 0, 776},       // f32 out with bias (ldy set) and padded rows
  };
  uint32_t seed = 100;
  for (const auto& c : cases) run_linear_case(c, seed++);
}

// y += x·wᵀ + bias in cuBLASLt's epilogue (the encoder's residual adds): large-v2's out-projection and fc2 over a
// window, a small odd case without bias, and a padded y (its padding must stay untouched).
TEST_F(CudaKernels, LinearAccumulatesIntoTheResidual) {
  using E = cuda::Epilogue;
  LinearCase cases[] =
      {
          {1500, 1280, 1280, E::kBias, false}, {1500, 1280, 5120, E::kBias, false},
          {37, 769, 384, E::kNone, false},     {37, 512, 512, E::kBias, false, 1536, 1024},
          {6000, 1280, 5120, E::kBias, false},  // 79 GFLOP: autotuned, its candidates timed into a transient buffer
      };
  uint32_t seed = 40;
  for (LinearCase& c : cases) {
    c.accumulate = true;
    run_linear_case(c, seed++);
  }
  cuda::GemmContext ctx;
  ASSERT_EQ(ctx.init(), cuda::Status::kOk);
  auto x = upload_half(std::vector<float>(64 * 64, 0.0f));
  Dev<__half> y(64 * 64);
  EXPECT_EQ(
      cuda::linear(ctx, x->get(), 64, x->get(), x->get(), y.get(), 64, 64, 64, 64, E::kBiasGeluErf, nullptr, true),
      cuda::Status::kInvalidArgument);  // no GELU before the residual
}

TEST_F(CudaKernels, LinearCachesPlans) {
  Rng rng(7);
  cuda::GemmContext ctx;
  ASSERT_EQ(ctx.init(), cuda::Status::kOk);
  auto x = upload_half(rng.halfs(37 * 384, -1, 1));
  auto w = upload_half(rng.halfs(512 * 384, -0.1f, 0.1f));
  auto b = upload_half(rng.halfs(512, -1, 1));
  Dev<__half> y(37 * 512);
  EXPECT_STATUS_OK(
      cuda::linear(ctx, x->get(), w->get(), b->get(), y.get(), 37, 512, 384, cuda::Epilogue::kBias, nullptr));
  EXPECT_EQ(ctx.cached_plans(), 1u);
  EXPECT_STATUS_OK(
      cuda::linear(ctx, x->get(), w->get(), b->get(), y.get(), 37, 512, 384, cuda::Epilogue::kBias, nullptr));
  EXPECT_EQ(ctx.cached_plans(), 1u);
  EXPECT_STATUS_OK(
      cuda::linear(ctx, x->get(), w->get(), b->get(), y.get(), 36, 512, 384, cuda::Epilogue::kBias, nullptr));
  EXPECT_EQ(ctx.cached_plans(), 2u);
  sync_ok();
  // Arguments the wrapper refuses before touching cuBLASLt.
  EXPECT_EQ(cuda::linear(ctx, x->get(), w->get(), nullptr, y.get(), 37, 512, 384, cuda::Epilogue::kBias, nullptr),
            cuda::Status::kInvalidArgument);
  EXPECT_EQ(
      cuda::linear(ctx, x->get(), 100, w->get(), nullptr, y.get(), 512, 37, 512, 384, cuda::Epilogue::kNone, nullptr),
      cuda::Status::kInvalidArgument);
}

// Autotuning times candidates with a host synchronisation, which stream capture forbids: a plan first made while
// a stream is captured keeps the heuristic's first choice, so the captured graph computes exactly what an untuned
// context does. (That tuned plans give correct results, the residual added once, is run_linear_case's check: its
// contexts tune, and LinearAccumulatesIntoTheResidual has a case above the threshold.)
TEST_F(CudaKernels, LinearPlansMadeDuringCaptureAreNotTimed) {
  Rng rng(9);
  const int64_t m = 4096, n = 5120, k = 1280;  // 54 GFLOP: above the tuning threshold
  auto x = upload_half(rng.halfs(static_cast<size_t>(m * k), -1, 1));
  auto w = upload_half(rng.halfs(static_cast<size_t>(n * k), -0.05f, 0.05f));
  auto b = upload_half(rng.halfs(static_cast<size_t>(n), -1, 1));
  Dev<__half> y_captured(static_cast<size_t>(m * n)), y_untuned(static_cast<size_t>(m * n));
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cuda::GemmContext captured, untuned;
  ASSERT_EQ(captured.init(), cuda::Status::kOk);
  ASSERT_EQ(untuned.init(), cuda::Status::kOk);
  untuned.set_autotune(false);
  // The untuned call first: it also loads cuBLASLt's kernels outside the capture.
  EXPECT_STATUS_OK(
      cuda::linear(untuned, x->get(), w->get(), b->get(), y_untuned.get(), m, n, k, cuda::Epilogue::kBias, stream));

  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const cuda::Status s =
      cuda::linear(captured, x->get(), w->get(), b->get(), y_captured.get(), m, n, k, cuda::Epilogue::kBias, stream);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_STATUS_OK(s);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(captured.tuned_plans(), 0u);
  EXPECT_EQ(download_bits(y_captured.get(), y_captured.size()), download_bits(y_untuned.get(), y_untuned.size()));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// The timing of a call that reads C (β = 1) runs its candidates into a transient buffer of C's size, which the context
// reports (GpuWhisper adds it to the peak memory it reports); one that neither reads C nor overlaps its inputs
// writes straight into C and allocates nothing.
TEST_F(CudaKernels, LinearReportsItsTransientTuningBuffer) {
  Rng rng(11);
  const int64_t m = 6000, n = 1280, k = 5120;  // 79 GFLOP: tuned
  auto x = upload_half(rng.halfs(static_cast<size_t>(m * k), -1, 1));
  auto w = upload_half(rng.halfs(static_cast<size_t>(n * k), -0.02f, 0.02f));
  auto b = upload_half(rng.halfs(static_cast<size_t>(n), -1, 1));
  Dev<__half> y(static_cast<size_t>(m * n));
  y.zero();
  cuda::GemmContext ctx;
  ASSERT_EQ(ctx.init(), cuda::Status::kOk);
  EXPECT_STATUS_OK(cuda::linear(ctx, x->get(), w->get(), b->get(), y.get(), m, n, k, cuda::Epilogue::kBias, nullptr));
  EXPECT_EQ(ctx.peak_transient_bytes(), 0u);  // β = 0, C apart from A and B: timed in place
  EXPECT_STATUS_OK(
      cuda::linear(ctx, x->get(), k, w->get(), b->get(), y.get(), n, m, n, k, cuda::Epilogue::kBias, nullptr, true));
  sync_ok();
  EXPECT_EQ(ctx.peak_transient_bytes(), static_cast<size_t>(m * n) * 2);
}

// Strided-batched GEMM the way attention uses it: heads as the batch, head_dim as the stride.
TEST_F(CudaKernels, GemmStridedBatchedOverHeads) {
  Rng rng(11);
  const int64_t heads = 8, hd = 64, d = heads * hd, n_q = 37, n_kv = 769;
  const auto q = rng.halfs(static_cast<size_t>(n_q * 3 * d), -1, 1);    // a fused QKV buffer: q in columns [0, d)
  const auto kv = rng.halfs(static_cast<size_t>(n_kv * 2 * d), -1, 1);  // cross K/V: k in [0, d), v in [d, 2d)
  auto dq = upload_half(q);
  auto dkv = upload_half(kv);
  cuda::GemmContext ctx;
  ASSERT_EQ(ctx.init(), cuda::Status::kOk);

  // scores[h] [n_q, n_kv] = 0.125 · Q_h · K_hᵀ, fp32
  Dev<float> ds(static_cast<size_t>(heads * n_q * n_kv));
  ds.poison();
  cuda::GemmArgs g;
  g.m = n_q;
  g.n = n_kv;
  g.k = hd;
  g.batch = heads;
  g.a = dq->get();
  g.lda = 3 * d;
  g.stride_a = hd;
  g.b = dkv->get();
  g.ldb = 2 * d;
  g.stride_b = hd;
  g.trans_b = true;
  g.c = ds.get();
  g.c_type = cuda::DataType::kF32;
  g.ldc = n_kv;
  g.stride_c = n_q * n_kv;
  g.alpha = 0.125f;
  EXPECT_EQ(cuda::gemm_can_implement(g), cuda::Status::kOk);
  EXPECT_STATUS_OK(cuda::gemm(ctx, g, nullptr));
  sync_ok();
  const auto s = download(ds.get(), ds.size());
  ErrorCheck cs("batched scores 8 heads 37x769x64 f32", Out::kFloat);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < n_q; ++i)
      for (int64_t j = 0; j < n_kv; ++j) {
        double sd = 0;
        float sf = 0;
        for (int64_t e = 0; e < hd; ++e) {
          const float a = q[static_cast<size_t>(i * 3 * d + h * hd + e)],
                      b = kv[static_cast<size_t>(j * 2 * d + h * hd + e)];
          sd += static_cast<double>(a) * b;
          sf += a * b;
        }
        cs.add(0.125 * sd, s[static_cast<size_t>((h * n_q + i) * n_kv + j)], 0.125f * sf);
      }
  cs.expect();

  // out_h [n_q, 64] = P_h [n_q, n_kv] · V_h, fp16 out into the heads' columns of [n_q, d]; plus beta = 1.
  const auto p = rng.halfs(static_cast<size_t>(heads * n_q * n_kv), 0, 0.01f);
  const auto c0 = rng.halfs(static_cast<size_t>(n_q * d), -1, 1);
  auto dp = upload_half(p);
  auto dc = upload_half(c0);
  cuda::GemmArgs o;
  o.m = n_q;
  o.n = hd;
  o.k = n_kv;
  o.batch = heads;
  o.a = dp->get();
  o.lda = n_kv;
  o.stride_a = n_q * n_kv;
  o.b = dkv->get() + d;
  o.ldb = 2 * d;
  o.stride_b = hd;
  o.c = dc->get();
  o.c_type = cuda::DataType::kF16;
  o.ldc = d;
  o.stride_c = hd;
  o.beta = 1.0f;
  EXPECT_STATUS_OK(cuda::gemm(ctx, o, nullptr));
  sync_ok();
  const auto out = download_half(dc->get(), static_cast<size_t>(n_q * d));
  ErrorCheck co("batched P.V 8 heads 37x64x769 beta=1 f16", Out::kHalf);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < n_q; ++i)
      for (int64_t e = 0; e < hd; ++e) {
        double sd = c0[static_cast<size_t>(i * d + h * hd + e)];
        float sf = static_cast<float>(sd);
        for (int64_t j = 0; j < n_kv; ++j) {
          const float a = p[static_cast<size_t>((h * n_q + i) * n_kv + j)];
          const float b = kv[static_cast<size_t>(j * 2 * d + d + h * hd + e)];
          sd += static_cast<double>(a) * b;
          sf += a * b;
        }
        co.add(sd, out[static_cast<size_t>(i * d + h * hd + e)], r16(sf));
      }
  co.expect();

  // A transposed operand: C [33, 65] = Aᵀ · B with A stored [40, 33].
  const int64_t m = 33, n = 65, k = 40;
  const auto a = rng.halfs(static_cast<size_t>(k * 40), -1, 1);  // [k, lda = 40]
  const auto b = rng.halfs(static_cast<size_t>(k * 72), -1, 1);  // [k, ldb = 72]
  auto da = upload_half(a);
  auto db = upload_half(b);
  Dev<float> dcc(static_cast<size_t>(m * n));
  dcc.poison();
  cuda::GemmArgs t;
  t.m = m;
  t.n = n;
  t.k = k;
  t.a = da->get();
  t.lda = 40;
  t.trans_a = true;
  t.b = db->get();
  t.ldb = 72;
  t.c = dcc.get();
  t.c_type = cuda::DataType::kF32;
  t.ldc = n;
  EXPECT_STATUS_OK(cuda::gemm(ctx, t, nullptr));
  sync_ok();
  const auto ct = download(dcc.get(), dcc.size());
  ErrorCheck ctc("gemm trans_a 33x65x40 f32", Out::kFloat);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sd = 0;
      float sf = 0;
      for (int64_t e = 0; e < k; ++e) {
        const float x = a[static_cast<size_t>(e * 40 + i)], y = b[static_cast<size_t>(e * 72 + j)];
        sd += static_cast<double>(x) * y;
        sf += x * y;
      }
      ctc.add(sd, ct[static_cast<size_t>(i * n + j)], sf);
    }
  ctc.expect();
}

// ============================================================================================================
// Layer norm

void layer_norm_refs(const float* x, const std::vector<float>& gamma, const std::vector<float>& beta, int64_t cols,
                     float eps, double* ref, float* naive) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < cols; ++i) mean += x[i];
  mean /= static_cast<double>(cols);
  for (int64_t i = 0; i < cols; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<double>(cols);
  const double inv = 1.0 / std::sqrt(var + eps);
  float meanf = 0, varf = 0;
  for (int64_t i = 0; i < cols; ++i) meanf += x[i];
  meanf /= static_cast<float>(cols);
  for (int64_t i = 0; i < cols; ++i) varf += (x[i] - meanf) * (x[i] - meanf);
  varf /= static_cast<float>(cols);
  const float invf = 1.0f / std::sqrt(varf + eps);
  for (int64_t i = 0; i < cols; ++i) {
    ref[i] = (x[i] - mean) * inv * gamma[static_cast<size_t>(i)] + beta[static_cast<size_t>(i)];
    naive[i] = r16((x[i] - meanf) * invf * gamma[static_cast<size_t>(i)] + beta[static_cast<size_t>(i)]);
  }
}

TEST_F(CudaKernels, LayerNorm) {
  Rng rng(21);
  const float eps = 1e-5f;
  // Rows of up to 2048 columns (multiples of 8) take a warp per row (at ≥ 32 rows an SM, 6001 here on up to 187
  // SMs, warps that walk several rows each), the others one block per row.
  for (int64_t rows : {1, 5, 37, 1500, 6001}) {
    for (int64_t cols : {384, 512, 1280, 2048, 2056, 769, 5125}) {
      // An offset mean and a wide spread: the statistics are where precision is lost.
      const auto x = rng.halfs(static_cast<size_t>(rows * cols), -1.0f, 7.0f);
      const auto gamma = rng.floats(static_cast<size_t>(cols), 0.5f, 1.5f);
      const auto beta = rng.floats(static_cast<size_t>(cols), -0.5f, 0.5f);
      auto dx = upload_half(x);
      auto dg = upload(gamma);
      auto db = upload(beta);
      Dev<__half> dy(x.size());
      dy.poison();
      EXPECT_STATUS_OK(cuda::layer_norm(dx->get(), dg->get(), db->get(), dy.get(), rows, cols, eps, nullptr));
      sync_ok();
      const auto y = download_half(dy.get(), dy.size());
      ErrorCheck check("layer_norm " + std::to_string(rows) + "x" + std::to_string(cols), Out::kHalf);
      std::vector<double> ref(static_cast<size_t>(cols));
      std::vector<float> naive(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        layer_norm_refs(x.data() + r * cols, gamma, beta, cols, eps, ref.data(), naive.data());
        for (int64_t i = 0; i < cols; ++i) {
          check.add(ref[static_cast<size_t>(i)], y[static_cast<size_t>(r * cols + i)], naive[static_cast<size_t>(i)]);
        }
      }
      check.expect();
    }
  }
}

TEST_F(CudaKernels, ConversionsAreExact) {
  Rng rng(31);
  for (int64_t n : {1, 7, 5125, 1500 * 1280 + 3}) {
    for (int64_t offset : {0, 1}) {  // offset 1 takes the scalar path (not 16-byte aligned)
      std::vector<float> f = rng.floats(static_cast<size_t>(n + offset), -70000.0f, 70000.0f);
      for (size_t i = 0; i < f.size(); i += 5) f[i] *= 1e-6f;  // small values and fp16 subnormals
      for (size_t i = 0; i < f.size(); i += 11) f[i] *= 1e-9f;
      auto df = upload(f);
      Dev<__half> dh(f.size());
      dh.poison();
      EXPECT_STATUS_OK(cuda::f32_to_f16(df->get() + offset, dh.get() + offset, n, nullptr));
      sync_ok();
      const auto bits = download_bits(dh.get(), dh.size());
      size_t bad = 0;
      for (int64_t i = 0; i < n; ++i)
        bad += bits[static_cast<size_t>(i + offset)] != float_to_half(f[static_cast<size_t>(i + offset)]);
      EXPECT_EQ(bad, 0u) << "f32_to_f16 n=" << n << " offset=" << offset;

      Dev<float> back(f.size());
      back.poison();
      EXPECT_STATUS_OK(cuda::f16_to_f32(dh.get() + offset, back.get() + offset, n, nullptr));
      sync_ok();
      const auto g = download(back.get(), back.size());
      bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const size_t j = static_cast<size_t>(i + offset);
        bad += g[j] != half_to_float(bits[j]);
      }
      EXPECT_EQ(bad, 0u) << "f16_to_f32 n=" << n << " offset=" << offset;
    }
  }
}

TEST_F(CudaKernels, Gelu) {
  Rng rng(32);
  for (int64_t n : {int64_t{37} * 5125, int64_t{1500} * 5120, int64_t{1001}}) {
    for (int64_t offset : {0, 1}) {
      const auto x = rng.halfs(static_cast<size_t>(n + offset), -6.0f, 6.0f);
      auto dx = upload_half(x);
      EXPECT_STATUS_OK(cuda::gelu(dx->get() + offset, n, nullptr));
      sync_ok();
      const auto y = download_half(dx->get(), x.size());
      ErrorCheck check("gelu n=" + std::to_string(n) + " offset=" + std::to_string(offset), Out::kHalf);
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[static_cast<size_t>(i + offset)];
        check.add(gelu_erf_d(v), y[static_cast<size_t>(i + offset)], r16(gelu_erf_f(v)));
      }
      check.expect();
      if (offset) {
        EXPECT_EQ(y[0], x[0]) << "gelu touched the element before the range";
      }
    }
  }
}

TEST_F(CudaKernels, AddBiasGelu) {
  Rng rng(33);
  struct Case {
    int64_t rows, cols, ld;
    bool bias, gelu;
  };
  for (const Case& c :
       {Case{37, 769, 776, true, true}, Case{1500, 5120, 5120, true, true}, Case{1500, 1280, 1280, true, false},
        Case{37, 5125, 5125, false, true}, Case{5, 384, 392, true, true}}) {
    const auto y0 = rng.halfs(static_cast<size_t>(c.rows * c.ld), -4.0f, 4.0f);
    const auto bias = rng.halfs(static_cast<size_t>(c.cols), -1.0f, 1.0f);
    auto dy = upload_half(y0);
    auto db = upload_half(bias);
    EXPECT_STATUS_OK(
        cuda::add_bias_gelu(dy->get(), c.bias ? db->get() : nullptr, c.rows, c.cols, c.ld, c.gelu, nullptr));
    sync_ok();
    const auto y = download_half(dy->get(), y0.size());
    ErrorCheck check("add_bias_gelu " + std::to_string(c.rows) + "x" + std::to_string(c.cols) + " ld " +
                         std::to_string(c.ld) + (c.bias ? " bias" : "") + (c.gelu ? " gelu" : ""),
                     Out::kHalf);
    size_t padding_changed = 0;
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t j = 0; j < c.ld; ++j) {
        const size_t i = static_cast<size_t>(r * c.ld + j);
        if (j >= c.cols) {
          padding_changed += y[i] != y0[i];
          continue;
        }
        const float b = c.bias ? bias[static_cast<size_t>(j)] : 0.0f;
        const double sd = static_cast<double>(y0[i]) + b;
        const float sf = y0[i] + b;
        check.add(c.gelu ? gelu_erf_d(sd) : sd, y[i], r16(c.gelu ? gelu_erf_f(sf) : sf));
      }
    }
    check.expect();
    EXPECT_EQ(padding_changed, 0u);
  }
}

TEST_F(CudaKernels, AddAndAddRowsAreExact) {
  Rng rng(34);
  for (int64_t n : {int64_t{5125}, int64_t{1500} * 1280, int64_t{13}}) {
    const auto a = rng.halfs(static_cast<size_t>(n), -100.0f, 100.0f);
    const auto b = rng.halfs(static_cast<size_t>(n), -1.0f, 1.0f);
    auto da = upload_half(a);
    auto db = upload_half(b);
    Dev<__half> dy(static_cast<size_t>(n));
    dy.poison();
    EXPECT_STATUS_OK(cuda::add(da->get(), db->get(), dy.get(), n, nullptr));
    EXPECT_STATUS_OK(cuda::add(da->get(), db->get(), da->get(), n, nullptr));  // in place
    sync_ok();
    const auto y = download_bits(dy.get(), static_cast<size_t>(n));
    const auto y2 = download_bits(da->get(), static_cast<size_t>(n));
    size_t bad = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const uint16_t want = float_to_half(a[i] + b[i]);
      bad += (y[i] != want) + (y2[i] != want);
    }
    EXPECT_EQ(bad, 0u) << "add n=" << n;
  }
  for (int64_t cols : {1280, 769}) {
    const int64_t batch = 3, rows = 1500;
    const auto y0 = rng.halfs(static_cast<size_t>(batch * rows * cols), -3.0f, 3.0f);
    const auto pos = rng.halfs(static_cast<size_t>(rows * cols), -1.0f, 1.0f);
    auto dy = upload_half(y0);
    auto dp = upload_half(pos);
    EXPECT_STATUS_OK(cuda::add_rows(dy->get(), dp->get(), batch, rows, cols, nullptr));
    sync_ok();
    const auto y = download_bits(dy->get(), y0.size());
    size_t bad = 0;
    for (size_t i = 0; i < y0.size(); ++i) bad += y[i] != float_to_half(y0[i] + pos[i % pos.size()]);
    EXPECT_EQ(bad, 0u) << "add_rows cols=" << cols;
  }
}

TEST_F(CudaKernels, EmbedTokensIsExact) {
  Rng rng(35);
  for (int64_t d : {384, 1280, 37}) {
    const int64_t n_vocab = 51865, n_ctx = 448, n = 37;
    const auto emb = rng.halfs(static_cast<size_t>(n_vocab * d), -0.2f, 0.2f);
    const auto pos = rng.halfs(static_cast<size_t>(n_ctx * d), -0.05f, 0.05f);
    std::vector<int32_t> tokens(static_cast<size_t>(n)), positions(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      tokens[static_cast<size_t>(i)] = static_cast<int32_t>(rng.gen()() % n_vocab);
      positions[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7) % n_ctx);
    }
    tokens[3] = -1;                                 // invalid id → zero row
    positions[5] = static_cast<int32_t>(n_ctx);     // invalid position → zero row
    tokens[6] = static_cast<int32_t>(n_vocab - 1);  // the last row of the table
    auto de = upload_half(emb);
    auto dp = upload_half(pos);
    auto dt = upload(tokens);
    auto dpos = upload(positions);
    Dev<__half> out(static_cast<size_t>(n * d));
    out.poison();
    EXPECT_STATUS_OK(
        cuda::embed_tokens(dt->get(), dpos->get(), de->get(), dp->get(), out.get(), n, d, n_vocab, n_ctx, nullptr));
    sync_ok();
    const auto y = download_bits(out.get(), out.size());
    size_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t t = tokens[static_cast<size_t>(i)], p = positions[static_cast<size_t>(i)];
      const bool valid = t >= 0 && t < n_vocab && p >= 0 && p < n_ctx;
      for (int64_t c = 0; c < d; ++c) {
        const uint16_t want =
            valid ? float_to_half(emb[static_cast<size_t>(t * d + c)] + pos[static_cast<size_t>(p * d + c)])
                  : float_to_half(0.0f);
        bad += y[static_cast<size_t>(i * d + c)] != want;
      }
    }
    EXPECT_EQ(bad, 0u) << "embed_tokens d=" << d;
  }
}

TEST_F(CudaKernels, Im2colIsExact) {
  Rng rng(36);
  struct Case {
    int64_t batch, t_in, c_in;
    int stride;
  };
  for (const Case& c : {Case{1, 3000, 80, 1}, Case{2, 3000, 384, 2}, Case{1, 37, 769, 2}, Case{3, 37, 5, 1}}) {
    const int64_t t_out = (c.t_in - 1) / c.stride + 1, width = c.c_in * 3;
    // Time-major fp16 input.
    const auto x = rng.halfs(static_cast<size_t>(c.batch * c.t_in * c.c_in), -2, 2);
    auto dx = upload_half(x);
    Dev<__half> col(static_cast<size_t>(c.batch * t_out * width));
    col.poison();
    EXPECT_STATUS_OK(cuda::im2col_k3(dx->get(), col.get(), c.batch, c.t_in, c.c_in, t_out, c.stride, nullptr));
    // Channel-major fp32 mel.
    const auto mel = rng.floats(static_cast<size_t>(c.batch * c.c_in * c.t_in), -2, 2);
    auto dm = upload(mel);
    Dev<__half> col2(col.size());
    col2.poison();
    EXPECT_STATUS_OK(cuda::im2col_k3_mel(dm->get(), col2.get(), c.batch, c.t_in, c.c_in, t_out, c.stride, nullptr));
    sync_ok();
    const auto got = download_bits(col.get(), col.size());
    const auto got2 = download_bits(col2.get(), col2.size());
    size_t bad = 0, bad2 = 0;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t t = 0; t < t_out; ++t)
        for (int64_t ch = 0; ch < c.c_in; ++ch)
          for (int64_t j = 0; j < 3; ++j) {
            const int64_t src = t * c.stride + j - 1;
            const bool in = src >= 0 && src < c.t_in;
            const size_t o = static_cast<size_t>((b * t_out + t) * width + ch * 3 + j);
            bad += got[o] != float_to_half(in ? x[static_cast<size_t>((b * c.t_in + src) * c.c_in + ch)] : 0.0f);
            bad2 += got2[o] != float_to_half(in ? mel[static_cast<size_t>((b * c.c_in + ch) * c.t_in + src)] : 0.0f);
          }
    EXPECT_EQ(bad, 0u) << "im2col_k3 t_in=" << c.t_in << " c_in=" << c.c_in << " stride=" << c.stride;
    EXPECT_EQ(bad2, 0u) << "im2col_k3_mel t_in=" << c.t_in << " c_in=" << c.c_in << " stride=" << c.stride;
  }
}

// ============================================================================================================
// Attention

struct AttentionCase {
  const char* name;
  int64_t batch, n_q, n_kv, heads;
  bool causal;
  int64_t q_offset;
  bool fused_qkv;  // q, k, v as column ranges of one [n, 3d] buffer (needs n_q == n_kv)
  // Key j scaled by 1 + key_ramp · j / n_kv: scores that grow along the keys, so a row's max rises by far more than
  // the kernels' lazy-rescaling threshold (2^8) over its tiles and O is rescaled many times.
  float key_ramp = 0.0f;
  // Every sequence reads the same K/V (batch stride 0; not with fused_qkv): on compute capability 9.0 the one
  // layout the Hopper kernel's tensor maps cannot describe, so its cp.async form runs.
  bool shared_kv = false;
};

void run_attention_case(const AttentionCase& c, uint32_t seed, bool also_unfused) {
  Rng rng(seed);
  const int64_t hd = 64, d = c.heads * hd;
  // q/k spread gives a softmax that is neither flat nor one-hot.
  std::vector<float> qbuf, kvbuf;
  int64_t ldq, ldk, ldv, sq, sk, sv;
  const float* qh;
  const float* kh;
  const float* vh;
  if (c.fused_qkv) {
    qbuf = rng.halfs(static_cast<size_t>(c.batch * c.n_q * 3 * d), -2.0f, 2.0f);
    ldq = ldk = ldv = 3 * d;
    sq = sk = sv = c.n_q * 3 * d;
    qh = qbuf.data();
    kh = qbuf.data() + d;
    vh = qbuf.data() + 2 * d;
  } else {
    qbuf = rng.halfs(static_cast<size_t>(c.batch * c.n_q * d), -2.0f, 2.0f);
    kvbuf = rng.halfs(static_cast<size_t>((c.shared_kv ? 1 : c.batch) * c.n_kv * 2 * d), -2.0f, 2.0f);
    ldq = d;
    ldk = ldv = 2 * d;
    sq = c.n_q * d;
    sk = sv = c.shared_kv ? 0 : c.n_kv * 2 * d;
    qh = qbuf.data();
    kh = kvbuf.data();
    vh = kvbuf.data() + d;
  }
  if (c.key_ramp != 0.0f) {
    std::vector<float>& kbuf = c.fused_qkv ? qbuf : kvbuf;
    const int64_t k_col0 = c.fused_qkv ? d : 0;
    for (int64_t b = 0; b < (c.shared_kv ? 1 : c.batch); ++b) {
      for (int64_t j = 0; j < c.n_kv; ++j) {
        const float f = 1.0f + c.key_ramp * static_cast<float>(j) / static_cast<float>(c.n_kv);
        for (int64_t e = 0; e < d; ++e) {
          float& x = kbuf[static_cast<size_t>(b * sk + j * ldk + k_col0 + e)];
          x = r16(x * f);
        }
      }
    }
  }
  auto dq = upload_half(qbuf);
  auto dkv = upload_half(kvbuf);
  const __half* dqp = dq->get();
  const __half* dkp = c.fused_qkv ? dq->get() + d : dkv->get();
  const __half* dvp = c.fused_qkv ? dq->get() + 2 * d : dkv->get() + d;
  const int64_t ldo = d, so = c.n_q * d;
  Dev<__half> out(static_cast<size_t>(c.batch * c.n_q * d));
  out.poison();
  EXPECT_STATUS_OK(cuda::attention(dqp, ldq, sq, dkp, ldk, sk, dvp, ldv, sv, out.get(), ldo, so, c.batch, c.n_q, c.n_kv,
                                   c.heads, hd, c.causal, c.q_offset, nullptr));
  sync_ok();
  const auto got = download_half(out.get(), out.size());

  std::vector<float> got_unfused;
  if (also_unfused) {
    cuda::GemmContext ctx;
    ASSERT_EQ(ctx.init(), cuda::Status::kOk);
    Dev<char> scratch(cuda::attention_unfused_scratch_bytes(c.n_q, c.n_kv, c.heads));
    Dev<__half> out2(out.size());
    out2.poison();
    for (int64_t b = 0; b < c.batch; ++b) {
      EXPECT_STATUS_OK(cuda::attention_unfused(ctx, dqp + b * sq, ldq, dkp + b * sk, ldk, dvp + b * sv, ldv,
                                               out2.get() + b * so, ldo, c.n_q, c.n_kv, c.heads, hd, c.causal,
                                               c.q_offset, scratch.get(), nullptr));
    }
    sync_ok();
    got_unfused = download_half(out2.get(), out2.size());
  }

  ErrorCheck check(std::string("attention ") + c.name, Out::kHalf);
  ErrorCheck check_unfused(std::string("attention_unfused ") + c.name, Out::kHalf);
  std::vector<double> ref(static_cast<size_t>(hd));
  std::vector<float> naive(static_cast<size_t>(hd));
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i : rng.rows(c.n_q, 40)) {
      const int64_t visible = c.causal ? std::min(c.n_kv, c.q_offset + i + 1) : c.n_kv;
      for (int64_t h = 0; h < c.heads; ++h) {
        attention_row_refs(qh + b * sq + i * ldq + h * hd, kh + b * sk + h * hd, ldk, vh + b * sv + h * hd, ldv,
                           visible, hd, ref.data(), naive.data());
        for (int64_t e = 0; e < hd; ++e) {
          const size_t o = static_cast<size_t>(b * so + i * ldo + h * hd + e);
          check.add(ref[static_cast<size_t>(e)], got[o], naive[static_cast<size_t>(e)]);
          if (also_unfused)
            check_unfused.add(ref[static_cast<size_t>(e)], got_unfused[o], naive[static_cast<size_t>(e)]);
        }
      }
    }
  }
  check.expect();
  if (also_unfused) check_unfused.expect();
}

TEST_F(CudaKernels, EncoderAttentionWhisperSizes) {
  const AttentionCase cases[] = {
      {"tiny 1500x1500 6 heads fused qkv", 1, 1500, 1500, 6, false, 0, true},
      {"base 1500x1500 8 heads fused qkv", 1, 1500, 1500, 8, false, 0, true},
      {"large 1500x1500 20 heads fused qkv", 1, 1500, 1500, 20, false, 0, true},
  };
  uint32_t seed = 41;
  for (const auto& c : cases) run_attention_case(c, seed++, /*also_unfused=*/true);
}

TEST_F(CudaKernels, EncoderAttentionOddSizesBatchAndCausal) {
  const AttentionCase cases[] = {
      {"37 queries x 769 keys 8 heads", 1, 37, 769, 8, false, 0, false},
      {"batch 2, 200x200, 6 heads", 2, 200, 200, 6, false, 0, true},
      {"batch 3, 1 query x 1500 keys, 20 heads", 3, 1, 1500, 20, false, 0, false},
      {"causal 130x130 6 heads", 1, 130, 130, 6, true, 0, true},
      {"causal prompt 37 queries after 100 cached, 6 heads", 1, 37, 137, 6, true, 100, false},
      {"causal prompt 150 queries after 37 cached, 6 heads", 1, 150, 187, 6, true, 37, false},
      {"65 queries x 63 keys 8 heads", 1, 65, 63, 8, false, 0, false},
      {"rising scores 1500x1500 20 heads fused qkv", 1, 1500, 1500, 20, false, 0, true, 6.0f},
      {"rising scores, batch 2, causal 300x300 6 heads", 2, 300, 300, 6, true, 0, false, 6.0f},
      {"batch 3 sharing one K/V, 200 queries x 777 keys, 8 heads", 3, 200, 777, 8, false, 0, false, 2.0f, true},
  };
  uint32_t seed = 51;
  for (const auto& c : cases) run_attention_case(c, seed++, /*also_unfused=*/c.batch == 1);
}

// On compute capability 9.0 attention() runs calls of more than 64 queries on the wgmma kernel (the tests above);
// here the same shapes on the mma.sync kernel every other device runs (elsewhere a repeat of the tests above).
TEST_F(CudaKernels, EncoderAttentionOnTheMmaSyncKernelToo) {
  struct Restore {
    ~Restore() { cuda::set_attention_wgmma(true); }
  } restore;
  cuda::set_attention_wgmma(false);
  ASSERT_FALSE(cuda::attention_wgmma());
  const AttentionCase cases[] = {
      {"large 1500x1500 20 heads fused qkv", 1, 1500, 1500, 20, false, 0, true},
      {"batch 2, 200x200, 6 heads", 2, 200, 200, 6, false, 0, true},
      {"129 queries x 769 keys 8 heads", 1, 129, 769, 8, false, 0, false},
      {"causal 130x130 6 heads", 1, 130, 130, 6, true, 0, true},
      {"causal prompt 150 queries after 37 cached, 6 heads", 1, 150, 187, 6, true, 37, false},
      {"65 queries x 63 keys 8 heads", 1, 65, 63, 8, false, 0, false},
  };
  uint32_t seed = 71;
  for (const auto& c : cases) run_attention_case(c, seed++, /*also_unfused=*/false);
}

TEST_F(CudaKernels, AttentionRefusesWhatItCannotDo) {
  Dev<__half> buf(64 * 1024);
  const __half* p = buf.get();
  EXPECT_EQ(cuda::attention(p, 384, 0, p, 384, 0, p, 384, 0, buf.get(), 384, 0, 1, 10, 10, 12, 32, false, 0, nullptr),
            cuda::Status::kNotSupported);  // head_dim 32
  EXPECT_EQ(cuda::attention(p, 388, 0, p, 384, 0, p, 384, 0, buf.get(), 384, 0, 1, 10, 10, 6, 64, false, 0, nullptr),
            cuda::Status::kInvalidArgument);  // ld not a multiple of 8
  EXPECT_EQ(
      cuda::attention(p + 1, 384, 0, p, 384, 0, p, 384, 0, buf.get(), 384, 0, 1, 10, 10, 6, 64, false, 0, nullptr),
      cuda::Status::kInvalidArgument);  // misaligned
  EXPECT_EQ(cuda::decoder_attention(p, 384, 0, p, 384, 0, p, 384, 0, nullptr, 10, buf.get(), 384, 0, 1, 9, 6, 64, false,
                                    nullptr, 0, nullptr),
            cuda::Status::kInvalidArgument);  // more than kDecoderMaxQueries
}

// ---- decoder attention ----------------------------------------------------------------------------------------

struct DecoderCase {
  const char* name;
  int64_t batch, n_q, n_kv, heads;
  std::vector<int32_t> lens;  // empty: all n_kv (cross-attention)
  bool causal;
  bool shared_kv;    // batch stride 0 for K/V
  bool interleaved;  // K and V as column ranges of one [n_kv, 2d] buffer
};

void run_decoder_case(const DecoderCase& c, uint32_t seed, const std::string& form) {
  Rng rng(seed);
  const int64_t hd = 64, d = c.heads * hd;
  const int64_t ldq = d, sq = c.n_q * d;
  const int64_t ldk = c.interleaved ? 2 * d : d, ldv = ldk;
  const int64_t kv_rows = c.shared_kv ? c.n_kv : c.batch * c.n_kv;
  const int64_t sk = c.shared_kv ? 0 : c.n_kv * ldk, sv = sk;
  const auto q = rng.halfs(static_cast<size_t>(c.batch * sq), -2.0f, 2.0f);
  const auto kbuf = rng.halfs(static_cast<size_t>(kv_rows * ldk), -2.0f, 2.0f);
  const auto vbuf = c.interleaved ? std::vector<float>() : rng.halfs(static_cast<size_t>(kv_rows * ldv), -2.0f, 2.0f);
  auto dq = upload_half(q);
  auto dk = upload_half(kbuf);
  auto dv = upload_half(vbuf);
  const __half* kp = dk->get();
  const __half* vp = c.interleaved ? dk->get() + d : dv->get();
  const float* kh = kbuf.data();
  const float* vh = c.interleaved ? kbuf.data() + d : vbuf.data();
  std::unique_ptr<Dev<int32_t>> dlen;
  if (!c.lens.empty()) dlen = upload(c.lens);

  for (bool with_workspace : {true, false}) {
    const size_t ws_bytes = cuda::decoder_attention_workspace_bytes(c.batch, c.n_q, c.heads, c.n_kv);
    Dev<char> ws(with_workspace ? ws_bytes : 0);
    if (with_workspace) EXPECT_STATUS_OK(cuda::decoder_attention_workspace_init(ws.get(), ws_bytes, nullptr));
    Dev<__half> out(static_cast<size_t>(c.batch * sq));
    // With a workspace, twice: the first call must leave its block counters ready for the next.
    std::vector<float> got, first;
    for (int rep = 0; rep < (with_workspace ? 2 : 1); ++rep) {
      out.poison();
      EXPECT_STATUS_OK(cuda::decoder_attention(
          dq->get(), ldq, sq, kp, ldk, sk, vp, ldv, sv, dlen ? dlen->get() : nullptr, c.n_kv, out.get(), d, sq, c.batch,
          c.n_q, c.heads, hd, c.causal, with_workspace ? ws.get() : nullptr, with_workspace ? ws_bytes : 0, nullptr));
      sync_ok();
      first = got;
      got = download_half(out.get(), out.size());
    }
    if (with_workspace) {
      size_t differ = 0;
      for (size_t i = 0; i < got.size(); ++i) differ += !(got[i] == first[i]);
      EXPECT_EQ(differ, 0u) << c.name << ": a second call with the same workspace gave other results";
    }
    ErrorCheck check(
        std::string("decoder_attention ") + c.name + form + (with_workspace ? " (split keys)" : " (one block)"),
        Out::kHalf);
    std::vector<double> ref(static_cast<size_t>(hd));
    std::vector<float> naive(static_cast<size_t>(hd));
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t len = c.lens.empty() ? c.n_kv : c.lens[static_cast<size_t>(b)];
      for (int64_t i = 0; i < c.n_q; ++i) {
        const int64_t visible = c.causal ? std::max<int64_t>(0, std::min(len, len - c.n_q + i + 1)) : len;
        for (int64_t h = 0; h < c.heads; ++h) {
          attention_row_refs(q.data() + b * sq + i * ldq + h * hd, kh + b * sk + h * hd, ldk, vh + b * sv + h * hd, ldv,
                             visible, hd, ref.data(), naive.data());
          for (int64_t e = 0; e < hd; ++e) {
            check.add(ref[static_cast<size_t>(e)], got[static_cast<size_t>(b * sq + i * ldq + h * hd + e)],
                      naive[static_cast<size_t>(e)]);
          }
        }
      }
    }
    check.expect();
  }
}

TEST_F(CudaKernels, DecoderSelfAttentionOverCache) {
  const DecoderCase cases[] = {
      {"self batch 1, 20 heads, len 224 of 448", 1, 1, 448, 20, {224}, true, false, false},
      {"self batch 5, 6 heads, lens 1/17/448/100/3", 5, 1, 448, 6, {1, 17, 448, 100, 3}, true, false, false},
      {"self 3 queries, batch 3, 8 heads, lens 3/50/448", 3, 3, 448, 8, {3, 50, 448}, true, false, false},
      {"self 8 queries, batch 2, 6 heads, lens 8/300", 2, 8, 448, 6, {8, 300}, true, false, false},
      {"self 2 queries, batch 32, 20 heads, len 100", 32, 2, 448, 20, std::vector<int32_t>(32, 100), true, false,
       false},
  };
  for_each_decoder_attention_form([&](const std::string& form) {
    uint32_t seed = 61;
    for (const auto& c : cases) run_decoder_case(c, seed++, form);
  });
}

TEST_F(CudaKernels, DecoderCrossAttention) {
  const DecoderCase cases[] = {
      {"cross batch 1, 20 heads, 1500 keys", 1, 1, 1500, 20, {}, false, false, true},
      {"cross batch 4 sharing one window, 20 heads", 4, 1, 1500, 20, {}, false, true, true},
      {"cross batch 2, 5 queries, 6 heads", 2, 5, 1500, 6, {}, false, false, true},
      {"cross 769 keys, 8 heads, 4 queries", 1, 4, 769, 8, {}, false, false, false},
      // 640 blocks, no split: the large cross-attention of a batch-32 large-v2 step
      {"cross batch 32, 20 heads, 1500 keys", 32, 1, 1500, 20, {}, false, false, true},
  };
  for_each_decoder_attention_form([&](const std::string& form) {
    uint32_t seed = 71;
    for (const auto& c : cases) run_decoder_case(c, seed++, form);
  });
}

// ============================================================================================================
// Logits

TEST_F(CudaKernels, LogSoftmaxAndArgmax) {
  Rng rng(81);
  struct Case {
    int64_t rows, n, ld;
  };
  for (const Case& c : {Case{1, 51865, 51865}, Case{5, 51865, 51872}, Case{3, 769, 769}, Case{32, 51865, 51865}}) {
    auto x = rng.floats(static_cast<size_t>(c.rows * c.ld), -10.0f, 10.0f);
    for (int64_t r = 0; r < c.rows; ++r) {
      float* row = x.data() + r * c.ld;
      row[rng.gen()() % c.n] = -kInf;  // a suppressed token
      if (r == 1) {                    // a tie at the maximum: the lowest index wins
        row[100] = 12.5f;
        row[50] = 12.5f;
      }
      if (r == 2) row[0] = std::numeric_limits<float>::quiet_NaN();  // NaN never wins
    }
    auto dx = upload(x);
    Dev<int32_t> idx(static_cast<size_t>(c.rows));
    Dev<float> lp(static_cast<size_t>(c.rows));
    idx.poison();
    lp.poison();
    EXPECT_STATUS_OK(cuda::argmax(dx->get(), c.rows, c.n, c.ld, idx.get(), lp.get(), nullptr));
    EXPECT_STATUS_OK(cuda::log_softmax(dx->get(), c.rows, c.n, c.ld, nullptr));
    sync_ok();
    const auto gi = download(idx.get(), idx.size());
    const auto gl = download(lp.get(), lp.size());
    const auto gs = download(dx->get(), x.size());
    ErrorCheck check_ls("log_softmax " + std::to_string(c.rows) + "x" + std::to_string(c.n), Out::kFloat);
    ErrorCheck check_lp("argmax logprob " + std::to_string(c.rows) + "x" + std::to_string(c.n), Out::kFloat);
    for (int64_t r = 0; r < c.rows; ++r) {
      const float* row = x.data() + r * c.ld;
      int64_t best = -1;
      for (int64_t j = 0; j < c.n; ++j) {
        if (std::isnan(row[j])) continue;
        if (best < 0 || row[j] > row[best]) best = j;
      }
      EXPECT_EQ(gi[static_cast<size_t>(r)], best) << "argmax row " << r;
      if (r == 1 && c.n > 100) {
        EXPECT_EQ(gi[1], 50);
      }
      if (r == 2) continue;  // a NaN row has no meaningful log-softmax
      double md = -INFINITY;
      float mf = -kInf;
      for (int64_t j = 0; j < c.n; ++j) {
        md = std::max(md, static_cast<double>(row[j]));
        mf = std::max(mf, row[j]);
      }
      double sd = 0;
      float sf = 0;
      for (int64_t j = 0; j < c.n; ++j) {
        sd += std::exp(static_cast<double>(row[j]) - md);
        sf += std::exp(row[j] - mf);
      }
      const double lse = md + std::log(sd);
      const float lsef = mf + std::log(sf);
      for (int64_t j = 0; j < c.n; ++j) {
        if (row[j] == -kInf) {
          EXPECT_EQ(gs[static_cast<size_t>(r * c.ld + j)], -kInf);
          continue;
        }
        check_ls.add(row[j] - lse, gs[static_cast<size_t>(r * c.ld + j)], row[j] - lsef);
      }
      check_lp.add(row[best] - lse, gl[static_cast<size_t>(r)], row[best] - lsef);
    }
    check_ls.expect();
    check_lp.expect();
  }
}

}  // namespace
}  // namespace wisp::test
