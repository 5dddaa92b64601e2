// Micro-benchmarks of the CUDA kernels at Whisper large-v2 shapes (d 1280, 20 heads, 1500 frames, 51865
// tokens): achieved TFLOP/s and GB/s per kernel, then a projection of the encoder and of one decode step
// from the per-kernel times (a sum of kernel times, no CUDA graph, no overlap: an estimate, not a measurement
// of the engine).
//
// Timing: CUDA events around `iters` back-to-back launches, after warm-up; 7 repetitions, the median is
// reported with min and max. Inputs are random (never zeros). Where one input set would sit in the 50–60 MB
// L2 cache (decode-step weights, KV caches), the benchmark rotates over enough copies to exceed ~256 MB, so the
// bandwidth figures are HBM figures.
//
// Usage: cuda_kernels_bench [--filter SUBSTRING] [--json PATH] [--quick]
// Prints a table, then the same results as JSON (also written to PATH with --json).
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_support.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"

namespace {

namespace cuda = wisp::kernels::cuda;
using wisp::bench::Buf;
using wisp::bench::check_cuda;
using wisp::bench::Result;
using wisp::bench::rotation;

constexpr int64_t kD = 1280, kHeads = 20, kHd = 64, kFrames = 1500, kVocab = 51865, kTextCtx = 448;
constexpr int64_t kEncLayers = 32, kDecLayers = 32;

std::vector<Result> g_results;
wisp::bench::Options g_opt;

// A device allocation filled with uniform random fp16 values in [-a, a] (generated on the host once per
// size and copied, so the data is identical across runs).
struct HalfBuf {
  __half* p = nullptr;
  size_t n = 0;
  HalfBuf() = default;
  HalfBuf(size_t count, float a, uint32_t seed) : n(count) {
    if (!check_cuda(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(__half)), "cudaMalloc")) {
      p = nullptr;
      return;
    }
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-a, a);
    const size_t chunk = size_t{1} << 22;
    std::vector<__half> host(std::min(n, chunk));
    for (size_t off = 0; off < n; off += chunk) {
      const size_t m = std::min(chunk, n - off);
      for (size_t i = 0; i < m; ++i) host[i] = __float2half(dist(gen));
      cudaMemcpy(p + off, host.data(), m * sizeof(__half), cudaMemcpyHostToDevice);
    }
  }
  HalfBuf(const HalfBuf&) = delete;
  HalfBuf& operator=(const HalfBuf&) = delete;
  HalfBuf(HalfBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  ~HalfBuf() {
    if (p) cudaFree(p);
  }
};

// Times fn(i) as wisp::bench::time_calls does (fn enqueues on `stream` and runs `calls` kernels; the figures
// are per call) and prints the table row.
Result* measure(const std::string& name, double flops, double bytes, const std::function<cuda::Status(int)>& fn,
                cudaStream_t stream = nullptr, int calls = 1) {
  if (!g_opt.selected(name)) return nullptr;
  Result r;
  r.name = name;
  r.flops = flops;
  r.bytes = bytes;
  wisp::bench::time_calls(fn, g_opt.quick, &r, stream, calls);
  g_results.push_back(r);
  const Result& x = g_results.back();
  if (x.ok) {
    std::printf("%-52s %10.2f us  [%8.2f, %8.2f]  %8.1f TFLOP/s  %8.0f GB/s\n", x.name.c_str(), x.ms * 1e3,
                x.ms_min * 1e3, x.ms_max * 1e3, x.flops / (x.ms * 1e-3) / 1e12, x.bytes / (x.ms * 1e-3) / 1e9);
  } else {
    std::printf("%-52s FAILED: %s\n", x.name.c_str(), x.error.c_str());
  }
  std::fflush(stdout);
  return &g_results.back();
}

double ms_of(const char* name) {
  for (const auto& r : g_results) {
    if (r.name == name && r.ok) return r.ms;
  }
  return NAN;
}

// ---- GEMMs --------------------------------------------------------------------------------------------------

void bench_linear(cuda::GemmContext& ctx, const char* name, int64_t m, int64_t n, int64_t k, cuda::Epilogue ep,
                  bool f32_out) {
  if (!g_opt.selected(name)) return;
  const size_t w_bytes = static_cast<size_t>(n * k) * 2;
  const int copies = rotation(w_bytes);
  std::vector<HalfBuf> ws;
  for (int c = 0; c < copies; ++c) ws.emplace_back(static_cast<size_t>(n * k), std::sqrt(3.0f / k), 100 + c);
  HalfBuf x(static_cast<size_t>(m * k), 1.0f, 1);
  HalfBuf bias(static_cast<size_t>(n), 0.5f, 2);
  Buf<float> bias32(static_cast<size_t>(n));
  Buf<__half> y16(f32_out ? 0 : static_cast<size_t>(m * n));
  Buf<float> y32(f32_out ? static_cast<size_t>(m * n) : 0);
  const double flops = 2.0 * m * n * k;
  const double bytes = 2.0 * (m * k + n * k) + (f32_out ? 4.0 : 2.0) * m * n;
  measure(name, flops, bytes, [&](int i) {
    const __half* w = ws[static_cast<size_t>(i % copies)].p;
    if (f32_out) return cuda::linear_f32_out(ctx, x.p, k, w, nullptr, y32.p, n, m, n, k, nullptr);
    return cuda::linear(ctx, x.p, w, ep == cuda::Epilogue::kNone ? nullptr : bias.p, y16.p, m, n, k, ep, nullptr);
  });
}

// ---- attention ------------------------------------------------------------------------------------------------

void bench_encoder_attention(cuda::GemmContext& ctx, int64_t batch) {
  const std::string name = "encoder attention flash b" + std::to_string(batch) + " 20x1500x1500x64";
  const std::string name_u = "encoder attention unfused b1 20x1500x1500x64";
  if (!g_opt.selected(name) && !g_opt.selected(name_u)) return;
  const int64_t ld = 3 * kD;
  HalfBuf qkv(static_cast<size_t>(batch * kFrames * ld), 2.0f, 3);
  Buf<__half> out(static_cast<size_t>(batch * kFrames * kD));
  const double flops = 4.0 * batch * kFrames * kFrames * kHd * kHeads;
  const double bytes = 2.0 * batch * kFrames * kD * 4;
  // The default kernel, then the mma.sync one (they differ on compute capability 9.0 only: set_attention_wgmma).
  for (const bool wgmma : {true, false}) {
    const std::string label = wgmma ? name : name + " [mma.sync]";
    cuda::set_attention_wgmma(wgmma);
    measure(label, flops, bytes, [&](int) {
      return cuda::attention(qkv.p, ld, kFrames * ld, qkv.p + kD, ld, kFrames * ld, qkv.p + 2 * kD, ld, kFrames * ld,
                             out.p, kD, kFrames * kD, batch, kFrames, kFrames, kHeads, kHd, false, 0, nullptr);
    });
  }
  cuda::set_attention_wgmma(true);
  if (batch == 1 && g_opt.selected(name_u)) {
    Buf<char> scratch(cuda::attention_unfused_scratch_bytes(kFrames, kFrames, kHeads));
    measure(name_u, flops, bytes + kHeads * kFrames * kFrames * (4.0 * 2 + 2.0 * 2), [&](int) {
      return cuda::attention_unfused(ctx, qkv.p, ld, qkv.p + kD, ld, qkv.p + 2 * kD, ld, out.p, kD, kFrames, kFrames,
                                     kHeads, kHd, false, 0, scratch.p, nullptr);
    });
  }
}

// Self-attention over a KV cache of `len` tokens (of kTextCtx), or cross-attention over the 1500 frames
// (interleaved K/V [1500, 2d], one window per sequence or one shared window).
void bench_decoder_attention(const char* name, int64_t batch, int64_t len, bool cross, bool shared_window) {
  if (!g_opt.selected(name)) return;
  const int64_t n_kv = cross ? kFrames : kTextCtx;
  const int64_t ld = cross ? 2 * kD : kD;
  const int64_t windows = shared_window ? 1 : batch;
  const size_t layer_elems = static_cast<size_t>(windows * n_kv * ld) * (cross ? 1 : 2);  // self: separate K, V
  const int copies = rotation(layer_elems * 2);
  std::vector<HalfBuf> kv;
  for (int c = 0; c < copies; ++c) kv.emplace_back(layer_elems, 2.0f, 200 + c);
  HalfBuf q(static_cast<size_t>(batch * kD), 2.0f, 4);
  Buf<__half> out(static_cast<size_t>(batch * kD));
  std::vector<int32_t> lens(static_cast<size_t>(batch), static_cast<int32_t>(len));
  Buf<int32_t> dlen(lens.size());
  cudaMemcpy(dlen.p, lens.data(), lens.size() * sizeof(int32_t), cudaMemcpyHostToDevice);
  const size_t ws_bytes = cuda::decoder_attention_workspace_bytes(batch, 1, kHeads, n_kv);
  Buf<char> ws(ws_bytes);  // zeroed by Buf, as decoder_attention_workspace_init would
  const int64_t keys = cross ? kFrames : len;
  const double bytes = 2.0 * windows * keys * kD * 2 + 2.0 * batch * kD * 2;
  const double flops = 4.0 * batch * keys * kD;
  const int64_t sk = shared_window ? 0 : n_kv * (cross ? ld : kD);
  // The default (tensor-core) kernel, then the CUDA-core one (set_decoder_attention_mma).
  for (const bool mma : {true, false}) {
    cuda::set_decoder_attention_mma(mma);
    measure(mma ? std::string(name) : std::string(name) + " [simt]", flops, bytes, [&](int i) {
      const __half* base = kv[static_cast<size_t>(i % copies)].p;
      const __half* k = base;
      const __half* v = cross ? base + kD : base + static_cast<size_t>(windows * n_kv * kD);
      return cuda::decoder_attention(q.p, kD, kD, k, ld, sk, v, ld, sk, cross ? nullptr : dlen.p, n_kv, out.p, kD, kD,
                                     batch, 1, kHeads, kHd, !cross, ws.p, ws_bytes, nullptr);
    });
  }
  cuda::set_decoder_attention_mma(true);
}

// Cross-attention with each (window, head)'s K and V rows contiguous ([batch · heads][1500][64] each, 128-byte rows
// back to back) instead of interleaved in [1500, 2d] rows: the same kernel, each head as a sequence of its own.
// Whether the layout alone changes the bandwidth of the step's largest reader.
void bench_cross_attention_head_major(const char* name, int64_t batch) {
  if (!g_opt.selected(name)) return;
  const int64_t rows = batch * kHeads;  // (window, head) pairs
  const size_t elems = static_cast<size_t>(rows * kFrames * kHd);
  const int copies = rotation(elems * 2 * 2);
  std::vector<HalfBuf> ks, vs;
  for (int c = 0; c < copies; ++c) ks.emplace_back(elems, 2.0f, 300 + c), vs.emplace_back(elems, 2.0f, 400 + c);
  HalfBuf q(static_cast<size_t>(rows * kHd), 2.0f, 4);
  Buf<__half> out(static_cast<size_t>(rows * kHd));
  const size_t ws_bytes = cuda::decoder_attention_workspace_bytes(rows, 1, 1, kFrames);
  Buf<char> ws(ws_bytes);
  const double bytes = 2.0 * rows * kFrames * kHd * 2 + 2.0 * rows * kHd * 2;
  const double flops = 4.0 * rows * kFrames * kHd;
  measure(name, flops, bytes, [&](int i) {
    const size_t c = static_cast<size_t>(i % copies);
    return cuda::decoder_attention(q.p, kHd, kHd, ks[c].p, kHd, kFrames * kHd, vs[c].p, kHd, kFrames * kHd, nullptr,
                                   kFrames, out.p, kHd, kHd, rows, 1, 1, kHd, false, ws.p, ws_bytes, nullptr);
  });
}

// ---- the rest ---------------------------------------------------------------------------------------------------

void bench_misc() {
  {
    const int64_t rows = kFrames, cols = kD;
    HalfBuf x(static_cast<size_t>(rows * cols), 4.0f, 5);
    Buf<float> g(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
    Buf<__half> y(static_cast<size_t>(rows * cols));
    measure("layer_norm 1500x1280", 0, 4.0 * rows * cols,
            [&](int) { return cuda::layer_norm(x.p, g.p, b.p, y.p, rows, cols, 1e-5f, nullptr); });
    measure("layer_norm 1x1280 (decode step)", 0, 4.0 * cols,
            [&](int) { return cuda::layer_norm(x.p, g.p, b.p, y.p, 1, cols, 1e-5f, nullptr); });
  }
  {
    // An encoder norm of 32 windows: one call (warps walking rows), and as 32 calls of one window each (a warp per
    // row, chained), for comparison.
    const int64_t windows = 32, rows = windows * kFrames, cols = kD;
    HalfBuf x(static_cast<size_t>(rows * cols), 4.0f, 6);
    Buf<float> g(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
    Buf<__half> y(static_cast<size_t>(rows * cols));
    measure("layer_norm 48000x1280", 0, 4.0 * rows * cols,
            [&](int) { return cuda::layer_norm(x.p, g.p, b.p, y.p, rows, cols, 1e-5f, nullptr); });
    measure("layer_norm 48000x1280 as 32 calls of 1500 rows", 0, 4.0 * rows * cols, [&](int) {
      for (int64_t w = 0; w < windows; ++w) {
        const int64_t at = w * kFrames * cols;
        const cuda::Status s = cuda::layer_norm(x.p + at, g.p, b.p, y.p + at, kFrames, cols, 1e-5f, nullptr);
        if (s != cuda::Status::kOk) return s;
      }
      return cuda::Status::kOk;
    });
  }
  {
    const int64_t n = kFrames * 4 * kD;
    HalfBuf x(static_cast<size_t>(n), 3.0f, 7);
    measure("gelu 1500x5120", 0, 4.0 * n, [&](int) { return cuda::gelu(x.p, n, nullptr); });
  }
  for (int64_t rows : {1, 32}) {
    std::vector<float> host(static_cast<size_t>(rows * kVocab));
    std::mt19937 gen(8);
    std::uniform_real_distribution<float> dist(-10.0f, 10.0f);
    for (auto& v : host) v = dist(gen);
    Buf<float> x(host.size());
    cudaMemcpy(x.p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
    Buf<int32_t> idx(static_cast<size_t>(rows));
    Buf<float> lp(static_cast<size_t>(rows));
    const std::string a = "argmax+logprob " + std::to_string(rows) + "x51865";
    measure(a, 0, 4.0 * rows * kVocab,
            [&](int) { return cuda::argmax(x.p, rows, kVocab, kVocab, idx.p, lp.p, nullptr); });
    const std::string l = "log_softmax " + std::to_string(rows) + "x51865";
    measure(l, 0, 8.0 * rows * kVocab, [&](int) { return cuda::log_softmax(x.p, rows, kVocab, kVocab, nullptr); });
  }
  {
    const int64_t n = 32;
    HalfBuf emb(static_cast<size_t>(kVocab * kD), 0.1f, 9), pos(static_cast<size_t>(kTextCtx * kD), 0.1f, 10);
    std::vector<int32_t> tok(n), p(n);
    for (int64_t i = 0; i < n; ++i) {
      tok[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % kVocab);
      p[static_cast<size_t>(i)] = static_cast<int32_t>(i % kTextCtx);
    }
    Buf<int32_t> dt(n), dp(n);
    cudaMemcpy(dt.p, tok.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dp.p, p.data(), n * 4, cudaMemcpyHostToDevice);
    Buf<__half> out(static_cast<size_t>(n * kD));
    measure("embed_tokens 32 x 1280", 0, 2.0 * 3 * n * kD,
            [&](int) { return cuda::embed_tokens(dt.p, dp.p, emb.p, pos.p, out.p, n, kD, kVocab, kTextCtx, nullptr); });
  }
  {
    const int64_t mels = 80, t_in = 3000;
    Buf<float> mel(static_cast<size_t>(mels * t_in));
    Buf<__half> col(static_cast<size_t>(t_in * mels * 3));
    measure("im2col_k3_mel 80x3000", 0, 4.0 * mels * t_in + 2.0 * t_in * mels * 3,
            [&](int) { return cuda::im2col_k3_mel(mel.p, col.p, 1, t_in, mels, t_in, 1, nullptr); });
    HalfBuf x(static_cast<size_t>(t_in * kD), 1.0f, 11);
    Buf<__half> col2(static_cast<size_t>(kFrames * kD * 3));
    measure("im2col_k3 3000x1280 stride 2", 0, 2.0 * t_in * kD + 2.0 * kFrames * kD * 3,
            [&](int) { return cuda::im2col_k3(x.p, col2.p, 1, t_in, kD, kFrames, 2, nullptr); });
  }
}

// ---- small-batch GEMV (decode step) ----------------------------------------------------------------------

// The weights of every GEMV case come from one arena of valid fp16 values (read as int8/int4 codes by the
// quantised formats) and one of positive fp32 scales, large enough for the copies that exceed the L2 cache.
struct GemvArena {
  static constexpr size_t kWeightBytes = size_t{512} << 20, kScaleFloats = size_t{16} << 20;
  Buf<char> w{kWeightBytes};
  Buf<float> s{kScaleFloats};
  GemvArena() {
    std::mt19937 gen(12);
    std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
    const size_t chunk = size_t{16} << 20;
    std::vector<__half> host(chunk / sizeof(__half));
    for (auto& v : host) v = __float2half(dist(gen));
    for (size_t off = 0; w.p && off < kWeightBytes; off += chunk)
      cudaMemcpy(w.p + off, host.data(), chunk, cudaMemcpyHostToDevice);
    std::uniform_real_distribution<float> sd(0.5e-3f, 2e-3f);
    std::vector<float> scales(kScaleFloats);
    for (auto& v : scales) v = sd(gen);
    if (s.p) cudaMemcpy(s.p, scales.data(), kScaleFloats * sizeof(float), cudaMemcpyHostToDevice);
  }
};

enum class GemvOp { kBias, kBiasResidual, kBiasGelu, kLogits };

struct GemvFormat {
  const char* name;
  cuda::WeightType type;
  int group;
  int wgmma_cluster = cuda::kDefaultGemvWgmmaCluster;  // set_gemv_wgmma while measuring
};
// f16 and i8 take the Hopper (wgmma) kernel for 9..64 rows on an H100/H200; f16mma / i8mma the mma.sync kernel it
// replaces there, f16wg2 / f16wg4 the wgmma kernel with smaller clusters.
constexpr GemvFormat kGemvFormats[] = {
    {"f16", cuda::WeightType::kF16, 0},       {"f16mma", cuda::WeightType::kF16, 0, 0},
    {"f16wg2", cuda::WeightType::kF16, 0, 2}, {"f16wg4", cuda::WeightType::kF16, 0, 4},
    {"i8", cuda::WeightType::kI8, 0},         {"i8mma", cuda::WeightType::kI8, 0, 0},
    {"i4g64", cuda::WeightType::kI4, 64},     {"i4g128", cuda::WeightType::kI4, 128}};

std::string gemv_name(const char* format, int64_t m, const char* what, int64_t n, int64_t k) {
  return "gemv " + std::string(format) + " m" + std::to_string(m) + " " + what + " " + std::to_string(n) + "x" +
         std::to_string(k);
}

// Times call(i, stream) per call inside a CUDA graph of kGraphCalls back-to-back calls (i rotating the
// weights as in measure()), the way the decoder step runs them: launch overhead is excluded, which the eager
// figure of measure() includes wherever the host launches slower than a short kernel runs. Recorded as
// "<name> graph".
constexpr int kGraphCalls = 100;
using StreamCall = std::function<cuda::Status(int, cudaStream_t)>;

void measure_graph(const std::string& name, double flops, double bytes, const StreamCall& call) {
  const std::string graph_name = name + " graph";
  if (!g_opt.selected(graph_name)) return;
  cudaStream_t stream = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda::Status status = cuda::Status::kCudaError;
  if (check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate")) {
    status = call(0, stream);  // first-call setup (attributes, workspaces) happens outside the capture
    if (status == cuda::Status::kOk && check_cuda(cudaStreamSynchronize(stream), graph_name.c_str()) &&
        check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")) {
      for (int i = 0; i < kGraphCalls && status == cuda::Status::kOk; ++i) status = call(i, stream);
      if (!check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture") ||
          !check_cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate")) {
        status = cuda::Status::kCudaError;
      }
    }
  }
  measure(
      graph_name, flops, bytes,
      [&](int) {
        if (status != cuda::Status::kOk) return status;
        return cudaGraphLaunch(exec, stream) == cudaSuccess ? cuda::Status::kOk : cuda::Status::kCudaError;
      },
      stream, kGraphCalls);
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  if (stream) cudaStreamDestroy(stream);
}
// One shape at one row count: every weight format through gemv (the epilogue fused), and cuBLASLt's linear
// with fp16 weights (bias/GELU fused; the residual add, a separate kernel there, is not counted), each eager
// and inside a CUDA graph. GB/s counts the weight and scale bytes only.
void bench_gemv(std::unique_ptr<GemvArena>& arena, cuda::GemmContext& ctx, int64_t m, const char* what, int64_t n,
                int64_t k, GemvOp op) {
  bool any = g_opt.selected(gemv_name("cublas", m, what, n, k)) ||
             g_opt.selected(gemv_name("cublas", m, what, n, k) + " graph");
  for (const auto& f : kGemvFormats) {
    any = any || g_opt.selected(gemv_name(f.name, m, what, n, k)) ||
          g_opt.selected(gemv_name(f.name, m, what, n, k) + " graph");
  }
  if (!any) return;
  if (!arena) arena = std::make_unique<GemvArena>();
  HalfBuf x(static_cast<size_t>(m * k), 1.0f, 13), bias(static_cast<size_t>(n), 0.5f, 14);
  Buf<__half> y(static_cast<size_t>(m * n));
  Buf<float> y32(static_cast<size_t>(m * n));
  const double flops = 2.0 * m * n * k;
  for (const auto& f : kGemvFormats) {
    const int64_t bytes = cuda::weight_bytes(f.type, n, k, f.group);
    const int64_t scales = f.type == cuda::WeightType::kI8   ? n
                           : f.type == cuda::WeightType::kI4 ? n * (k / f.group)
                                                             : 0;
    const size_t w_stride = (static_cast<size_t>(bytes - 4 * scales) + 255) / 256 * 256;
    const size_t s_stride = (static_cast<size_t>(scales) + 63) / 64 * 64;
    int copies =
        std::min<int>(rotation(static_cast<size_t>(bytes)), static_cast<int>(GemvArena::kWeightBytes / w_stride));
    if (s_stride > 0) copies = std::min<int>(copies, static_cast<int>(GemvArena::kScaleFloats / s_stride));
    const StreamCall call = [&](int i, cudaStream_t stream) {
      const size_t c = static_cast<size_t>(i % copies);
      cuda::WeightView w;
      w.type = f.type;
      w.group = f.group;
      w.data = arena->w.p + c * w_stride;
      w.scales = s_stride > 0 ? arena->s.p + c * s_stride : nullptr;
      switch (op) {
        case GemvOp::kLogits:
          return cuda::gemv_f32_out(x.p, w, y32.p, m, n, k, stream);
        case GemvOp::kBiasResidual:
          return cuda::gemv(x.p, w, bias.p, y.p, y.p, m, n, k, false, stream);
        default:
          return cuda::gemv(x.p, w, bias.p, nullptr, y.p, m, n, k, op == GemvOp::kBiasGelu, stream);
      }
    };
    const std::string name = gemv_name(f.name, m, what, n, k);
    cuda::set_gemv_wgmma(f.wgmma_cluster);
    measure(name, flops, static_cast<double>(bytes), [&](int i) { return call(i, nullptr); });
    measure_graph(name, flops, static_cast<double>(bytes), call);
    cuda::set_gemv_wgmma(cuda::kDefaultGemvWgmmaCluster);
  }
  const size_t w_stride = static_cast<size_t>(2 * n * k + 255) / 256 * 256;
  const int copies = std::min<int>(rotation(w_stride), static_cast<int>(GemvArena::kWeightBytes / w_stride));
  const StreamCall call = [&](int i, cudaStream_t stream) {
    const auto* w = reinterpret_cast<const __half*>(arena->w.p + static_cast<size_t>(i % copies) * w_stride);
    if (op == GemvOp::kLogits) return cuda::linear_f32_out(ctx, x.p, k, w, nullptr, y32.p, n, m, n, k, stream);
    const auto ep = op == GemvOp::kBiasGelu ? cuda::Epilogue::kBiasGeluErf : cuda::Epilogue::kBias;
    return cuda::linear(ctx, x.p, w, bias.p, y.p, m, n, k, ep, stream);
  };
  const std::string name = gemv_name("cublas", m, what, n, k);
  measure(name, flops, 2.0 * n * k, [&](int i) { return call(i, nullptr); });
  measure_graph(name, flops, 2.0 * n * k, call);
}

struct GemvShape {
  const char* what;
  int64_t n, k;
  GemvOp op;
};
constexpr GemvShape kGemvShapes[] = {{"qkv", 3 * kD, kD, GemvOp::kBias},
                                     {"out+res", kD, kD, GemvOp::kBiasResidual},
                                     {"fc1+gelu", 4 * kD, kD, GemvOp::kBiasGelu},
                                     {"fc2+res", kD, 4 * kD, GemvOp::kBiasResidual},
                                     {"logits", kVocab, kD, GemvOp::kLogits}};
constexpr int64_t kGemvRows[] = {1, 2, 5, 8, 16, 32, 64};

void bench_gemvs(cuda::GemmContext& ctx) {
  std::unique_ptr<GemvArena> arena;
  for (int64_t m : kGemvRows) {
    for (const auto& s : kGemvShapes) bench_gemv(arena, ctx, m, s.what, s.n, s.k, s.op);
  }
}

// The decoder step's weight GEMVs of large-v2 from the times above, eager and in a graph: 32 layers × (QKV,
// self-attention out, cross-attention query and out, fc1, fc2), then the logits.
void print_gemv_sweep() {
  auto find = [](const std::string& name) -> const Result* {
    for (const auto& r : g_results) {
      if (r.name == name && r.ok) return &r;
    }
    return nullptr;
  };
  bool header = false;
  for (const char* timing : {"", " graph"}) {
    for (int64_t m : kGemvRows) {
      for (const char* format : {"f16", "f16mma", "i8", "i8mma", "i4g64", "i4g128", "cublas"}) {
        const int count[] = {1, 3, 1, 1};  // per layer: QKV, 3 projections, fc1, fc2
        double ms = 0, bytes = 0;
        bool complete = true;
        for (int i = 0; i < 4; ++i) {
          const Result* r =
              find(gemv_name(format, m, kGemvShapes[i].what, kGemvShapes[i].n, kGemvShapes[i].k) + timing);
          complete = complete && r;
          if (!r) break;
          ms += count[i] * r->ms;
          bytes += count[i] * r->bytes;
        }
        if (!complete) continue;
        if (!header) {
          std::printf("\nDecoder-step weight sweep, large-v2 (32 layers x {qkv, 3 x (1280x1280), fc1, fc2}):\n");
          header = true;
        }
        const Result* logits = find(gemv_name(format, m, "logits", kVocab, kD) + timing);
        std::printf("  m=%lld %-7s%-6s %9.1f us  %6.0f GB/s   + logits: %9.1f us\n", static_cast<long long>(m), format,
                    timing, kDecLayers * ms * 1e3, bytes / (ms * 1e-3) / 1e9,
                    kDecLayers * ms * 1e3 + (logits ? logits->ms * 1e3 : NAN));
      }
    }
  }
}

void print_projection() {
  std::printf("\nProjection for large-v2 (sums of the kernel times above; no graph, no overlap):\n");
  const double enc_layer = ms_of("enc qkv 1500x3840x1280 +bias") + ms_of("encoder attention flash b1 20x1500x1500x64") +
                           ms_of("enc out 1500x1280x1280 +bias") + ms_of("enc fc1 1500x5120x1280 +bias+gelu(erf)") +
                           ms_of("enc fc2 1500x1280x5120 +bias") + 2 * ms_of("layer_norm 1500x1280");
  std::printf("  encoder, 32 layers (convs excluded): %8.3f ms   (target 6 ms)\n", kEncLayers * enc_layer);
  const double dec_layer = ms_of("dec qkv 1x3840x1280 +bias") + ms_of("dec self-attn b1 len224") +
                           2 * ms_of("dec out 1x1280x1280 +bias") + ms_of("dec cross-q 1x1280x1280 +bias") +
                           ms_of("dec cross-attn b1 1500") + ms_of("dec fc1 1x5120x1280 +bias+gelu(erf)") +
                           ms_of("dec fc2 1x1280x5120 +bias") + 3 * ms_of("layer_norm 1x1280 (decode step)");
  const double step = kDecLayers * dec_layer + ms_of("logits 1x51865x1280 f32") + ms_of("argmax+logprob 1x51865") +
                      ms_of("embed_tokens 32 x 1280");
  std::printf("  decode step, batch 1:                %8.3f ms   (target 0.6 ms)\n", step);
  std::printf("  (NaN: a kernel of the sum was filtered out or failed)\n");
}

void json_metrics(FILE* f, const Result& r) {
  std::fprintf(f, "\"tflops\": %.3f, \"gbps\": %.1f", r.flops / (r.ms * 1e-3) / 1e12, r.bytes / (r.ms * 1e-3) / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  if (!wisp::bench::parse_options(argc, argv, &g_opt)) return 2;
  cudaDeviceProp prop{};
  if (!wisp::bench::open_device(&prop)) return 1;
  std::printf("%-52s %13s  %20s  %16s  %12s\n", "kernel", "median", "[min, max] us", "compute", "memory");

  cuda::GemmContext ctx;
  if (ctx.init() != cuda::Status::kOk) {
    std::printf("cuBLASLt context could not be created\n");
    return 1;
  }
  using E = cuda::Epilogue;
  // Encoder, one 30 s window.
  bench_linear(ctx, "enc qkv 1500x3840x1280 +bias", kFrames, 3 * kD, kD, E::kBias, false);
  bench_linear(ctx, "enc out 1500x1280x1280 +bias", kFrames, kD, kD, E::kBias, false);
  bench_linear(ctx, "enc fc1 1500x5120x1280 +bias+gelu(tanh, fused)", kFrames, 4 * kD, kD, E::kBiasGeluTanh, false);
  bench_linear(ctx, "enc fc1 1500x5120x1280 +bias+gelu(erf)", kFrames, 4 * kD, kD, E::kBiasGeluErf, false);
  bench_linear(ctx, "enc fc2 1500x1280x5120 +bias", kFrames, kD, 4 * kD, E::kBias, false);
  bench_linear(ctx, "enc conv2 1500x1280x3840 +bias+gelu(erf)", kFrames, kD, 3 * kD, E::kBiasGeluErf, false);
  bench_linear(ctx, "cross-kv 1500x2560x1280 (one layer)", kFrames, 2 * kD, kD, E::kBias, false);
  bench_encoder_attention(ctx, 1);
  bench_encoder_attention(ctx, 8);
  // Decode step, batch 1 (weight-bound GEMVs) and batch 32.
  bench_linear(ctx, "dec qkv 1x3840x1280 +bias", 1, 3 * kD, kD, E::kBias, false);
  bench_linear(ctx, "dec out 1x1280x1280 +bias", 1, kD, kD, E::kBias, false);
  bench_linear(ctx, "dec cross-q 1x1280x1280 +bias", 1, kD, kD, E::kBias, false);
  bench_linear(ctx, "dec fc1 1x5120x1280 +bias+gelu(erf)", 1, 4 * kD, kD, E::kBiasGeluErf, false);
  bench_linear(ctx, "dec fc2 1x1280x5120 +bias", 1, kD, 4 * kD, E::kBias, false);
  bench_linear(ctx, "logits 1x51865x1280 f32", 1, kVocab, kD, E::kNone, true);
  bench_linear(ctx, "dec qkv 32x3840x1280 +bias", 32, 3 * kD, kD, E::kBias, false);
  bench_linear(ctx, "dec fc1 32x5120x1280 +bias+gelu(erf)", 32, 4 * kD, kD, E::kBiasGeluErf, false);
  bench_linear(ctx, "logits 32x51865x1280 f32", 32, kVocab, kD, E::kNone, true);
  bench_decoder_attention("dec self-attn b1 len224", 1, 224, false, false);
  bench_decoder_attention("dec self-attn b32 len224", 32, 224, false, false);
  bench_decoder_attention("dec cross-attn b1 1500", 1, kFrames, true, false);
  bench_decoder_attention("dec cross-attn b32 1500 (32 windows)", 32, kFrames, true, false);
  bench_decoder_attention("dec cross-attn b32 1500 (one shared window)", 32, kFrames, true, true);
  bench_cross_attention_head_major("dec cross-attn b32 1500 (32 windows, head-major K/V)", 32);
  bench_cross_attention_head_major("dec cross-attn b16 1500 (16 windows, head-major K/V)", 16);
  bench_decoder_attention("dec cross-attn b16 1500 (16 windows)", 16, kFrames, true, false);
  bench_misc();
  bench_gemvs(ctx);
  print_projection();
  print_gemv_sweep();

  return wisp::bench::finish(g_opt, prop.name, g_results, json_metrics);
}
