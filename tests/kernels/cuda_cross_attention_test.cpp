// The fused cross-attention with its query projection (src/kernels/cuda/cross_attention.h) against references
// on the host, at tiny's, base's and large-v2's widths, with 1500 keys (a window) and with a few (fewer keys
// than the cluster has blocks), one and two rows, window slots in any order and a padded cache row.
//
// Tolerance, as in cuda_kernels_test.cpp: max|gpu − ref| ≤ 2 · max|naive − ref| + half an fp16 ulp of the
// largest reference value, where
//   ref   — fp64 throughout: the exact layer norm, q = W_q·x̂ + b_q, softmax(q·Kᵀ/8)·V;
//   naive — what the separate kernels compute: x̂ as layer_norm() rounds it (fp32 statistics, fp16), q in fp32
//           rounded to fp16, then fp32 scores and softmax with P rounded to fp16 (attention_row_refs).
// The constants W·γ and W·β come from fold_norm() (checked in cuda_gemv_test). Outputs are poisoned first.
// Without a CUDA device every test but the argument checks skips with "no CUDA device".
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cross_attention.h"
#include "kernels/cuda_test_support.h"

namespace wisp::test {
namespace {

namespace cuda = wisp::kernels::cuda;

struct Case {
  int64_t n_head, n_kv, batch;
  std::vector<int32_t> slots;  // window slot of each row; empty: row b reads slot b
  int64_t pad = 0;             // extra columns per cache row (ld = 2d + pad)
};

void run_case(const Case& c, uint32_t seed) {
  constexpr int64_t kHd = 64;
  constexpr double kEps = 1e-5;
  const int64_t d = c.n_head * kHd, ld = 2 * d + c.pad;
  const int64_t n_slots = c.slots.empty() ? c.batch : 3;
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> unif(-1.0f, 1.0f), pos(0.5f, 1.5f);
  auto halfs = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = r16(scale * unif(gen));
    return v;
  };
  const float a = std::sqrt(3.0f / static_cast<float>(d));
  const auto w = halfs(static_cast<size_t>(d * d), a);
  const auto bias = halfs(static_cast<size_t>(d), 0.5f);
  const auto kv = halfs(static_cast<size_t>(n_slots * c.n_kv * ld), 1.0f);
  std::vector<float> gamma, beta;
  for (int64_t i = 0; i < d; ++i) gamma.push_back(pos(gen)), beta.push_back(0.5f * unif(gen));
  // Rows with their own offset and spread, so that the statistics matter.
  auto x = halfs(static_cast<size_t>(c.batch * d), 1.0f);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < d; ++i) {
      float& v = x[static_cast<size_t>(b * d + i)];
      v = r16(0.75f + 0.5f * static_cast<float>(b) + (1.0f + static_cast<float>(b)) * v);
    }
  }

  auto dx = upload_half(x);
  auto dw = upload_half(w);
  auto db = upload_half(bias);
  auto dkv = upload_half(kv);
  auto dgamma = upload(gamma);
  auto dbeta = upload(beta);
  auto dslots = upload(c.slots);
  Dev<float> w_gamma(static_cast<size_t>(d)), w_beta(static_cast<size_t>(d));
  Dev<__half> out(static_cast<size_t>(c.batch * d));
  out.poison();
  const cuda::WeightView wq{cuda::WeightType::kF16, dw->get(), nullptr, 0};
  ASSERT_EQ(cuda::fold_norm(wq, dgamma->get(), dbeta->get(), w_gamma.get(), w_beta.get(), d, d, nullptr),
            cuda::Status::kOk);
  cuda::KvView cross;
  cross.data = dkv->get();
  cross.ld = ld;
  cross.batch_stride = c.n_kv * ld;
  cross.slot = c.slots.empty() ? nullptr : dslots->get();
  cross.ready = cuda::KvView::Ready::kAll;
  EXPECT_STATUS_OK(cuda::cross_attention_with_query(dx->get(), wq, db->get(),
                                                    cuda::RowNorm{dgamma->get(), w_gamma.get(), w_beta.get(), 1e-5f},
                                                    cross, c.n_kv, out.get(), c.batch, c.n_head, kHd, nullptr));
  sync_ok();
  const auto got = download_half(out.get(), static_cast<size_t>(c.batch * d));

  char name[96];
  std::snprintf(name, sizeof(name), "d=%lld keys=%lld rows=%lld%s%s", static_cast<long long>(d),
                static_cast<long long>(c.n_kv), static_cast<long long>(c.batch), c.slots.empty() ? "" : " slots",
                c.pad ? " padded" : "");
  ErrorCheck check(name, Out::kHalf, 40, 7);
  for (int64_t b = 0; b < c.batch; ++b) {
    const float* xr = x.data() + b * d;
    // the layer norm: fp64, and as layer_norm() rounds it
    double sd = 0.0;
    float sf = 0.0f;
    for (int64_t i = 0; i < d; ++i) sd += xr[i], sf += xr[i];
    const double mean_d = sd / static_cast<double>(d);
    const float mean_f = sf / static_cast<float>(d);
    double qd = 0.0;
    float qf = 0.0f;
    for (int64_t i = 0; i < d; ++i)
      qd += (xr[i] - mean_d) * (xr[i] - mean_d), qf += (xr[i] - mean_f) * (xr[i] - mean_f);
    const double inv_d = 1.0 / std::sqrt(qd / static_cast<double>(d) + kEps);
    const float inv_f = 1.0f / std::sqrt(qf / static_cast<float>(d) + static_cast<float>(kEps));
    std::vector<double> xn_d(static_cast<size_t>(d));
    std::vector<float> xn_f(static_cast<size_t>(d));
    for (int64_t i = 0; i < d; ++i) {
      const auto e = static_cast<size_t>(i);
      xn_d[e] = (xr[i] - mean_d) * inv_d * gamma[e] + beta[e];
      xn_f[e] = r16((xr[i] - mean_f) * inv_f * gamma[e] + beta[e]);
    }
    std::vector<double> q_d(static_cast<size_t>(d));
    std::vector<float> q_f(static_cast<size_t>(d));
    for (int64_t j = 0; j < d; ++j) {
      double s = bias[static_cast<size_t>(j)];
      float t = bias[static_cast<size_t>(j)];
      for (int64_t i = 0; i < d; ++i) {
        s += static_cast<double>(w[static_cast<size_t>(j * d + i)]) * xn_d[static_cast<size_t>(i)];
        t += w[static_cast<size_t>(j * d + i)] * xn_f[static_cast<size_t>(i)];
      }
      q_d[static_cast<size_t>(j)] = s;
      q_f[static_cast<size_t>(j)] = r16(t);
    }
    const int64_t slot = c.slots.empty() ? b : c.slots[static_cast<size_t>(b)];
    const float* kv_s = kv.data() + slot * c.n_kv * ld;
    for (int64_t h = 0; h < c.n_head; ++h) {
      const float* k = kv_s + h * kHd;
      const float* v = kv_s + d + h * kHd;
      // fp64 attention of the exact query
      std::vector<double> p(static_cast<size_t>(c.n_kv));
      double mx = -INFINITY, z = 0.0;
      for (int64_t t = 0; t < c.n_kv; ++t) {
        double s = 0.0;
        for (int64_t e = 0; e < kHd; ++e) s += q_d[static_cast<size_t>(h * kHd + e)] * k[t * ld + e];
        p[static_cast<size_t>(t)] = s / 8.0;
        mx = std::max(mx, s / 8.0);
      }
      for (auto& s : p) s = std::exp(s - mx), z += s;
      double ref_unused[kHd];
      float naive[kHd];
      attention_row_refs(q_f.data() + h * kHd, k, ld, v, ld, c.n_kv, kHd, ref_unused, naive);
      for (int64_t e = 0; e < kHd; ++e) {
        double o = 0.0;
        for (int64_t t = 0; t < c.n_kv; ++t) o += p[static_cast<size_t>(t)] * v[t * ld + e];
        check.add(o / z, got[static_cast<size_t>(b * d + h * kHd + e)], naive[e]);
      }
    }
  }
  check.expect();
}

class CudaCrossAttention : public DeviceTest {
 protected:
  void SetUp() override {
    DeviceTest::SetUp();
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (major < 9) GTEST_SKIP() << "needs compute capability 9.0 (thread-block clusters)";
  }
};

TEST_F(CudaCrossAttention, WhisperWidthsAgainstReferences) {
  uint32_t seed = 1;
  run_case({6, 1500, 1, {}}, seed++);       // tiny
  run_case({8, 1500, 2, {2, 0}}, seed++);   // base, two rows in other slots
  run_case({20, 1500, 1, {}, 64}, seed++);  // large-v2, padded cache rows
  run_case({20, 1500, 2, {1, 1}}, seed++);  // large-v2, two rows sharing a window
  run_case({20, 37, 1, {}}, seed++);        // fewer keys than the cluster's blocks get
  run_case({6, 5, 2, {}}, seed++);          // a handful of keys
}

// Argument checks happen on the host before any launch, so they run without a device too. The pointers are
// never dereferenced.
TEST(CudaCrossAttentionArguments, RefusesWhatItCannotDo) {
  using S = cuda::Status;
  const auto* x = reinterpret_cast<const __half*>(uintptr_t{0x10000});
  auto* out = reinterpret_cast<__half*>(uintptr_t{0x20000});
  const auto* g = reinterpret_cast<const float*>(uintptr_t{0x30000});
  const cuda::WeightView wq{cuda::WeightType::kF16, reinterpret_cast<const void*>(uintptr_t{0x40000}), nullptr, 0};
  const cuda::RowNorm norm{g, g, g, 1e-5f};
  cuda::KvView cross;
  cross.data = reinterpret_cast<void*>(uintptr_t{0x50000});
  cross.ld = 2 * 384;
  cross.batch_stride = 1500 * cross.ld;
  cross.ready = cuda::KvView::Ready::kAll;
  const auto call = [&](const cuda::WeightView& w, const cuda::RowNorm& n, const cuda::KvView& kv, int64_t batch) {
    return cuda::cross_attention_with_query(x, w, x, n, kv, 1500, out, batch, 6, 64, nullptr);
  };
  EXPECT_EQ(call(wq, norm, cross, 0), S::kInvalidArgument);
  EXPECT_EQ(call(wq, norm, cross, 3), S::kNotSupported);  // more rows than the fused kernel takes
  cuda::WeightView i8 = wq;
  i8.type = cuda::WeightType::kI8;
  EXPECT_EQ(call(i8, norm, cross, 1), S::kNotSupported);
  EXPECT_EQ(call(wq, cuda::RowNorm{}, cross, 1), S::kNotSupported);  // the kernel always folds a norm
  cuda::KvView other = cross;
  other.type = cuda::KvType::kFp8;
  EXPECT_EQ(call(wq, norm, other, 1), S::kNotSupported);
  other = cross;
  other.ready = cuda::KvView::Ready::kNone;
  EXPECT_EQ(call(wq, norm, other, 1), S::kNotSupported);
  other = cross;
  other.ld = 2 * 384 - 8;
  EXPECT_EQ(call(wq, norm, other, 1), S::kInvalidArgument);
  other = cross;
  other.data = nullptr;
  EXPECT_EQ(call(wq, norm, other, 1), S::kInvalidArgument);
  EXPECT_EQ(cuda::cross_attention_with_query(x, wq, x, norm, cross, 1500, out, 1, 6, 32, nullptr), S::kNotSupported);
}

}  // namespace
}  // namespace wisp::test
