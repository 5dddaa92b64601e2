// The small-batch GEMV (src/kernels/cuda/gemv.h) over fp16, int8 and int4 weights, against references on
// the host, at Whisper decoder sizes (d 384..1280: QKV, projections, fc1, fc2, logits) and odd sizes (769 and
// 51865 rows, k with a partial last chunk, fewer rows than one tile).
//
// Tolerance, as in cuda_kernels_test.cpp: for each case
//   ref   — fp64 over the exact inputs and the exactly dequantised weights q·scale,
//   naive — what the large-batch path computes: the weights dequantised to fp16 (dequantize_weight),
//           fp32 accumulation, the epilogue in fp32 and one rounding to fp16,
// and max|gpu − ref| ≤ 2 · max|naive − ref| + half an fp16 ulp of the largest reference value (2^-20 of it
// for fp32 outputs). Outputs are poisoned with NaN first. dequantize_weight must match bit for bit.
// With a folded row norm (RowNorm), ref normalises the rows in fp64 and naive as layer_norm() does (fp32
// statistics, the normalised row rounded to fp16) before the product; the norm's constants W·γ and W·β come
// from fold_norm(), which is checked against fp64 sums on the host first (relative error ≤ 2^-22 of Σ|W·γ|).
//
// Without a CUDA device every test but the argument checks skips with "no CUDA device".
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda_test_support.h"

namespace wisp::test {
namespace {

namespace cuda = wisp::kernels::cuda;
using cuda::WeightType;
using wisp::core::float_to_half;

// A random weight of one type, with its exact (fp64) and fp16-rounded dequantisations on the host.
struct HostWeight {
  WeightType type;
  int64_t n, k;
  int group;
  std::vector<float> f16;     // kF16: the values
  std::vector<uint8_t> q;     // kI8: int8 bytes [n, k]; kI4: packed [n, k/2]
  std::vector<float> scales;  // kI8: [n]; kI4: [n, k/group]
  std::unique_ptr<Dev<uint8_t>> dq;
  std::unique_ptr<Dev<__half>> dh;
  std::unique_ptr<Dev<float>> ds;

  HostWeight(WeightType t, int64_t n_, int64_t k_, int g, std::mt19937& gen) : type(t), n(n_), k(k_), group(g) {
    const float a = std::sqrt(3.0f / static_cast<float>(k));
    std::uniform_real_distribution<float> unit(0.5f, 1.5f);
    if (type == WeightType::kF16) {
      std::uniform_real_distribution<float> d(-a, a);
      f16.resize(static_cast<size_t>(n * k));
      for (auto& v : f16) v = r16(d(gen));
      return;
    }
    std::uniform_int_distribution<int> byte(type == WeightType::kI8 ? 1 : 0, 255);  // int8: −127..127
    q.resize(static_cast<size_t>(type == WeightType::kI8 ? n * k : n * k / 2));
    for (auto& b : q) b = static_cast<uint8_t>(byte(gen));
    scales.resize(static_cast<size_t>(type == WeightType::kI8 ? n : n * (k / group)));
    const float qmax = type == WeightType::kI8 ? 127.0f : 8.0f;
    for (auto& s : scales) s = unit(gen) * a / qmax;
  }
  int quant(int64_t j, int64_t i) const {
    if (type == WeightType::kI8) return static_cast<int8_t>(q[static_cast<size_t>(j * k + i)]);
    const uint8_t b = q[static_cast<size_t>(j * (k / 2) + i / 2)];
    return ((i % 2 == 0) ? (b & 0xf) : (b >> 4)) - 8;
  }
  float scale(int64_t j, int64_t i) const {
    return type == WeightType::kI8 ? scales[static_cast<size_t>(j)]
                                   : scales[static_cast<size_t>(j * (k / group) + i / group)];
  }
  // Exact W[j, i] (q·scale in fp64) and the fp16 value dequantize_weight gives (fp32 product, then fp16).
  double exact(int64_t j, int64_t i) const {
    if (type == WeightType::kF16) return f16[static_cast<size_t>(j * k + i)];
    return static_cast<double>(quant(j, i)) * scale(j, i);
  }
  float rounded(int64_t j, int64_t i) const {
    if (type == WeightType::kF16) return f16[static_cast<size_t>(j * k + i)];
    return r16(static_cast<float>(quant(j, i)) * scale(j, i));
  }
  cuda::WeightView view() {
    cuda::WeightView w;
    w.type = type;
    w.group = group;
    if (type == WeightType::kF16) {
      if (!dh) dh = upload_half(f16);
      w.data = dh->get();
    } else {
      if (!dq) dq = upload(q);
      if (!ds) ds = upload(scales);
      w.data = dq->get();
      w.scales = ds->get();
    }
    return w;
  }
};

const char* type_name(WeightType t, int group) {
  if (t == WeightType::kF16) return "f16";
  if (t == WeightType::kI8) return "i8";
  return group == 64 ? "i4g64" : "i4g128";
}

struct Case {
  WeightType type;
  int group;
  int64_t m, n, k;
  bool bias = false, gelu = false, residual = false, in_place = false, f32_out = false, norm = false;
};

// The rows of x [m, k] normalised: in fp64 (exact) and as layer_norm() computes them (fp32, rounded to fp16).
void normalise_rows(const std::vector<float>& x, const std::vector<float>& gamma, const std::vector<float>& beta,
                    int64_t m, int64_t k, std::vector<double>& exact, std::vector<float>& rounded) {
  constexpr float kEps = 1e-5f;
  exact.resize(x.size());
  rounded.resize(x.size());
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x.data() + r * k;
    double sd = 0.0;
    float sf = 0.0f;
    for (int64_t i = 0; i < k; ++i) sd += xr[i], sf += xr[i];
    const double mean_d = sd / static_cast<double>(k);
    const float mean_f = sf / static_cast<float>(k);
    double qd = 0.0;
    float qf = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      qd += (xr[i] - mean_d) * (xr[i] - mean_d);
      qf += (xr[i] - mean_f) * (xr[i] - mean_f);
    }
    const double inv_d = 1.0 / std::sqrt(qd / static_cast<double>(k) + kEps);
    const float inv_f = 1.0f / std::sqrt(qf / static_cast<float>(k) + kEps);
    for (int64_t i = 0; i < k; ++i) {
      const auto e = static_cast<size_t>(r * k + i), c = static_cast<size_t>(i);
      exact[e] = (xr[i] - mean_d) * inv_d * gamma[c] + beta[c];
      rounded[e] = r16((xr[i] - mean_f) * inv_f * gamma[c] + beta[c]);
    }
  }
}

// fold_norm(w, γ, β) against fp64 sums over the exact weights: W·γ and W·β, each within 2^-22 of Σ|W|·|γ| (the
// fp32 rounding of an fp64 sum); leaves them in w_gamma / w_beta [n] for the GEMV.
void check_fold(HostWeight& w, const float* dgamma, const float* dbeta, const std::vector<float>& gamma,
                const std::vector<float>& beta, float* w_gamma, float* w_beta) {
  ASSERT_EQ(cuda::fold_norm(w.view(), dgamma, dbeta, w_gamma, w_beta, w.n, w.k, nullptr), cuda::Status::kOk);
  sync_ok();
  const auto got_g = download(w_gamma, static_cast<size_t>(w.n)), got_b = download(w_beta, static_cast<size_t>(w.n));
  size_t bad = 0;
  for (int64_t j = 0; j < w.n; ++j) {
    double g = 0.0, b = 0.0, ga = 0.0, ba = 0.0;
    for (int64_t i = 0; i < w.k; ++i) {
      const double wji = w.exact(j, i);
      g += wji * gamma[static_cast<size_t>(i)], ga += std::fabs(wji * gamma[static_cast<size_t>(i)]);
      b += wji * beta[static_cast<size_t>(i)], ba += std::fabs(wji * beta[static_cast<size_t>(i)]);
    }
    bad += std::fabs(got_g[static_cast<size_t>(j)] - g) > 0x1p-22 * ga + 1e-30;
    bad += std::fabs(got_b[static_cast<size_t>(j)] - b) > 0x1p-22 * ba + 1e-30;
  }
  EXPECT_EQ(bad, 0u) << "fold_norm n=" << w.n << " k=" << w.k;
}

// The output columns compared: all of them up to 8192, else a random sample with both ends and the last tile.
std::vector<int64_t> columns(int64_t n, std::mt19937& gen) {
  std::vector<int64_t> cols;
  if (n <= 8192) {
    for (int64_t j = 0; j < n; ++j) cols.push_back(j);
    return cols;
  }
  for (int64_t j = 0; j < 32; ++j) cols.push_back(j);
  for (int64_t j = n - 40; j < n; ++j) cols.push_back(j);
  std::uniform_int_distribution<int64_t> d(32, n - 41);
  for (int i = 0; i < 2048; ++i) cols.push_back(d(gen));
  std::sort(cols.begin(), cols.end());
  cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
  return cols;
}

void run_case(const Case& c, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> unif(-1.0f, 1.0f);
  auto halfs = [&](int64_t count, float scale) {
    std::vector<float> v(static_cast<size_t>(count));
    for (auto& x : v) x = r16(scale * unif(gen));
    return v;
  };
  HostWeight w(c.type, c.n, c.k, c.group, gen);
  auto x = halfs(c.m * c.k, 1.0f);
  const auto bias = c.bias ? halfs(c.n, 0.5f) : std::vector<float>();
  const auto res = c.residual ? halfs(c.m * c.n, 1.0f) : std::vector<float>();
  // The product's left operand: x, or its normalised rows (ref: fp64, naive: as layer_norm() rounds them).
  std::vector<double> xd(x.begin(), x.end());
  std::vector<float> xf = x;
  std::vector<float> gamma, beta;
  if (c.norm) {
    // A different offset and spread per row, so that the statistics matter.
    for (int64_t r = 0; r < c.m; ++r) {
      for (int64_t i = 0; i < c.k; ++i) {
        float& v = x[static_cast<size_t>(r * c.k + i)];
        v = r16(0.25f * static_cast<float>(r) + (1.0f + 0.5f * static_cast<float>(r)) * v);
      }
    }
    std::uniform_real_distribution<float> g(0.5f, 1.5f), b(-0.5f, 0.5f);
    for (int64_t i = 0; i < c.k; ++i) gamma.push_back(g(gen)), beta.push_back(b(gen));
    normalise_rows(x, gamma, beta, c.m, c.k, xd, xf);
  }
  auto dgamma = upload(gamma);
  auto dbeta = upload(beta);
  Dev<float> w_gamma(c.norm ? static_cast<size_t>(c.n) : 0), w_beta(c.norm ? static_cast<size_t>(c.n) : 0);
  if (c.norm) check_fold(w, dgamma->get(), dbeta->get(), gamma, beta, w_gamma.get(), w_beta.get());
  const cuda::RowNorm norm{c.norm ? dgamma->get() : nullptr, w_gamma.get(), w_beta.get(), 1e-5f};

  auto dx = upload_half(x);
  auto db = upload_half(bias);
  auto dr = upload_half(res);
  Dev<__half> dy(static_cast<size_t>(c.m * c.n));
  Dev<float> dy32(c.f32_out ? static_cast<size_t>(c.m * c.n) : 0);
  const cuda::WeightView view = w.view();
  std::vector<float> got;
  if (c.f32_out) {
    dy32.poison();
    EXPECT_EQ(cuda::gemv_f32_out(dx->get(), view, dy32.get(), c.m, c.n, c.k, nullptr, norm), cuda::Status::kOk);
    sync_ok();
    got = download(dy32.get(), static_cast<size_t>(c.m * c.n));
  } else {
    __half* y = c.in_place ? dr->get() : dy.get();
    if (!c.in_place) dy.poison();
    EXPECT_EQ(cuda::gemv(dx->get(), view, c.bias ? db->get() : nullptr, c.residual ? dr->get() : nullptr, y, c.m, c.n,
                         c.k, c.gelu, nullptr, norm),
              cuda::Status::kOk);
    sync_ok();
    got = download_half(y, static_cast<size_t>(c.m * c.n));
  }

  char name[160];
  std::snprintf(name, sizeof(name), "%s m=%lld n=%lld k=%lld%s%s%s%s%s%s", type_name(c.type, c.group),
                static_cast<long long>(c.m), static_cast<long long>(c.n), static_cast<long long>(c.k),
                c.norm ? " +norm" : "", c.bias ? " +bias" : "", c.gelu ? " +gelu" : "", c.residual ? " +res" : "",
                c.in_place ? " (in place)" : "", c.f32_out ? " f32" : "");
  ErrorCheck check(name, c.f32_out ? Out::kFloat : Out::kHalf, 62, 8);
  std::vector<double> wd(static_cast<size_t>(c.k));
  std::vector<float> wf(static_cast<size_t>(c.k));
  for (int64_t j : columns(c.n, gen)) {
    for (int64_t i = 0; i < c.k; ++i) {
      wd[static_cast<size_t>(i)] = w.exact(j, i);
      wf[static_cast<size_t>(i)] = w.rounded(j, i);
    }
    for (int64_t r = 0; r < c.m; ++r) {
      const double* xdr = xd.data() + r * c.k;
      const float* xfr = xf.data() + r * c.k;
      double sd = 0.0;
      float sf = 0.0f;
      for (int64_t i = 0; i < c.k; ++i) {
        sd += xdr[i] * wd[static_cast<size_t>(i)];
        sf += xfr[i] * wf[static_cast<size_t>(i)];
      }
      if (c.bias) {
        sd += bias[static_cast<size_t>(j)];
        sf += bias[static_cast<size_t>(j)];
      }
      if (c.gelu) {
        sd = gelu_erf_d(sd);
        sf = gelu_erf_f(sf);
      }
      if (c.residual) {
        sd += res[static_cast<size_t>(r * c.n + j)];
        sf += res[static_cast<size_t>(r * c.n + j)];
      }
      if (!c.f32_out) sf = r16(sf);
      check.add(sd, got[static_cast<size_t>(r * c.n + j)], sf);
    }
  }
  check.expect();
}

struct Format {
  WeightType type;
  int group;
};
constexpr Format kFormats[] = {
    {WeightType::kF16, 0}, {WeightType::kI8, 0}, {WeightType::kI4, 64}, {WeightType::kI4, 128}};

class CudaGemv : public DeviceTest {};

TEST_F(CudaGemv, EveryRowCountAndType) {
  uint32_t seed = 1;
  for (const Format& f : kFormats) {
    for (int64_t m = 1; m <= cuda::kGemvMaxRows; ++m) {
      Case c{f.type, f.group, m, 769, 1280};
      c.bias = m % 2 == 1;
      run_case(c, seed++);
    }
  }
}

// The six decoder GEMVs of a layer at every Whisper width: QKV (3d, d), self/cross projections (d, d), the
// cross-attention K/V (2d, d), fc1 (4d, d) with GELU, fc2 (d, 4d) added in place to the residual stream.
TEST_F(CudaGemv, WhisperShapes) {
  uint32_t seed = 100;
  for (int64_t d : {384, 512, 768, 1024, 1280}) {
    for (const Format& f : kFormats) {
      const int64_t m = d == 1280 ? 8 : 1 + seed % 8;
      Case qkv{f.type, f.group, m, 3 * d, d};
      qkv.bias = true;
      run_case(qkv, seed++);
      Case out{f.type, f.group, m, d, d};
      out.bias = out.residual = out.in_place = true;
      run_case(out, seed++);
      Case kv{f.type, f.group, m, 2 * d, d};
      run_case(kv, seed++);
      Case fc1{f.type, f.group, m, 4 * d, d};
      fc1.bias = fc1.gelu = true;
      run_case(fc1, seed++);
      Case fc2{f.type, f.group, m, d, 4 * d};
      fc2.bias = fc2.residual = fc2.in_place = true;
      run_case(fc2, seed++);
    }
  }
}

// One row through large-v2's fc1 and fc2: the CUDA-core kernel then needs more than one round of weight
// vectors a thread, the second staged in shared memory before the wait (kTailRounds).
TEST_F(CudaGemv, OneRowOverSeveralRounds) {
  uint32_t seed = 700;
  for (const Format& f : kFormats) {
    Case fc1{f.type, f.group, 1, 4 * 1280, 1280};
    fc1.bias = fc1.gelu = true;
    run_case(fc1, seed++);
    Case fc2{f.type, f.group, 1, 1280, 4 * 1280};
    fc2.bias = fc2.residual = fc2.in_place = true;
    run_case(fc2, seed++);
  }
}

TEST_F(CudaGemv, EpiloguesAndOddSizes) {
  uint32_t seed = 200;
  for (const Format& f : kFormats) {
    for (int64_t m : {2, 7}) {
      // Residual into a separate output, with and without bias and GELU.
      Case a{f.type, f.group, m, 769, 5120};
      a.residual = true;
      run_case(a, seed++);
      Case b{f.type, f.group, m, 769, 384};
      b.bias = b.gelu = b.residual = true;
      run_case(b, seed++);
      // Fewer rows than one 16-row tile; a k whose last chunk is partial (or, for int4, one odd group).
      Case c{f.type, f.group, m, 17, f.type == WeightType::kF16 ? 1288 : f.type == WeightType::kI8 ? 1296 : 1344};
      if (c.type == WeightType::kI4 && f.group == 128) c.k = 1408;
      c.bias = true;
      run_case(c, seed++);
    }
  }
}

// The decoder's pre-norms folded into the GEMVs that consume them: QKV, cross Q, fc1 (+GELU) and the logits,
// at every row count (both kernels) and type, at large-v2's width and at tiny's.
TEST_F(CudaGemv, FoldedRowNorm) {
  uint32_t seed = 500;
  for (const Format& f : kFormats) {
    for (int64_t m : {1, 2, 3, 5, 8}) {
      Case qkv{f.type, f.group, m, 3 * 1280, 1280};
      qkv.norm = qkv.bias = true;
      run_case(qkv, seed++);
    }
    Case fc1{f.type, f.group, 4, 4 * 384, 384};
    fc1.norm = fc1.bias = fc1.gelu = true;
    run_case(fc1, seed++);
    Case q{f.type, f.group, 7, 384, 384};
    q.norm = q.bias = true;
    run_case(q, seed++);
    Case logits{f.type, f.group, 2, 51865, 1280};
    logits.norm = logits.f32_out = true;
    run_case(logits, seed++);
  }
}

// More rows than one group of kGemvMaxRows: 2 groups a block with the weights converted once (m = 9, 12: the
// second partial; 16: both full; 17, 23, 40, 64: further blocks along grid y, the last partial where m % 16 ≠ 0),
// and with the folded norm one group a block (odd m); the epilogues and fp32 outputs, at decoder shapes and odd
// ones.
TEST_F(CudaGemv, RowGroupsBeyondEight) {
  uint32_t seed = 600;
  for (const Format& f : kFormats) {
    for (int64_t m : {int64_t{9}, int64_t{16}, int64_t{23}, int64_t{40}, cuda::kGemvMaxGroupedRows}) {
      Case qkv{f.type, f.group, m, 3 * 1280, 1280};
      qkv.bias = qkv.norm = m % 2 == 1;
      run_case(qkv, seed++);
      Case fc2{f.type, f.group, m, 1280, 5120};
      fc2.bias = fc2.residual = fc2.in_place = true;
      run_case(fc2, seed++);
    }
    Case odd{f.type, f.group, 17, 769, 384};
    odd.gelu = odd.bias = true;
    run_case(odd, seed++);
    Case logits{f.type, f.group, 12, 51865, 384};
    logits.f32_out = true;
    run_case(logits, seed++);
    if (f.type !=
        WeightType::kI4) {  // k = 1296: a last chunk of k only partly inside the row (int4's k is whole groups)
      Case part{f.type, f.group, 29, 200, 1296};
      part.bias = part.residual = true;
      run_case(part, seed++);
    }
  }
}

// fp16 and int8 weights at 9..64 rows on an H100/H200 run the wgmma kernel (gemv_sm90a.cu): each case with
// clusters of up to 8 and 1 block, and with the kernel switched off (rows_gemv_kernel), against the fp64
// reference. Partial weight tiles (n % 64 ≠ 0), a k that ends inside a 64-column atom, every padded row count (16,
// 32, 64), the epilogues and fp32 outputs. On other devices every setting runs rows_gemv_kernel.
TEST_F(CudaGemv, WeightsOnEitherTensorCoreKernel) {
  struct Restore {
    ~Restore() { cuda::set_gemv_wgmma(cuda::kDefaultGemvWgmmaCluster); }
  } restore;
  for (WeightType type : {WeightType::kF16, WeightType::kI8}) {
    for (int cluster : {8, 1, 0}) {
      SCOPED_TRACE(std::string(type_name(type, 0)) + ", max cluster " + std::to_string(cluster));
      cuda::set_gemv_wgmma(cluster);
      uint32_t seed = 700;
      for (int64_t m : {int64_t{9}, int64_t{16}, int64_t{31}, int64_t{33}, cuda::kGemvMaxGroupedRows}) {
        Case qkv{type, 0, m, 3 * 1280, 1280};
        qkv.bias = true;
        run_case(qkv, seed++);
        Case fc2{type, 0, m, 1280, 5120};
        fc2.bias = fc2.residual = fc2.in_place = true;
        run_case(fc2, seed++);
      }
      Case odd{type, 0, 17, 769, 400};
      odd.gelu = odd.bias = true;
      run_case(odd, seed++);
      Case logits{type, 0, 12, 51865, 384};
      logits.f32_out = true;
      run_case(logits, seed++);
      Case part{type, 0, 64, 200, 1296};
      part.bias = part.residual = true;
      run_case(part, seed++);
    }
  }
}

TEST_F(CudaGemv, LogitsF32Out) {
  uint32_t seed = 300;
  for (const Format& f : kFormats) {
    for (int64_t m : {1, 5, 8}) {
      Case c{f.type, f.group, m, 51865, m == 5 ? 384 : 1280};
      c.f32_out = true;
      run_case(c, seed++);
    }
  }
}

TEST_F(CudaGemv, DequantizeIsExact) {
  std::mt19937 gen(400);
  for (const Format& f : kFormats) {
    for (int64_t n : {17, 1280}) {
      HostWeight w(f.type, n, 1280, f.group, gen);
      Dev<__half> out(static_cast<size_t>(n * 1280));
      out.poison();
      EXPECT_EQ(cuda::dequantize_weight(w.view(), out.get(), n, 1280, nullptr), cuda::Status::kOk);
      sync_ok();
      const auto bits = download_bits(out.get(), static_cast<size_t>(n * 1280));
      size_t mismatches = 0;
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t i = 0; i < 1280; ++i) {
          mismatches += bits[static_cast<size_t>(j * 1280 + i)] != float_to_half(w.rounded(j, i));
        }
      }
      EXPECT_EQ(mismatches, 0u) << type_name(f.type, f.group) << " n=" << n;
    }
  }
}

// Argument checks happen on the host before any launch, so they run without a device too. The pointers are
// never dereferenced.
TEST(CudaGemvArguments, RefusesWhatItCannotDo) {
  using S = cuda::Status;
  const auto* x = reinterpret_cast<const __half*>(uintptr_t{0x10000});
  auto* y = reinterpret_cast<__half*>(uintptr_t{0x20000});
  auto* y32 = reinterpret_cast<float*>(uintptr_t{0x20000});
  const auto* scales = reinterpret_cast<const float*>(uintptr_t{0x30000});
  cuda::WeightView f16{WeightType::kF16, reinterpret_cast<const void*>(uintptr_t{0x40000}), nullptr, 0};
  cuda::WeightView i8{WeightType::kI8, f16.data, scales, 0};
  cuda::WeightView i4{WeightType::kI4, f16.data, scales, 128};

  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, y, 0, 64, 64, false, nullptr), S::kInvalidArgument);  // m = 0
  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, y, cuda::kGemvMaxGroupedRows + 1, 64, 64, false, nullptr),
            S::kInvalidArgument);  // m > kGemvMaxGroupedRows
  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, y, 1, 0, 64, false, nullptr), S::kInvalidArgument);    // n = 0
  EXPECT_EQ(cuda::gemv(x, i4, nullptr, nullptr, y, 1, 64, 1344, false, nullptr), S::kInvalidArgument);  // k % G
  EXPECT_EQ(cuda::gemv(nullptr, f16, nullptr, nullptr, y, 1, 64, 64, false, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, nullptr, 1, 64, 64, false, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::gemv(x + 1, f16, nullptr, nullptr, y, 1, 64, 64, false, nullptr), S::kInvalidArgument);  // align
  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, y, 1, 64, 68, false, nullptr), S::kNotSupported);         // k % 8
  EXPECT_EQ(cuda::gemv(x, i8, nullptr, nullptr, y, 1, 64, 72, false, nullptr), S::kNotSupported);          // k % 16

  cuda::WeightView bad = f16;
  bad.data = nullptr;
  EXPECT_EQ(cuda::gemv(x, bad, nullptr, nullptr, y, 1, 64, 64, false, nullptr), S::kInvalidArgument);
  bad = i8;
  bad.scales = nullptr;
  EXPECT_EQ(cuda::gemv(x, bad, nullptr, nullptr, y, 1, 64, 64, false, nullptr), S::kInvalidArgument);
  bad = i4;
  bad.group = 32;
  EXPECT_EQ(cuda::gemv(x, bad, nullptr, nullptr, y, 1, 64, 128, false, nullptr), S::kNotSupported);
  bad.group = 0;
  EXPECT_EQ(cuda::gemv(x, bad, nullptr, nullptr, y, 1, 64, 128, false, nullptr), S::kInvalidArgument);

  EXPECT_EQ(cuda::gemv_f32_out(x, i8, y32, cuda::kGemvMaxGroupedRows + 1, 64, 64, nullptr), S::kInvalidArgument);
  const auto* gamma = reinterpret_cast<const float*>(uintptr_t{0x50000});
  auto* sums = reinterpret_cast<float*>(uintptr_t{0x60000});
  const cuda::RowNorm no_sums{gamma, nullptr, sums, 1e-5f}, no_eps{gamma, sums, sums, 0.0f},
      misaligned{gamma + 1, sums, sums, 1e-5f};
  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, y, 1, 64, 64, false, nullptr, no_sums), S::kInvalidArgument);
  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, y, 1, 64, 64, false, nullptr, no_eps), S::kInvalidArgument);
  EXPECT_EQ(cuda::gemv(x, f16, nullptr, nullptr, y, 1, 64, 64, false, nullptr, misaligned), S::kInvalidArgument);
  EXPECT_EQ(cuda::fold_norm(f16, gamma, nullptr, sums, sums, 64, 64, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::fold_norm(bad, gamma, gamma, sums, sums, 64, 128, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::gemv_f32_out(x, i4, nullptr, 1, 64, 128, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::dequantize_weight(i4, y, 64, 1344, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::dequantize_weight(i8, nullptr, 64, 64, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::dequantize_weight(i8, y + 1, 64, 64, nullptr), S::kInvalidArgument);
}

}  // namespace
}  // namespace wisp::test
