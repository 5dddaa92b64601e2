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

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kv_quant.h"

namespace {

namespace cuda = wisp::kernels::cuda;
using cuda::KvType;

constexpr int64_t kD = 1280, kHeads = 20, kHd = 64, kFrames = 1500, kTextCtx = 448;
constexpr size_t kRotateBytes = size_t{256} << 20;

struct Options {
  std::string filter;
  std::string json_path;
  bool quick = false;
};

struct Result {
  std::string name;
  bool ok = true;
  std::string error;
  double ms = 0, ms_min = 0, ms_max = 0, bytes = 0;
};

std::vector<Result> g_results;
Options g_opt;

bool check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    return false;
  }
  return true;
}

// A zeroed device allocation.
class Buf {
 public:
  explicit Buf(size_t bytes) {
    if (!check_cuda(cudaMalloc(&p_, std::max<size_t>(bytes, 1)), "cudaMalloc")) {
      p_ = nullptr;
    } else {
      cudaMemset(p_, 0, std::max<size_t>(bytes, 1));
    }
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() {
    if (p_) cudaFree(p_);
  }
  template <class T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// n uniform random fp16 values in [-a, a] (xorshift: the 32-window caches take 123M values).
std::unique_ptr<Buf> random_halves(size_t n, float a, uint32_t seed) {
  auto b = std::make_unique<Buf>(n * sizeof(__half));
  uint32_t x = seed * 2654435761u + 1u;
  std::vector<__half> host(n);
  for (auto& h : host) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    h = __float2half(a * (static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f));
  }
  cudaMemcpy(b->get(), host.data(), n * sizeof(__half), cudaMemcpyHostToDevice);
  return b;
}

const char* type_name(KvType t) {
  switch (t) {
    case KvType::kF16:
      return "f16";
    case KvType::kI8Static:
      return "int8 static";
    case KvType::kI8Dynamic:
      return "int8 dynamic";
    case KvType::kFp8:
      return "fp8 e4m3";
  }
  return "?";
}

bool selected(const std::string& name) { return g_opt.filter.empty() || name.find(g_opt.filter) != std::string::npos; }

// Times fn(i) (i = iteration, for rotating inputs); fn returns a Status.
void measure(const std::string& name, double bytes, const std::function<cuda::Status(int)>& fn) {
  Result r;
  r.name = name;
  r.bytes = bytes;
  for (int i = 0; i < 3 && r.ok; ++i) {
    const cuda::Status s = fn(i);
    if (s != cuda::Status::kOk) {
      r.ok = false;
      r.error = cuda::status_name(s);
    }
  }
  if (r.ok && !check_cuda(cudaDeviceSynchronize(), name.c_str())) {
    r.ok = false;
    r.error = "CUDA error";
  }
  if (r.ok) {
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaEventRecord(start);
    fn(0);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float one = 0;
    cudaEventElapsedTime(&one, start, stop);
    const int iters = std::clamp(static_cast<int>((g_opt.quick ? 5.0 : 20.0) / std::max(one, 0.001f)), 3, 2000);
    std::vector<double> per;
    for (int rep = 0; rep < (g_opt.quick ? 3 : 7); ++rep) {
      cudaEventRecord(start);
      for (int i = 0; i < iters; ++i) fn(i);
      cudaEventRecord(stop);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      per.push_back(ms / iters);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    if (!check_cuda(cudaGetLastError(), name.c_str())) {
      r.ok = false;
      r.error = "CUDA error";
    }
    std::sort(per.begin(), per.end());
    r.ms = per[per.size() / 2];
    r.ms_min = per.front();
    r.ms_max = per.back();
  }
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
  std::vector<std::unique_ptr<Buf>> data, scales;
  std::unique_ptr<Buf> static_scales;
  std::vector<cuda::KvView> views;
  size_t bytes_per_copy = 0;  // codes and scales a call reads

  Caches(KvType type, int64_t windows, int64_t n_kv) {
    const int64_t ld = 2 * kD, rows = windows * n_kv;
    const size_t code_bytes = static_cast<size_t>(rows * ld * cuda::kv_element_bytes(type));
    const size_t scale_bytes = type == KvType::kI8Dynamic ? static_cast<size_t>(rows * 2 * kHeads) * sizeof(float) : 0;
    bytes_per_copy = code_bytes + scale_bytes;
    const int copies =
        static_cast<int>(std::clamp<size_t>((kRotateBytes + bytes_per_copy - 1) / bytes_per_copy, 1, 64));
    const auto src = random_halves(static_cast<size_t>(rows * ld), 2.0f, 300);
    const std::vector<float> s(2 * kHeads, 2.0f / (type == KvType::kFp8 ? 448.0f : 127.0f));
    static_scales = std::make_unique<Buf>(s.size() * sizeof(float));
    cudaMemcpy(static_scales->get(), s.data(), s.size() * sizeof(float), cudaMemcpyHostToDevice);
    for (int c = 0; c < copies; ++c) {
      data.push_back(std::make_unique<Buf>(code_bytes));
      scales.push_back(std::make_unique<Buf>(scale_bytes));
      cuda::KvView v;
      v.type = type;
      v.data = data.back()->get();
      v.ld = ld;
      v.batch_stride = n_kv * ld;
      v.scales = type == KvType::kI8Dynamic ? scales.back()->get<float>() : static_scales->get<float>();
      v.scale_ld = 2 * kHeads;
      v.scale_batch_stride = n_kv * 2 * kHeads;
      views.push_back(v);
      if (cuda::kv_quantize(src->get<__half>(), ld, n_kv * ld, v, n_kv, windows, kHeads, kHd, nullptr) !=
          cuda::Status::kOk) {
        std::fprintf(stderr, "kv_quantize failed while preparing the caches\n");
      }
    }
  }
};

// Decoder attention, one query per sequence: cross (all 1500 frames, no lengths) or self (len of 448, causal).
void bench_attention(KvType type, int64_t batch, bool cross, int64_t len) {
  const std::string name = std::string(cross ? "cross-attn" : "self-attn") + " b" + std::to_string(batch) +
                           (cross ? " 1500" : " len" + std::to_string(len) + "/448") + ", " + type_name(type);
  if (!selected(name)) return;
  const int64_t n_kv = cross ? kFrames : kTextCtx;
  Caches caches(type, batch, n_kv);
  const auto q = random_halves(static_cast<size_t>(batch * kD), 2.0f, 4);
  Buf out(static_cast<size_t>(batch * kD) * sizeof(__half));
  const std::vector<int32_t> lens(static_cast<size_t>(batch), static_cast<int32_t>(len));
  Buf dlen(lens.size() * sizeof(int32_t));
  cudaMemcpy(dlen.get(), lens.data(), lens.size() * sizeof(int32_t), cudaMemcpyHostToDevice);
  const size_t ws_bytes = cuda::decoder_attention_workspace_bytes(batch, 1, kHeads, n_kv);
  Buf ws(ws_bytes);  // zeroed, as decoder_attention_workspace_init would
  const double read = static_cast<double>(caches.bytes_per_copy) * (cross ? 1.0 : static_cast<double>(len) / n_kv);
  const double bytes = read + 2.0 * batch * kD * sizeof(__half);
  const auto copies = caches.views.size();
  measure(name, bytes, [&](int i) {
    return cuda::decoder_attention_quantized(q->get<__half>(), kD, kD, caches.views[static_cast<size_t>(i) % copies],
                                             cross ? nullptr : dlen.get<int32_t>(), n_kv, out.get<__half>(), kD, kD,
                                             batch, 1, kHeads, kHd, !cross, ws.get(), ws_bytes, nullptr);
  });
}

// Quantising one layer's cross K/V of 32 windows (once per window, after the cross-K/V GEMM).
void bench_quantize(KvType type) {
  const std::string name = std::string("kv_quantize 32x1500x2560, ") + type_name(type);
  if (!selected(name)) return;
  const int64_t windows = 32, ld = 2 * kD;
  Caches caches(type, windows, kFrames);
  const auto src = random_halves(static_cast<size_t>(windows * kFrames * ld), 2.0f, 5);
  const double bytes = caches.bytes_per_copy + 2.0 * windows * kFrames * ld;
  const auto copies = caches.views.size();
  measure(name, bytes, [&](int i) {
    return cuda::kv_quantize(src->get<__half>(), ld, kFrames * ld, caches.views[static_cast<size_t>(i) % copies],
                             kFrames, windows, kHeads, kHd, nullptr);
  });
}

void write_json(FILE* f, const char* device) {
  std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"results\": [\n", device);
  for (size_t i = 0; i < g_results.size(); ++i) {
    const Result& r = g_results[i];
    const char* sep = i + 1 < g_results.size() ? "," : "";
    if (r.ok) {
      std::fprintf(f, "    {\"name\": \"%s\", \"ms\": %.6f, \"ms_min\": %.6f, \"ms_max\": %.6f, \"tbps\": %.3f}%s\n",
                   r.name.c_str(), r.ms, r.ms_min, r.ms_max, r.bytes / (r.ms * 1e-3) / 1e12, sep);
    } else {
      std::fprintf(f, "    {\"name\": \"%s\", \"error\": \"%s\"}%s\n", r.name.c_str(), r.error.c_str(), sep);
    }
  }
  std::fprintf(f, "  ]\n}\n");
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--filter" && i + 1 < argc) {
      g_opt.filter = argv[++i];
    } else if (a == "--json" && i + 1 < argc) {
      g_opt.json_path = argv[++i];
    } else if (a == "--quick") {
      g_opt.quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--filter SUBSTRING] [--json PATH] [--quick]\n", argv[0]);
      return 2;
    }
  }
  if (!cuda::device_available()) {
    std::printf("no CUDA device: nothing to measure\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %d SMs, %.0f MB L2, compute %d.%d\n\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1e6, prop.major, prop.minor);
  std::printf("%-56s %13s  %20s  %12s\n", "kernel", "median", "[min, max] us", "memory");

  const KvType types[] = {KvType::kF16, KvType::kI8Static, KvType::kI8Dynamic, KvType::kFp8};
  for (KvType t : types) bench_attention(t, 32, true, kFrames);
  for (KvType t : types) bench_attention(t, 1, true, kFrames);
  for (KvType t : types) bench_attention(t, 32, false, 224);
  for (KvType t : types) bench_attention(t, 1, false, 224);
  for (KvType t : types) bench_quantize(t);

  std::printf("\nJSON:\n");
  write_json(stdout, prop.name);
  if (!g_opt.json_path.empty()) {
    if (FILE* f = std::fopen(g_opt.json_path.c_str(), "w")) {
      write_json(f, prop.name);
      std::fclose(f);
    } else {
      std::fprintf(stderr, "cannot write %s\n", g_opt.json_path.c_str());
    }
  }
  bool all_ok = true;
  for (const auto& r : g_results) all_ok = all_ok && r.ok;
  return all_ok ? 0 : 1;
}
