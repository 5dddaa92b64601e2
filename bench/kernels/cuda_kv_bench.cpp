// Micro-benchmark of the quantised KV caches (kv_quant.h) at Whisper large-v2 shapes (d 1280, 20 heads, 1500
// audio frames, 448-token text context): the decoder attention over fp16 / int8 static / int8 dynamic / fp8
// e4m3 caches, cross-attention (32 windows and batch 1) and self-attention (224 of 448 tokens), and the cost of
// quantising one layer's cross K/V for 32 windows.
//
// Timing as in cuda_kernels_bench: CUDA events around back-to-back launches after warm-up, ~20 ms per
// repetition, 7 repetitions, median with [min, max]. The caches rotate over copies adding up to more than
// 256 MB, so the figures come from HBM, not L2. "TB/s" counts the bytes a call must read (codes, scales,
// queries) and write.
//
// Usage: cuda_kv_bench [--filter SUBSTRING] [--json PATH] [--quick]
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_support.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kv_quant.h"

namespace {

namespace cuda = wisp::kernels::cuda;
using cuda::kv_type_name;
using cuda::KvType;

constexpr int64_t kD = 1280, kHeads = 20, kHd = 64, kFrames = 1500, kTextCtx = 448;
using wisp::bench::Buf;
using wisp::bench::Result;

std::vector<Result> g_results;
wisp::bench::Options g_opt;

// n uniform random fp16 values in [-a, a] (xorshift: the 32-window caches take 123M values).
std::unique_ptr<Buf<__half>> random_halves(size_t n, float a, uint32_t seed) {
  auto b = std::make_unique<Buf<__half>>(n);
  uint32_t x = seed * 2654435761u + 1u;
  std::vector<__half> host(n);
  for (auto& h : host) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    h = __float2half(a * (static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f));
  }
  cudaMemcpy(b->p, host.data(), n * sizeof(__half), cudaMemcpyHostToDevice);
  return b;
}

// Times fn(i) (i = iteration, for rotating inputs) with wisp::bench::time_calls and prints the table row.
void measure(const std::string& name, double bytes, const std::function<cuda::Status(int)>& fn) {
  Result r;
  r.name = name;
  r.bytes = bytes;
  wisp::bench::time_calls(fn, g_opt.quick, &r);
  g_results.push_back(r);
  if (r.ok) {
    std::printf("%-56s %10.2f us  [%8.2f, %8.2f]  %7.2f TB/s\n", r.name.c_str(), r.ms * 1e3, r.ms_min * 1e3,
                r.ms_max * 1e3, r.bytes / (r.ms * 1e-3) / 1e12);
  } else {
    std::printf("%-56s FAILED: %s\n", r.name.c_str(), r.error.c_str());
  }
  std::fflush(stdout);
}

// Copies of one layer's cache, [windows, n_kv, 2d] each, quantised from the same random fp16 K/V (|x| ≤ 2) so
// that their total exceeds the L2 cache.
struct Caches {
  std::vector<std::unique_ptr<Buf<char>>> data;
  std::vector<std::unique_ptr<Buf<float>>> scales;
  std::unique_ptr<Buf<float>> static_scales;
  std::vector<cuda::KvView> views;
  size_t bytes_per_copy = 0;  // codes and scales a call reads

  Caches(KvType type, int64_t windows, int64_t n_kv) {
    const int64_t ld = 2 * kD, rows = windows * n_kv;
    const size_t code_bytes = static_cast<size_t>(rows * ld * cuda::kv_element_bytes(type));
    const size_t scale_count = type == KvType::kI8Dynamic ? static_cast<size_t>(rows * 2 * kHeads) : 0;
    bytes_per_copy = code_bytes + scale_count * sizeof(float);
    const int copies = wisp::bench::rotation(bytes_per_copy);
    const auto src = random_halves(static_cast<size_t>(rows * ld), 2.0f, 300);
    const std::vector<float> s(2 * kHeads, 2.0f / (type == KvType::kFp8 ? 448.0f : 127.0f));
    static_scales = std::make_unique<Buf<float>>(s.size());
    cudaMemcpy(static_scales->p, s.data(), s.size() * sizeof(float), cudaMemcpyHostToDevice);
    for (int c = 0; c < copies; ++c) {
      data.push_back(std::make_unique<Buf<char>>(code_bytes));
      scales.push_back(std::make_unique<Buf<float>>(scale_count));
      cuda::KvView v;
      v.type = type;
      v.data = data.back()->p;
      v.ld = ld;
      v.batch_stride = n_kv * ld;
      v.scales = type == KvType::kI8Dynamic ? scales.back()->p : static_scales->p;
      v.scale_ld = 2 * kHeads;
      v.scale_batch_stride = n_kv * 2 * kHeads;
      views.push_back(v);
      if (cuda::kv_quantize(src->p, ld, n_kv * ld, v, n_kv, windows, kHeads, kHd, nullptr) != cuda::Status::kOk) {
        std::fprintf(stderr, "kv_quantize failed while preparing the caches\n");
      }
    }
  }
};

// Decoder attention, one query per sequence: cross (all 1500 frames, no lengths) or self (len of 448, causal).
void bench_attention(KvType type, int64_t batch, bool cross, int64_t len) {
  const std::string name = std::string(cross ? "cross-attn" : "self-attn") + " b" + std::to_string(batch) +
                           (cross ? " 1500" : " len" + std::to_string(len) + "/448") + ", " + kv_type_name(type);
  if (!g_opt.selected(name)) return;
  const int64_t n_kv = cross ? kFrames : kTextCtx;
  Caches caches(type, batch, n_kv);
  const auto q = random_halves(static_cast<size_t>(batch * kD), 2.0f, 4);
  Buf<__half> out(static_cast<size_t>(batch * kD));
  const std::vector<int32_t> lens(static_cast<size_t>(batch), static_cast<int32_t>(len));
  Buf<int32_t> dlen(lens.size());
  cudaMemcpy(dlen.p, lens.data(), lens.size() * sizeof(int32_t), cudaMemcpyHostToDevice);
  const size_t ws_bytes = cuda::decoder_attention_workspace_bytes(batch, 1, kHeads, n_kv);
  Buf<char> ws(ws_bytes);  // zeroed, as decoder_attention_workspace_init would
  const double read = static_cast<double>(caches.bytes_per_copy) * (cross ? 1.0 : static_cast<double>(len) / n_kv);
  const double bytes = read + 2.0 * batch * kD * sizeof(__half);
  const auto copies = caches.views.size();
  // The default (tensor-core) kernel, then the CUDA-core one (set_decoder_attention_mma).
  for (const bool mma : {true, false}) {
    cuda::set_decoder_attention_mma(mma);
    measure(mma ? name : name + " [simt]", bytes, [&](int i) {
      return cuda::decoder_attention_quantized(q->p, kD, kD, caches.views[static_cast<size_t>(i) % copies],
                                               cross ? nullptr : dlen.p, n_kv, out.p, kD, kD, batch, 1, kHeads, kHd,
                                               !cross, ws.p, ws_bytes, nullptr);
    });
  }
  cuda::set_decoder_attention_mma(true);
}

// Quantising one layer's cross K/V of 32 windows (once per window, after the cross-K/V GEMM).
void bench_quantize(KvType type) {
  const std::string name = std::string("kv_quantize 32x1500x2560, ") + kv_type_name(type);
  if (!g_opt.selected(name)) return;
  const int64_t windows = 32, ld = 2 * kD;
  Caches caches(type, windows, kFrames);
  const auto src = random_halves(static_cast<size_t>(windows * kFrames * ld), 2.0f, 5);
  const double bytes = caches.bytes_per_copy + 2.0 * windows * kFrames * ld;
  const auto copies = caches.views.size();
  measure(name, bytes, [&](int i) {
    return cuda::kv_quantize(src->p, ld, kFrames * ld, caches.views[static_cast<size_t>(i) % copies], kFrames, windows,
                             kHeads, kHd, nullptr);
  });
}

void json_metrics(FILE* f, const Result& r) { std::fprintf(f, "\"tbps\": %.3f", r.bytes / (r.ms * 1e-3) / 1e12); }

}  // namespace

int main(int argc, char** argv) {
  if (!wisp::bench::parse_options(argc, argv, &g_opt)) return 2;
  cudaDeviceProp prop{};
  if (!wisp::bench::open_device(&prop)) return 1;
  std::printf("%-56s %13s  %20s  %12s\n", "kernel", "median", "[min, max] us", "memory");

  const KvType types[] = {KvType::kF16, KvType::kI8Static, KvType::kI8Dynamic, KvType::kFp8};
  for (KvType t : types) bench_attention(t, 32, true, kFrames);
  for (KvType t : types) bench_attention(t, 1, true, kFrames);
  for (KvType t : types) bench_attention(t, 32, false, 224);
  for (KvType t : types) bench_attention(t, 1, false, 224);
  for (KvType t : types) bench_quantize(t);

  return wisp::bench::finish(g_opt, prop.name, g_results, json_metrics);
}
