// Quantised KV caches (kv_quant.h) against host references.
//
// - Codes: every int8 code written by kv_quantize / kv_append_quantized equals the host quantiser's (round to
//   nearest even of x · (1 / scale) in fp32, clamped to ±127), every e4m3 code decodes to the host's
//   nearest-even e4m3 value of x · (1 / scale) (saturating at ±448), and dequantised values are within half a
//   step of the input (scale / 2 for int8), plus the fp32 rounding of x · (1 / scale) at ties. Dynamic scales
//   must match bit for bit.
// - Attention over a quantised cache is checked twice:
//   tight: against fp64 attention over the dequantised K/V, with the rule of cuda_kernels_test
//          (max|gpu − ref| ≤ 2 · max|naive − ref| + half an fp16 ulp, naive = fp32 with fp16 storage), which
//          isolates the kernel from the quantisation;
//   loose: against the fp16 decoder_attention on the original K/V. The difference must stay within what the
//          quantisation itself changes in exact arithmetic (max|ref_q − ref| in fp64) plus both kernels'
//          bounds; it is printed, as the size of the quantisation error.
//   A kF16 view must give the fp16 decoder_attention's output bit for bit.
// - kv_absmax must match the host maxima exactly.
//
// Without a CUDA device every test skips with "no CUDA device".
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/kv_quant.h"
#include "kernels/cuda_test_support.h"

namespace wisp::test {
namespace {

namespace cuda = wisp::kernels::cuda;
using cuda::kv_type_name;
using cuda::KvType;
using wisp::core::float_to_half;
using wisp::core::half_to_float;

constexpr int64_t kHd = 64;

class CudaKvQuant : public DeviceTest {};

// ---- host quantisers ---------------------------------------------------------------------------------------------

float inverse(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }
float quant_i8(float x, float scale) { return std::clamp(std::nearbyint(x * inverse(scale)), -127.0f, 127.0f); }

// The e4m3 value nearest to c (ties to the even code), saturating at ±448.
float e4m3_round(float c) {
  const double a = std::fabs(static_cast<double>(c));
  double q = 448.0;
  if (a < 448.0) {
    int e = 0;
    std::frexp(a, &e);                                             // a = m · 2^e, m in [0.5, 1)
    const double step = std::ldexp(1.0, std::max(e - 1, -6) - 3);  // 3 mantissa bits; subnormals below 2^-6
    q = std::nearbyint(a / step) * step;
  }
  return static_cast<float>(std::copysign(q, static_cast<double>(c)));
}
float e4m3_value(uint8_t code) {
  const int exp = (code >> 3) & 15, mant = code & 7;
  if (exp == 15 && mant == 7) return NAN;
  const double v = exp ? std::ldexp(1.0 + mant / 8.0, exp - 7) : std::ldexp(static_cast<double>(mant), -9);
  return static_cast<float>(code & 0x80 ? -v : v);
}

// Scales and the maxima they come from, per (K/V, head).
std::vector<float> host_absmax(const std::vector<float>& x, int64_t seqs, int64_t rows, int64_t ld, int64_t heads,
                               const std::vector<int32_t>& lens) {
  std::vector<float> m(static_cast<size_t>(2 * heads), 0.0f);
  for (int64_t b = 0; b < seqs; ++b) {
    const int64_t end = lens.empty() ? rows : std::clamp<int64_t>(lens[static_cast<size_t>(b)], 0, rows);
    for (int64_t r = 0; r < end; ++r)
      for (int64_t c = 0; c < 2 * heads * kHd; ++c) {
        float& mh = m[static_cast<size_t>(c / kHd)];
        mh = std::max(mh, std::fabs(x[static_cast<size_t>((b * rows + r) * ld + c)]));
      }
  }
  return m;
}
std::vector<float> static_scales(KvType t, const std::vector<float>& amax) {
  std::vector<float> s(amax.size());
  for (size_t i = 0; i < s.size(); ++i) s[i] = amax[i] / (t == KvType::kFp8 ? 448.0f : 127.0f);
  return s;
}

// A quantised cache of `seqs` sequences × `rows` rows, [seqs, rows, ld] elements with ld = 2d.
struct DevCache {
  KvType type;
  int64_t seqs, rows, heads, ld;
  std::unique_ptr<Dev<uint8_t>> data;
  std::unique_ptr<Dev<float>> scales;
  DevCache(KvType t, int64_t s, int64_t r, int64_t h, const std::vector<float>& static_scale)
      : type(t), seqs(s), rows(r), heads(h), ld(2 * h * kHd) {
    data = std::make_unique<Dev<uint8_t>>(static_cast<size_t>(seqs * rows * ld * cuda::kv_element_bytes(t)));
    data->poison();
    if (t == KvType::kI8Dynamic) {
      scales = std::make_unique<Dev<float>>(static_cast<size_t>(seqs * rows * 2 * heads));
      scales->poison();
    } else if (t != KvType::kF16) {
      scales = upload(static_scale);
    }
  }
  cuda::KvView view(bool shared = false) const {
    cuda::KvView v;
    v.type = type;
    v.data = data->get();
    v.ld = ld;
    v.batch_stride = shared ? 0 : rows * ld;
    v.scales = scales ? scales->get() : nullptr;
    v.scale_ld = 2 * heads;
    v.scale_batch_stride = shared ? 0 : rows * 2 * heads;
    return v;
  }
};

// Checks the codes of the rows `written(b, r)` selects against the host quantiser over x [seqs, rows, ldx]
// (K/V in columns [0, 2d)) and returns the dequantised cache [seqs, rows, 2d] (NaN where not checked).
std::vector<float> check_codes(const DevCache& c, const std::vector<float>& x, int64_t ldx,
                               const std::vector<float>& static_scale,
                               const std::function<bool(int64_t, int64_t)>& written, const std::string& what) {
  const int64_t width = 2 * c.heads * kHd;
  std::vector<float> deq(static_cast<size_t>(c.seqs * c.rows * width), NAN);
  std::vector<float> dyn;
  if (c.type == KvType::kI8Dynamic) dyn = download(c.scales->get(), c.scales->size());
  const auto raw = download(c.data->get(), c.data->size());
  const auto halves = c.type == KvType::kF16
                          ? download_half(reinterpret_cast<const __half*>(c.data->get()), c.data->size() / 2)
                          : std::vector<float>();
  size_t bad_code = 0, bad_scale = 0, bad_error = 0;
  double worst = 0;  // largest error in units of the allowed error
  for (int64_t b = 0; b < c.seqs; ++b)
    for (int64_t r = 0; r < c.rows; ++r) {
      if (!written(b, r)) continue;
      for (int64_t u = 0; u < 2 * c.heads; ++u) {
        const float* xs = x.data() + (b * c.rows + r) * ldx + u * kHd;
        float scale = 1.0f;
        if (c.type == KvType::kI8Dynamic) {
          float amax = 0.0f;
          for (int64_t e = 0; e < kHd; ++e) amax = std::max(amax, std::fabs(xs[e]));
          scale = amax / 127.0f;
          bad_scale += !(dyn[static_cast<size_t>((b * c.rows + r) * 2 * c.heads + u)] == scale);
        } else if (c.type != KvType::kF16) {
          scale = static_scale[static_cast<size_t>(u)];
        }
        for (int64_t e = 0; e < kHd; ++e) {
          const size_t at = static_cast<size_t>((b * c.rows + r) * c.ld + u * kHd + e);
          float got = 0, allowed = 0;
          switch (c.type) {
            case KvType::kF16:
              got = halves[at];
              bad_code += !(got == xs[e]);
              break;
            case KvType::kI8Static:
            case KvType::kI8Dynamic: {
              const float code = static_cast<float>(static_cast<int8_t>(raw[at]));
              bad_code += !(code == quant_i8(xs[e], scale));
              got = code * scale;
              allowed = scale / 2;
              break;
            }
            case KvType::kFp8: {
              const float v = e4m3_value(raw[at]);
              bad_code += !(v == e4m3_round(xs[e] * inverse(scale)));
              got = v * scale;
              // Half a step of the value's binade (3 mantissa bits), or of the subnormal range.
              allowed = std::max(std::ldexp(std::fabs(xs[e]), -4), std::ldexp(scale, -10));
              break;
            }
          }
          deq[static_cast<size_t>((b * c.rows + r) * width + u * kHd + e)] = got;
          const double err = std::fabs(static_cast<double>(got) - xs[e]);
          if (err > allowed + std::ldexp(std::fabs(xs[e]), -21) + 1e-30) ++bad_error;
          if (allowed > 0) worst = std::max(worst, err / allowed);
        }
      }
    }
  std::printf("  %-66s codes wrong %zu, error ≤ %.3f of the allowed\n", what.c_str(), bad_code, worst);
  EXPECT_EQ(bad_code, 0u) << what << ": codes differ from the host quantiser";
  EXPECT_EQ(bad_scale, 0u) << what << ": dynamic scales differ from the host's";
  EXPECT_EQ(bad_error, 0u) << what << ": dequantised values beyond half a step";
  return deq;
}

// ---- attention references ----------------------------------------------------------------------------------------

struct KvCase {
  const char* name;
  int64_t batch, n_q, n_kv, heads;
  std::vector<int32_t> lens;  // empty: all n_kv (cross-attention)
  bool causal;
  bool shared;  // one K/V for the whole batch (batch stride 0)
};

// Outputs [batch, n_q, d] of fp64 attention and of the naive implementation over kv [seqs, n_kv, 2d].
struct Refs {
  std::vector<double> ref;
  std::vector<float> naive;
};
Refs attention_refs(const KvCase& c, const std::vector<float>& q, const std::vector<float>& kv) {
  const int64_t d = c.heads * kHd, ld = 2 * d;
  Refs r;
  r.ref.resize(static_cast<size_t>(c.batch * c.n_q * d));
  r.naive.resize(r.ref.size());
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t len = c.lens.empty() ? c.n_kv : c.lens[static_cast<size_t>(b)];
    const float* base = kv.data() + (c.shared ? 0 : b * c.n_kv * ld);
    for (int64_t i = 0; i < c.n_q; ++i) {
      const int64_t visible = c.causal ? std::max<int64_t>(0, std::min(len, len - c.n_q + i + 1)) : len;
      for (int64_t h = 0; h < c.heads; ++h) {
        const size_t at = static_cast<size_t>((b * c.n_q + i) * d + h * kHd);
        attention_row_refs(q.data() + at, base + h * kHd, ld, base + d + h * kHd, ld, visible, kHd, r.ref.data() + at,
                           r.naive.data() + at);
      }
    }
  }
  return r;
}

struct Errors {
  double gpu = 0, naive = 0, ref_max = 0;
};
Errors errors(const std::vector<float>& gpu, const Refs& r, size_t* not_finite) {
  Errors e;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (!std::isfinite(gpu[i])) ++*not_finite;
    e.gpu = std::max(e.gpu, std::fabs(gpu[i] - r.ref[i]));
    e.naive = std::max(e.naive, std::fabs(r.naive[i] - r.ref[i]));
    e.ref_max = std::max(e.ref_max, std::fabs(r.ref[i]));
  }
  return e;
}
double bound_of(const Errors& e) { return 2.0 * e.naive + std::ldexp(e.ref_max, -11) + 1e-30; }

// The call again with the readiness a decode step promises (KvView::ready: kAll for a cross-attention,
// kAllButNew for a self-attention, whose blocks then load the older rows before waiting for the kernel before
// them) must give the same bits. For one query per sequence, each sequence's newest row is first overwritten
// with other values and then appended again by the kernel launched just before the attention, as in a decode
// step: a block that read it before waiting would see the old values.
void expect_ready_view_matches(const KvCase& c, const std::vector<float>& kv, const DevCache& cache,
                               const int32_t* lens, const __half* q, Dev<char>& ws, size_t ws_bytes,
                               bool with_workspace, const std::vector<float>& want, const std::string& what) {
  const int64_t d = c.heads * kHd, ld = 2 * d, sq = c.n_q * d;
  cuda::KvView view = cache.view(c.shared);
  view.ready = c.lens.empty() ? cuda::KvView::Ready::kAll : cuda::KvView::Ready::kAllButNew;
  Dev<__half> out(static_cast<size_t>(c.batch * sq));
  out.poison();
  const bool rewrite = !c.lens.empty() && c.n_q == 1;
  std::vector<float> newest, other;
  std::vector<int32_t> rows;
  for (int64_t b = 0; rewrite && b < c.batch; ++b) {
    const int64_t r = c.lens[static_cast<size_t>(b)] - 1;
    rows.push_back(static_cast<int32_t>(r));
    for (int64_t e = 0; e < ld; ++e) {
      newest.push_back(kv[static_cast<size_t>((b * c.n_kv + r) * ld + e)]);
      other.push_back(r16(-0.75f * newest.back() + 0.25f));
    }
  }
  std::unique_ptr<Dev<int32_t>> drow;
  std::unique_ptr<Dev<__half>> dnew, dother;
  if (rewrite) {
    drow = upload(rows);
    dnew = upload_half(newest);
    dother = upload_half(other);
    EXPECT_STATUS_OK(
        cuda::kv_append_quantized(dother->get(), ld, view, drow->get(), c.n_kv, c.batch, c.heads, kHd, nullptr));
    sync_ok();
    EXPECT_STATUS_OK(
        cuda::kv_append_quantized(dnew->get(), ld, view, drow->get(), c.n_kv, c.batch, c.heads, kHd, nullptr));
  }
  EXPECT_STATUS_OK(cuda::decoder_attention_quantized(q, d, sq, view, lens, c.n_kv, out.get(), d, sq, c.batch, c.n_q,
                                                     c.heads, kHd, c.causal, with_workspace ? ws.get() : nullptr,
                                                     with_workspace ? ws_bytes : 0, nullptr));
  sync_ok();
  const auto got = download_half(out.get(), out.size());
  size_t differ = 0;
  for (size_t i = 0; i < got.size(); ++i) differ += !(got[i] == want[i]);
  EXPECT_EQ(differ, 0u) << what << ": with the K/V rows declared ready"
                        << (rewrite ? " (newest row appended just before)" : "");
}

void run_kv_case(const KvCase& c, uint32_t seed, const std::string& form) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  const int64_t d = c.heads * kHd, ld = 2 * d, sq = c.n_q * d;
  const int64_t seqs = c.shared ? 1 : c.batch;
  // Heads of different ranges, so that per-head scales matter.
  std::vector<float> kv(static_cast<size_t>(seqs * c.n_kv * ld));
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = r16(unit(gen) * (0.5f + static_cast<float>(i / kHd % 5) * 0.5f));
  std::vector<float> q(static_cast<size_t>(c.batch * sq));
  for (auto& x : q) x = r16(2.0f * unit(gen));
  auto dq = upload_half(q);
  auto dkv = upload_half(kv);
  std::unique_ptr<Dev<int32_t>> dlen;
  if (!c.lens.empty()) dlen = upload(c.lens);
  const int32_t* lens = dlen ? dlen->get() : nullptr;
  const size_t ws_bytes = cuda::decoder_attention_workspace_bytes(c.batch, c.n_q, c.heads, c.n_kv);
  Dev<char> ws(ws_bytes);
  EXPECT_STATUS_OK(cuda::decoder_attention_workspace_init(ws.get(), ws_bytes, nullptr));
  Dev<__half> out(static_cast<size_t>(c.batch * sq));
  const int64_t skv = c.shared ? 0 : c.n_kv * ld;

  // The fp16 attention on the original K/V, with split keys ([0]) and in one block ([1]), and the calibration
  // maxima.
  const Refs ref16 = attention_refs(c, q, kv);
  std::vector<float> gpu16[2];
  Errors e16[2];
  size_t not_finite = 0;
  for (int one_block = 0; one_block < 2; ++one_block) {
    out.poison();
    EXPECT_STATUS_OK(cuda::decoder_attention(dq->get(), d, sq, dkv->get(), ld, skv, dkv->get() + d, ld, skv, lens,
                                             c.n_kv, out.get(), d, sq, c.batch, c.n_q, c.heads, kHd, c.causal,
                                             one_block ? nullptr : ws.get(), one_block ? 0 : ws_bytes, nullptr));
    sync_ok();
    gpu16[one_block] = download_half(out.get(), out.size());
    e16[one_block] = errors(gpu16[one_block], ref16, &not_finite);
  }
  Dev<float> damax(static_cast<size_t>(2 * c.heads));
  damax.zero();
  EXPECT_STATUS_OK(
      cuda::kv_absmax(dkv->get(), ld, c.n_kv * ld, nullptr, c.n_kv, seqs, c.heads, kHd, damax.get(), nullptr));
  sync_ok();
  const auto amax = download(damax.get(), damax.size());
  EXPECT_EQ(amax, host_absmax(kv, seqs, c.n_kv, ld, c.heads, {})) << c.name << ": kv_absmax";

  for (KvType t : {KvType::kF16, KvType::kI8Static, KvType::kI8Dynamic, KvType::kFp8}) {
    const std::string what = std::string(c.name) + ", " + kv_type_name(t) + form;
    const auto scales = static_scales(t, amax);
    DevCache cache(t, seqs, c.n_kv, c.heads, scales);
    if (c.lens.empty()) {
      EXPECT_STATUS_OK(
          cuda::kv_quantize(dkv->get(), ld, c.n_kv * ld, cache.view(), c.n_kv, seqs, c.heads, kHd, nullptr));
    } else {
      // A self-attention cache fills a row per step, at device-side positions.
      Dev<int32_t> pos(static_cast<size_t>(seqs));
      pos.zero();
      for (int64_t r = 0; r < c.n_kv; ++r) {
        EXPECT_STATUS_OK(cuda::kv_append_quantized(dkv->get() + r * ld, c.n_kv * ld, cache.view(), pos.get(), c.n_kv,
                                                   seqs, c.heads, kHd, nullptr));
        EXPECT_STATUS_OK(cuda::add_scalar_i32(pos.get(), nullptr, seqs, 1, nullptr));
      }
    }
    sync_ok();
    const auto deq = check_codes(
        cache, kv, ld, scales, [](int64_t, int64_t) { return true; }, what + " codes");
    const Refs refq = t == KvType::kF16 ? Refs{} : attention_refs(c, q, deq);
    for (bool with_workspace : {true, false}) {
      out.poison();
      EXPECT_STATUS_OK(cuda::decoder_attention_quantized(
          dq->get(), d, sq, cache.view(c.shared), lens, c.n_kv, out.get(), d, sq, c.batch, c.n_q, c.heads, kHd,
          c.causal, with_workspace ? ws.get() : nullptr, with_workspace ? ws_bytes : 0, nullptr));
      sync_ok();
      const auto gpu = download_half(out.get(), out.size());
      const std::string w = what + (with_workspace ? " (split keys)" : " (one block)");
      expect_ready_view_matches(c, kv, cache, lens, dq->get(), ws, ws_bytes, with_workspace, gpu, w);
      if (t == KvType::kF16) {
        size_t differ = 0;
        for (size_t i = 0; i < gpu.size(); ++i) differ += !(gpu[i] == gpu16[!with_workspace][i]);
        EXPECT_EQ(differ, 0u) << w << ": a kF16 view must match decoder_attention bit for bit";
        continue;
      }
      const Errors eq = errors(gpu, refq, &not_finite);
      double quant = 0, diff = 0;  // the quantisation's own effect (fp64), and the GPU's fp16 vs quantised
      for (size_t i = 0; i < gpu.size(); ++i) {
        quant = std::max(quant, std::fabs(refq.ref[i] - ref16.ref[i]));
        diff = std::max(diff, std::fabs(static_cast<double>(gpu[i]) - gpu16[!with_workspace][i]));
      }
      const double tight = bound_of(eq), loose = quant + tight + bound_of(e16[!with_workspace]);
      std::printf("  %-66s gpu=%-9.3g naive=%-9.3g bound=%-9.3g | vs fp16 %-9.3g (quantisation %.3g, bound %.3g)\n",
                  w.c_str(), eq.gpu, eq.naive, tight, diff, quant, loose);
      EXPECT_LE(eq.gpu, tight) << w << ": vs fp64 over the dequantised K/V";
      EXPECT_LE(diff, loose) << w << ": vs the fp16 attention";
    }
  }
  EXPECT_EQ(not_finite, 0u) << c.name << ": non-finite outputs (unwritten)";
}

TEST_F(CudaKvQuant, CrossAttention) {
  const KvCase cases[] = {
      {"cross b1, 20 heads, 1500 keys", 1, 1, 1500, 20, {}, false, false},
      {"cross b5, 8 heads, 5 queries", 5, 5, 1500, 8, {}, false, false},
      {"cross b32, 6 heads", 32, 1, 1500, 6, {}, false, false},
      // 320 blocks: at least two per SM on an H100 or H200, so the plain stream-order launch (decoder_attention.cu)
      {"cross b16, 20 heads", 16, 1, 1500, 20, {}, false, false},
      {"cross b5 sharing one window (stride 0), 20 heads", 5, 1, 1500, 20, {}, false, true},
      {"cross 769 keys, 8 heads, 3 queries", 2, 3, 769, 8, {}, false, false},
      {"cross 63 keys, 6 heads, 8 queries", 1, 8, 63, 6, {}, false, false},
  };
  for_each_decoder_attention_form([&](const std::string& form) {
    uint32_t seed = 101;
    for (const auto& c : cases) run_kv_case(c, seed++, form);
  });
}

TEST_F(CudaKvQuant, SelfAttentionOverAppendedCache) {
  const KvCase cases[] = {
      {"self b1, 20 heads, len 224 of 448", 1, 1, 448, 20, {224}, true, false},
      {"self b5, 6 heads, lens 1/17/448/100/3", 5, 1, 448, 6, {1, 17, 448, 100, 3}, true, false},
      {"self b5, 8 heads, 5 queries, lens 5/60/448/200/9", 5, 5, 448, 8, {5, 60, 448, 200, 9}, true, false},
      {"self b32, 20 heads, len 100", 32, 1, 448, 20, std::vector<int32_t>(32, 100), true, false},
  };
  for_each_decoder_attention_form([&](const std::string& form) {
    uint32_t seed = 121;
    for (const auto& c : cases) run_kv_case(c, seed++, form);
  });
}

// Appends at scattered positions, including ones outside the cache (skipped), an all-zero head (dynamic scale
// 0) and values beyond the e4m3 range (saturated), from a source with a padded row stride.
TEST_F(CudaKvQuant, AppendRoundTrip) {
  std::mt19937 gen(131);
  const int64_t heads = 6, d = heads * kHd, lds = 3 * d + 8, batch = 5, n_rows = 448;
  const std::vector<int32_t> rows = {0, 17, 447, -1, 448};
  std::uniform_real_distribution<float> dist(-600.0f, 600.0f);
  std::vector<float> src(static_cast<size_t>(batch * lds));
  for (auto& x : src) x = r16(dist(gen));
  for (int64_t e = 0; e < kHd; ++e) src[static_cast<size_t>(1 * lds + 2 * kHd + e)] = 0.0f;  // sequence 1, K head 2
  auto dsrc = upload_half(src);
  auto drow = upload(rows);
  // x as the cache's row layout: [batch, n_rows, 2d], only the appended rows filled.
  std::vector<float> x(static_cast<size_t>(batch * n_rows * 2 * d), 0.0f);
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t r = rows[static_cast<size_t>(b)];
    if (r < 0 || r >= n_rows) continue;
    for (int64_t c = 0; c < 2 * d; ++c) {
      x[static_cast<size_t>((b * n_rows + r) * 2 * d + c)] = src[static_cast<size_t>(b * lds + c)];
    }
  }
  for (KvType t : {KvType::kF16, KvType::kI8Static, KvType::kI8Dynamic, KvType::kFp8}) {
    // fp8 with scales of 1: everything beyond ±448 saturates.
    const std::vector<float> scales(static_cast<size_t>(2 * heads), t == KvType::kFp8 ? 1.0f : 600.0f / 127.0f);
    DevCache cache(t, batch, n_rows, heads, scales);
    EXPECT_STATUS_OK(
        cuda::kv_append_quantized(dsrc->get(), lds, cache.view(), drow->get(), n_rows, batch, heads, kHd, nullptr));
    sync_ok();
    // Only sequences 0..2 wrote; every other byte keeps its 0xff poison.
    const auto raw = download(cache.data->get(), cache.data->size());
    size_t touched = 0;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = 0; r < n_rows; ++r) {
        if (b < 3 && r == rows[static_cast<size_t>(b)]) continue;
        const size_t row_bytes = static_cast<size_t>(cache.ld * cuda::kv_element_bytes(t));
        const uint8_t* p = raw.data() + static_cast<size_t>(b * n_rows + r) * row_bytes;
        touched += static_cast<size_t>(std::count_if(p, p + row_bytes, [](uint8_t v) { return v != 0xff; }));
      }
    EXPECT_EQ(touched, 0u) << kv_type_name(t) << ": bytes written outside the appended rows";
    const std::string what = std::string("append b5, rows 0/17/447 (+2 skipped), ") + kv_type_name(t);
    if (t != KvType::kFp8) {
      check_codes(
          cache, x, 2 * d, scales, [&](int64_t b, int64_t r) { return r == rows[static_cast<size_t>(b)]; }, what);
      continue;
    }
    // Saturated values are off by more than half a step: compare codes only.
    const auto got = download(cache.data->get(), cache.data->size());
    size_t bad = 0;
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < 2 * d; ++c) {
        const size_t at = static_cast<size_t>((b * n_rows + rows[static_cast<size_t>(b)]) * 2 * d + c);
        bad += !(e4m3_value(got[at]) == e4m3_round(x[at]));
      }
    EXPECT_EQ(bad, 0u) << what << ": e4m3 codes (saturating) differ from the host's";
  }
}

TEST_F(CudaKvQuant, AbsmaxCombinesAndHonoursLengths) {
  std::mt19937 gen(141);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  const int64_t heads = 8, d = heads * kHd, ld = 2 * d + 8, rows = 448, batch = 3;
  const std::vector<int32_t> lens = {1, 100, 448};
  std::vector<float> a(static_cast<size_t>(batch * rows * ld)), b(a.size());
  for (auto& x : a) x = r16(dist(gen));
  for (auto& x : b) x = r16(dist(gen) * 0.5f);
  a[static_cast<size_t>((1 * rows + 300) * ld + 5)] = 60000.0f;    // beyond sequence 1's length: ignored
  b[static_cast<size_t>((2 * rows + 447) * ld + d + 70)] = -9.5f;  // V head 1, the last row: counted
  auto da = upload_half(a);
  auto db = upload_half(b);
  auto dlen = upload(lens);
  Dev<float> amax(static_cast<size_t>(2 * heads));
  amax.zero();
  EXPECT_STATUS_OK(
      cuda::kv_absmax(da->get(), ld, rows * ld, dlen->get(), rows, batch, heads, kHd, amax.get(), nullptr));
  EXPECT_STATUS_OK(cuda::kv_absmax(db->get(), ld, rows * ld, nullptr, rows, batch, heads, kHd, amax.get(), nullptr));
  sync_ok();
  auto want = host_absmax(a, batch, rows, ld, heads, lens);
  const auto wb = host_absmax(b, batch, rows, ld, heads, {});
  for (size_t i = 0; i < want.size(); ++i) want[i] = std::max(want[i], wb[i]);
  EXPECT_EQ(download(amax.get(), amax.size()), want);
  EXPECT_EQ(want[static_cast<size_t>(heads + 1)], 9.5f);
}

// Slot indirection (KvView::slot): a call over sequences that live in scattered slots of a pool of caches must
// give, row for row and bit for bit, what the same call gives over a view of that one slot alone. Attention
// runs in one block per (sequence, head) here, whose order of sums does not depend on the batch.
TEST_F(CudaKvQuant, SlotsSelectSequencesOfAPool) {
  std::mt19937 gen(151);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  const int64_t heads = 6, d = heads * kHd, ld = 2 * d, slots = 7, n_kv = 300;
  const std::vector<int32_t> slot_of = {5, 0, 3, 3, 6};  // sequence b -> pool slot (3 twice: shared reads)
  const std::vector<int32_t> lens = {300, 1, 77, 150, 299};
  const int64_t batch = static_cast<int64_t>(slot_of.size());
  std::vector<float> kv(static_cast<size_t>(slots * n_kv * ld)), q(static_cast<size_t>(batch * d));
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = r16(unit(gen) * (0.5f + static_cast<float>(i / kHd % 3)));
  for (auto& x : q) x = r16(2.0f * unit(gen));
  auto dkv = upload_half(kv);
  auto dq = upload_half(q);
  auto dslot = upload(slot_of);
  auto dlen = upload(lens);
  Dev<float> damax(static_cast<size_t>(2 * heads));
  damax.zero();
  EXPECT_STATUS_OK(cuda::kv_absmax(dkv->get(), ld, n_kv * ld, nullptr, n_kv, slots, heads, kHd, damax.get(), nullptr));
  sync_ok();
  const auto amax = download(damax.get(), damax.size());
  Dev<__half> out(static_cast<size_t>(batch * d)), one(static_cast<size_t>(d));
  for (KvType t : {KvType::kF16, KvType::kI8Static, KvType::kI8Dynamic, KvType::kFp8}) {
    const std::string what = std::string("slots 5/0/3/3/6 of 7, ") + kv_type_name(t);
    DevCache cache(t, slots, n_kv, heads, static_scales(t, amax));
    EXPECT_STATUS_OK(cuda::kv_quantize(dkv->get(), ld, n_kv * ld, cache.view(), n_kv, slots, heads, kHd, nullptr));
    // The view of slot s alone (batch 1).
    const auto slot_view = [&](int32_t s) {
      cuda::KvView v = cache.view();
      v.data = static_cast<char*>(v.data) + s * n_kv * ld * cuda::kv_element_bytes(t);
      if (t == KvType::kI8Dynamic) v.scales += s * v.scale_batch_stride;
      return v;
    };
    cuda::KvView pooled = cache.view();
    pooled.slot = dslot->get();
    out.poison();
    EXPECT_STATUS_OK(cuda::decoder_attention_quantized(dq->get(), d, d, pooled, dlen->get(), n_kv, out.get(), d, d,
                                                       batch, 1, heads, kHd, true, nullptr, 0, nullptr));
    sync_ok();
    const auto got = download_half(out.get(), out.size());
    size_t differ = 0;
    for (int64_t b = 0; b < batch; ++b) {
      one.poison();
      EXPECT_STATUS_OK(cuda::decoder_attention_quantized(dq->get() + b * d, d, d, slot_view(slot_of[size_t(b)]),
                                                         dlen->get() + b, n_kv, one.get(), d, d, 1, 1, heads, kHd, true,
                                                         nullptr, 0, nullptr));
      sync_ok();
      const auto want = download_half(one.get(), one.size());
      for (int64_t c = 0; c < d; ++c) differ += !(got[size_t(b * d + c)] == want[size_t(c)]);
    }
    EXPECT_EQ(differ, 0u) << what << ": attention through slots differs from the slot alone";

    // Appends through slots 2 and 6 (rows 10 and 299; the sources are rows 0 and 1 of slot 0) land in exactly
    // those rows of those slots.
    const std::vector<int32_t> append_slots = {2, 6}, rows = {10, 299};
    auto das = upload(append_slots);
    auto drows = upload(rows);
    DevCache fresh(t, slots, n_kv, heads, static_scales(t, amax));
    cuda::KvView target = fresh.view();
    target.slot = das->get();
    EXPECT_STATUS_OK(cuda::kv_append_quantized(dkv->get(), ld, target, drows->get(), n_kv, 2, heads, kHd, nullptr));
    sync_ok();
    std::vector<float> x(kv.size(), 0.0f);  // what the pool should hold, as [slots, n_kv, ld]
    for (size_t i = 0; i < 2; ++i) {
      std::copy_n(kv.begin() + static_cast<long>(i) * ld, ld,
                  x.begin() + (append_slots[i] * n_kv + rows[i]) * static_cast<long>(ld));
    }
    const auto written = [&](int64_t b, int64_t r) {
      return (b == append_slots[0] && r == rows[0]) || (b == append_slots[1] && r == rows[1]);
    };
    check_codes(fresh, x, ld, static_scales(t, amax), written, what + ", append");
    const auto raw = download(fresh.data->get(), fresh.data->size());
    const size_t row_bytes = static_cast<size_t>(ld * cuda::kv_element_bytes(t));
    size_t touched = 0;
    for (int64_t b = 0; b < slots; ++b)
      for (int64_t r = 0; r < n_kv; ++r) {
        if (written(b, r)) continue;
        const uint8_t* p = raw.data() + static_cast<size_t>(b * n_kv + r) * row_bytes;
        touched += static_cast<size_t>(std::count_if(p, p + row_bytes, [](uint8_t v) { return v != 0xff; }));
      }
    EXPECT_EQ(touched, 0u) << what << ": bytes written outside the two appended rows";
  }
}

// One workspace serves calls of any batch size in any order: a small call (many key splits, partial sums
// spread far) followed by a large one must not leave the large one stale counters. Each call is checked
// against the same call without a workspace (one block per sequence and head, nothing shared).
TEST_F(CudaKvQuant, WorkspaceServesCallsOfAnyBatch) {
  std::mt19937 gen(161);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  const int64_t heads = 6, d = heads * kHd, ld = 2 * d, n_kv = 1500, max_batch = 24;
  std::vector<float> kv(static_cast<size_t>(max_batch * n_kv * ld)), q(static_cast<size_t>(max_batch * d));
  for (auto& x : kv) x = r16(unit(gen));
  for (auto& x : q) x = r16(2.0f * unit(gen));
  auto dkv = upload_half(kv);
  auto dq = upload_half(q);
  const size_t ws_bytes = cuda::decoder_attention_workspace_bytes(max_batch, cuda::kDecoderMaxQueries, heads, n_kv);
  Dev<char> ws(ws_bytes);
  EXPECT_STATUS_OK(cuda::decoder_attention_workspace_init(ws.get(), ws_bytes, nullptr));
  Dev<__half> out(static_cast<size_t>(max_batch * d)), alone(out.size());
  for (int64_t batch : {1, 24, 3, 24, 12, 1, 24}) {
    for (bool with_ws : {true, false}) {
      Dev<__half>& o = with_ws ? out : alone;
      o.poison();
      EXPECT_STATUS_OK(cuda::decoder_attention(dq->get(), d, d, dkv->get(), ld, n_kv * ld, dkv->get() + d, ld,
                                               n_kv * ld, nullptr, n_kv, o.get(), d, d, batch, 1, heads, kHd, false,
                                               with_ws ? ws.get() : nullptr, with_ws ? ws_bytes : 0, nullptr));
    }
    sync_ok();
    const auto a = download_half(out.get(), static_cast<size_t>(batch * d));
    const auto b = download_half(alone.get(), static_cast<size_t>(batch * d));
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
    EXPECT_LE(worst, 2e-3) << "batch " << batch << " after the calls before it";  // fp16 outputs, |v| <= 1
  }
}

// The K/V append fused into the QKV GEMV (gemv.h KvAppend): the same y, and the cache bytes that
// kv_append_quantized stores from that y, for every GEMV kernel (few rows / many outputs / 9..64 rows), rows in
// scattered slots and one row outside the cache (skipped).
TEST_F(CudaKvQuant, GemvEpilogueAppendsLikeKvAppend) {
  struct Shape {
    int64_t m, heads;
  };
  std::mt19937 gen(171);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (const Shape sh : {Shape{1, 6}, Shape{5, 6}, Shape{5, 20}, Shape{8, 20}, Shape{20, 20}, Shape{33, 6}}) {
    const int64_t d = sh.heads * kHd, n = 3 * d, k = d, slots = 9, n_rows = 448;
    std::vector<float> x(static_cast<size_t>(sh.m * k)), w(static_cast<size_t>(n * k)), bias(static_cast<size_t>(n));
    for (auto& v : x) v = r16(unit(gen));
    for (auto& v : w) v = r16(unit(gen) * 0.05f);
    for (auto& v : bias) v = r16(unit(gen) * 0.1f);
    auto dx = upload_half(x);
    auto dw = upload_half(w);
    auto db = upload_half(bias);
    std::vector<int32_t> slot_of, rows;
    for (int64_t r = 0; r < sh.m; ++r) {
      slot_of.push_back(static_cast<int32_t>((r * 4 + 3) % slots));
      rows.push_back(r == 2 ? static_cast<int32_t>(n_rows) : static_cast<int32_t>((r * 37) % n_rows));  // row 2: out
    }
    auto dslot = upload(slot_of);
    auto drow = upload(rows);
    const cuda::WeightView wv{cuda::WeightType::kF16, dw->get(), nullptr, 0};
    Dev<__half> y_ref(static_cast<size_t>(sh.m * n)), y(y_ref.size());
    EXPECT_STATUS_OK(cuda::gemv(dx->get(), wv, db->get(), nullptr, y_ref.get(), sh.m, n, k, false, nullptr));
    sync_ok();
    const auto yr = download_half(y_ref.get(), y_ref.size());
    std::vector<float> amax(static_cast<size_t>(2 * sh.heads), 0.0f);
    for (int64_t r = 0; r < sh.m; ++r)
      for (int64_t c = 0; c < 2 * d; ++c) {
        float& a = amax[static_cast<size_t>(c / kHd)];
        a = std::max(a, std::fabs(yr[static_cast<size_t>(r * n + d + c)]));
      }
    for (KvType t : {KvType::kF16, KvType::kI8Static, KvType::kFp8}) {
      const std::string what =
          "m " + std::to_string(sh.m) + ", " + std::to_string(sh.heads) + " heads, " + kv_type_name(t);
      const auto scales = static_scales(t, amax);
      DevCache fused(t, slots, n_rows, sh.heads, scales), separate(t, slots, n_rows, sh.heads, scales);
      cuda::KvView fv = fused.view(), sv = separate.view();
      fv.slot = sv.slot = dslot->get();
      const cuda::KvAppend append{fv, drow->get(), n_rows, d, 2 * d};
      y.poison();
      EXPECT_STATUS_OK(cuda::gemv(dx->get(), wv, db->get(), nullptr, y.get(), sh.m, n, k, false, nullptr, {}, &append));
      EXPECT_STATUS_OK(
          cuda::kv_append_quantized(y_ref.get() + d, n, sv, drow->get(), n_rows, sh.m, sh.heads, kHd, nullptr));
      sync_ok();
      EXPECT_EQ(download_half(y.get(), y.size()), yr) << what << ": y changed by the append";
      EXPECT_EQ(download(fused.data->get(), fused.data->size()), download(separate.data->get(), separate.data->size()))
          << what << ": cache bytes differ from kv_append_quantized's";
    }
  }
  // Per-token scales need a whole head: not in the epilogue.
  DevCache dynamic(KvType::kI8Dynamic, 1, 16, 6, {});
  Dev<__half> x(6 * kHd), w(static_cast<size_t>(3 * 6 * kHd * 6 * kHd)), y(3 * 6 * kHd);
  Dev<int32_t> row(1);
  const cuda::KvAppend append{dynamic.view(), row.get(), 16, 6 * kHd, 12 * kHd};
  EXPECT_EQ(cuda::gemv(x.get(), cuda::WeightView{cuda::WeightType::kF16, w.get(), nullptr, 0}, nullptr, nullptr,
                       y.get(), 1, 18 * kHd, 6 * kHd, false, nullptr, {}, &append),
            cuda::Status::kNotSupported);
}

TEST_F(CudaKvQuant, RejectsInvalidArguments) {
  using S = cuda::Status;
  const int64_t heads = 6, d = heads * kHd, rows = 16;
  Dev<__half> src(static_cast<size_t>(rows * 2 * d)), q(static_cast<size_t>(8 * d)), out(q.size());
  Dev<char> cache_bytes(static_cast<size_t>(rows * 2 * d) + 64);
  Dev<float> scales(static_cast<size_t>(rows * 2 * heads)), amax(static_cast<size_t>(2 * heads));
  Dev<int32_t> row(1);
  const auto* s = src.get();
  cuda::KvView v;
  v.type = KvType::kI8Static;
  v.data = cache_bytes.get();
  v.ld = 2 * d;
  v.batch_stride = rows * 2 * d;
  v.scales = scales.get();
  v.scale_ld = 2 * heads;
  const auto quantize = [&](const cuda::KvView& view, int64_t hd = kHd) {
    return cuda::kv_quantize(s, 2 * d, rows * 2 * d, view, rows, 1, heads, hd, nullptr);
  };
  const auto attend = [&](const cuda::KvView& view, int64_t n_q = 1) {
    return cuda::decoder_attention_quantized(q.get(), d, d, view, nullptr, rows, out.get(), d, d, 1, n_q, heads, kHd,
                                             false, nullptr, 0, nullptr);
  };
  EXPECT_EQ(quantize(v), S::kOk);
  EXPECT_EQ(attend(v), S::kOk);
  EXPECT_EQ(quantize(v, 128), S::kNotSupported);
  EXPECT_EQ(attend(v, 9), S::kInvalidArgument);  // more than kDecoderMaxQueries
  auto bad = v;
  bad.ld = 2 * d - 8;  // narrower than K and V
  EXPECT_EQ(quantize(bad), S::kInvalidArgument);
  EXPECT_EQ(attend(bad), S::kInvalidArgument);
  bad = v;
  bad.scales = nullptr;  // static scales missing
  EXPECT_EQ(quantize(bad), S::kInvalidArgument);
  EXPECT_EQ(attend(bad), S::kInvalidArgument);
  bad = v;
  bad.data = cache_bytes.get() + 4;  // 8 codes per lane need 8-byte alignment
  EXPECT_EQ(quantize(bad), S::kInvalidArgument);
  EXPECT_EQ(attend(bad), S::kInvalidArgument);
  bad = v;
  bad.type = KvType::kI8Dynamic;
  bad.scale_ld = 2 * heads - 1;  // no room for the V scales
  EXPECT_EQ(quantize(bad), S::kInvalidArgument);
  EXPECT_EQ(attend(bad), S::kInvalidArgument);
  EXPECT_EQ(cuda::kv_quantize(s + 1, 2 * d, rows * 2 * d, v, rows, 1, heads, kHd, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::kv_quantize(s, 2 * d, rows * 2 * d, v, rows, 1, 33, kHd, nullptr), S::kNotSupported);  // > 32 heads
  EXPECT_EQ(cuda::kv_append_quantized(s, 2 * d, v, row.get(), rows, 1, 33, kHd, nullptr), S::kNotSupported);
  EXPECT_EQ(cuda::kv_quantize(s, 2 * d, rows * 2 * d, v, INT32_MAX / 2, 3, heads, kHd, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::kv_append_quantized(s, 2 * d, v, nullptr, rows, 1, heads, kHd, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::kv_append_quantized(s, 2 * d, v, row.get(), 0, 1, heads, kHd, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::kv_absmax(s, 2 * d, 0, nullptr, rows, 1, heads, kHd, nullptr, nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::kv_absmax(s, 2 * d - 8, 0, nullptr, rows, 1, heads, kHd, amax.get(), nullptr), S::kInvalidArgument);
  EXPECT_EQ(cuda::kv_absmax(s, 2 * d, 0, nullptr, rows, 1, heads, 32, amax.get(), nullptr), S::kNotSupported);
  sync_ok();
}

}  // namespace
}  // namespace wisp::test
