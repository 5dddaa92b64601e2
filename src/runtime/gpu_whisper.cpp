// GpuWhisper (gpu_whisper.h): the Whisper forward pass composed from src/kernels/cuda. Built only when
// WISP_CUDA is on (CMake picks gpu_stub.cpp otherwise).
#include "runtime/gpu_whisper.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <tuple>

#include "core/dtype.h"
#include "core/mel_filters.h"
#include "format/tensor_names.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/kv_quant.h"
#include "kernels/cuda/log_mel.h"
#include "kernels/cuda/token_select.h"

namespace wisp::runtime {

namespace kc = wisp::kernels::cuda;
namespace names = wisp::format::names;

namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}
void kcheck(kc::Status s, const char* what) {
  if (s != kc::Status::kOk) {
    throw std::runtime_error(std::string("CUDA kernel ") + what + " failed: " + kc::status_name(s));
  }
}
#define CK(call) kcheck((call), #call)

size_t align_up(size_t n) { return (n + 255) / 256 * 256; }

// Forbidden ranges a step's token queries may hold per row on average (the suppressed tokens of the
// reference's default list merge into ~90 ranges; a step with more answers its queries on the host).
constexpr size_t kRangesPerRow = 256;

// An FP8 e4m3 code as a float (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; 0x7f/0xff are NaN).
float e4m3_to_float(uint8_t code) {
  const int sign = code >> 7, exponent = (code >> 3) & 0xf, mantissa = code & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  const float magnitude =
      exponent == 0 ? std::ldexp(float(mantissa) / 8.0f, -6) : std::ldexp(1.0f + float(mantissa) / 8.0f, exponent - 7);
  return sign ? -magnitude : magnitude;
}

// One cudaMalloc, carved by a bump pointer (256-byte aligned pieces). Before reserve() it only counts: take()
// returns null and advances `used`, so a layout can be run once to size the arena and once to fill it.
struct Arena {
  char* base = nullptr;
  size_t size = 0, used = 0;
  void reserve(size_t bytes) {
    used = 0;
    size = bytes;
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it, so that the next launch check does not see it
      throw GpuOutOfMemory("GpuWhisper: " + std::to_string(bytes >> 20) + " MiB of device memory are not free");
    }
    cuda_check(e, "cudaMalloc (arena)");
    base = static_cast<char*>(p);
  }
  template <class T>
  T* take(size_t count) {
    const size_t bytes = align_up(count * sizeof(T));
    if (base && used + bytes > size) throw std::runtime_error("GpuWhisper arena overflow");
    T* p = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used += bytes;
    return p;
  }
  ~Arena() {
    if (base) cudaFree(base);
  }
};

struct DLinear {
  kc::WeightView view;          // the weight as stored: fp16 [out, in], int8 [out, in] or int4 [out, in/2] + scales
  const __half* w16 = nullptr;  // fp16 [out, in] for cuBLASLt (view.data when fp16; null when quantised)
  __half* b = nullptr;          // [out] (zeros when the layer has no bias)
  int64_t out = 0, in = 0;
  // The decoder's pre-norm folded into this layer's GEMV (kc::RowNorm): W·gamma and W·beta, [out] each; null
  // for the layers that no norm precedes.
  float* w_gamma = nullptr;
  float* w_beta = nullptr;
};

struct DNorm {
  float* gamma = nullptr;
  float* beta = nullptr;
};
struct DBlock {
  DNorm attn_ln, cross_ln, mlp_ln;
  DLinear qkv, attn_out, cross_q, cross_kv, cross_out, fc1, fc2;
};

}  // namespace

struct GpuWhisper::Impl {
  GpuDims d;
  int max_batch = 0;  // windows of the benchmark form (= windows = sequences there)
  int windows = 0;    // cross-K/V slots
  int sequences = 0;  // self-attention cache slots
  int rows = 0;       // rows of the decoder buffers: max(sequences, n_text_ctx), so a prompt fits in one pass
  int device = 0;
  size_t used_before = 0;
  cudaStream_t stream = nullptr;
  kc::GemmContext gemm;
  Arena weights, acts;

  DLinear conv1, conv2;    // [d, c_in · 3]
  size_t max_dequant = 0;  // elements of the largest quantised weight
  __half* deq = nullptr;   // [max_dequant] a quantised weight dequantised for a GEMM (many rows)
  bool use_gemv = true;    // up to gemv_rows() rows: the GEMV kernels instead of cuBLASLt
  int gemv_max_rows = 0;   // set_gemv_max_rows; 0: per weight type (gemv_rows)
  GpuWhisper::NormPlacement norms = GpuWhisper::NormPlacement::kAuto;  // set_norm_placement
  bool fuse_kv_append = true;  // the K/V append in the QKV GEMV's epilogue (set_fused_kv_append)
  unsigned skip = 0;           // GpuWhisper::StepPart bits left out of decode steps (set_step_ablation)
  kc::Epilogue encoder_gelu = kc::Epilogue::kBiasGeluTanh;  // set_encoder_gelu
  __half* enc_pos = nullptr;
  std::vector<DBlock> enc, dec;
  DNorm ln_post, dec_ln;
  __half* tok_emb = nullptr;        // [n_vocab, d]
  float* logits_w_gamma = nullptr;  // [n_vocab] the final norm folded into the logits (DLinear::w_gamma)
  float* logits_w_beta = nullptr;
  __half* dec_pos = nullptr;  // [n_text_ctx, d]

  // Encoder activations, for up to W = `windows` windows at once (`big` also holds the cross-K/V projection
  // before it is quantised).
  float* audio = nullptr;      // [W, window_samples] 16 kHz samples of each window (log_mel's input)
  float* mel = nullptr;        // [W, n_mels, 2·n_audio_ctx]
  kc::DeviceLogMel mel_gpu;    // the log-mel of one window (cuFFT plans, ~10 MB; made by the first log_mel)
  __half* big = nullptr;       // conv1 output [W, 2·n_ctx, d] / fc1 output [W, n_ctx, 4d]
  __half* mid = nullptr;       // im2col columns / qkv [W, n_ctx, 3d]
  __half* x = nullptr;         // residual stream [W, n_ctx, d]
  __half* h = nullptr;         // normed [W, n_ctx, d]
  __half* a = nullptr;         // attention output [W, n_ctx, d]
  __half* features = nullptr;  // [W, n_ctx, d]
  // K/V caches, stored as `kv_type` (kv_quant.h; 1 byte per element unless fp16): K in columns [0, d), V in
  // [d, 2d). The self-attention caches of all layers are one block (kv_layer_pitch bytes apart), so a
  // sequence copy is one 2D copy; likewise their per-token scales (int8 dynamic).
  kc::KvType kv_type = kc::KvType::kF16;
  std::vector<char*> ckv;  // per decoder layer [windows, n_ctx, 2d]
  std::vector<char*> kv;   // per decoder layer [sequences, n_text_ctx, 2d]
  size_t kv_layer_pitch = 0;
  std::vector<float*> ckv_scales;  // per layer: static [2·n_head] (K heads, V heads), or [windows, n_ctx, 2·n_head]
  std::vector<float*> kv_scales;   // per layer: static [2·n_head], or [sequences, n_text_ctx, 2·n_head]
  size_t kv_scale_pitch = 0;       // bytes from kv_scales[l] to kv_scales[l + 1] (int8 dynamic)
  std::vector<std::vector<float>> self_scale_init, cross_scale_init;  // static scales to upload, per layer
  // Decoder buffers ([R] = rows).
  // What a decode step reads per row, one upload: tokens, positions, cache lengths and where each row's
  // caches live (KvView::slot), so that one captured step serves any placement of its rows.
  int32_t* step_in = nullptr;   // [5R]
  int32_t* tokens = nullptr;    // [R]
  int32_t* pos = nullptr;       // [R] position of the next token (device: a captured step reads it)
  int32_t* len = nullptr;       // [R] cache length after the next token (pos + 1)
  int32_t* seq_slot = nullptr;  // [R] self-attention cache slot of each row
  int32_t* win_slot = nullptr;  // [R] cross-attention K/V (window) slot of each row
  __half* dx = nullptr;         // [R, d]
  __half* dh = nullptr;         // [R, d]
  __half* da_ = nullptr;        // [R, d] attention output
  __half* dqkv = nullptr;       // [R, 3d]
  __half* dy = nullptr;         // [R, d] the cross-attention queries; rows gathered for the logits
  __half* df = nullptr;         // [R, 4d]
  float* dlogits = nullptr;     // [R, n_vocab]
  int32_t* next = nullptr;      // [R]
  float* next_lp = nullptr;     // [R]
  // The step's token queries (step_groups with queries): one upload of the rows' queries and their forbidden
  // ranges, answered into choice_ids / choice_lp.
  kc::TokenQueryRow* queries = nullptr;  // [R]
  int2* ranges = nullptr;                // [R · kRangesPerRow] every row's ranges, back to back
  int32_t* choice_ids = nullptr;         // [R, kMaxTopTokens]
  float* choice_lp = nullptr;            // [R, kMaxTopTokens]
  void* attn_ws = nullptr;
  size_t attn_ws_bytes = 0;
  int length = 0;
  // CUDA graphs of one decode step, per batch size (the rows' slots are device data): the first step of a
  // size runs eagerly (it creates the cuBLASLt plans), the second captures, later ones replay.
  bool use_graphs = true;
  std::map<int, int> eager_steps;
  std::map<int, cudaGraphExec_t> graphs;

  ~Impl() {
    for (auto& [key, g] : graphs) {
      if (g) cudaGraphExecDestroy(g);
    }
    if (stream) cudaStreamDestroy(stream);
  }

  // Storage of each block linear weight (GpuWeights, group): fp16 unless the source is quantised.
  using FormatOf = std::function<std::pair<GpuWeights, int>(const std::string& name, int64_t out, int64_t in)>;

  // Lays the weights out in the weight arena. `fill_half(dst, count, name)` / `fill_float(dst, count, name)`
  // upload one tensor; `fill_codes(dst, bytes, name)` the codes of a quantised weight ("<layer>.weight") and
  // fill_float its scales ("<layer>.weight_scale"). Also sets max_dequant.
  template <class FH, class FF, class FC>
  void layout_weights(const FormatOf& format_of, FH&& fill_half, FF&& fill_float, FC&& fill_codes) {
    const int64_t da = d.n_audio_state, dt = d.n_text_state;
    enc.clear(), dec.clear();
    max_dequant = 0;
    auto bias = [&](DLinear& l, const std::string& name) {
      l.b = weights.take<__half>(size_t(l.out));
      fill_half(l.b, size_t(l.out), name + ".bias");
    };
    auto conv = [&](const std::string& name, int64_t o, int64_t i) {
      DLinear l;
      l.out = o, l.in = i;
      __half* w = weights.take<__half>(size_t(o * i));
      fill_half(w, size_t(o * i), name + ".weight");
      l.w16 = w;
      l.view.data = w;
      bias(l, name);
      return l;
    };
    auto lin = [&](const std::string& name, int64_t o, int64_t i) {
      DLinear l;
      l.out = o, l.in = i;
      const auto [format, group] = format_of(name, o, i);
      if (format == GpuWeights::kF16) {
        __half* w = weights.take<__half>(size_t(o * i));
        fill_half(w, size_t(o * i), name + ".weight");
        l.w16 = w;
        l.view.data = w;
      } else {
        const bool int8 = format == GpuWeights::kInt8;
        const size_t code_bytes = int8 ? size_t(o * i) : size_t(o * i) / 2;
        const size_t n_scales = int8 ? size_t(o) : size_t(o * (i / group));
        char* codes = weights.take<char>(code_bytes);
        fill_codes(codes, code_bytes, name + ".weight");
        float* scales = weights.take<float>(n_scales);
        fill_float(scales, n_scales, name + ".weight_scale");
        l.view.type = int8 ? kc::WeightType::kI8 : kc::WeightType::kI4;
        l.view.data = codes;
        l.view.scales = scales;
        l.view.group = int8 ? 0 : group;
        max_dequant = std::max<size_t>(max_dequant, size_t(o * i));
      }
      bias(l, name);
      return l;
    };
    auto norm = [&](const std::string& name, int64_t c) {
      DNorm n;
      n.gamma = weights.take<float>(size_t(c));
      n.beta = weights.take<float>(size_t(c));
      fill_float(n.gamma, size_t(c), name + ".weight");
      fill_float(n.beta, size_t(c), name + ".bias");
      return n;
    };
    conv1 = conv("encoder.conv1", da, d.n_mels * 3);
    conv2 = conv("encoder.conv2", da, da * 3);
    enc_pos = weights.take<__half>(size_t(d.n_audio_ctx) * da);
    fill_half(enc_pos, size_t(d.n_audio_ctx) * da, "encoder.positional_embedding");
    for (int i = 0; i < d.n_audio_layer; ++i) {
      DBlock b;
      b.attn_ln = norm(names::block("encoder", i, "attn_ln"), da);
      b.mlp_ln = norm(names::block("encoder", i, "mlp_ln"), da);
      b.qkv = lin(names::block("encoder", i, "attn.qkv"), 3 * da, da);
      b.attn_out = lin(names::block("encoder", i, "attn.out"), da, da);
      b.fc1 = lin(names::block("encoder", i, "mlp.fc1"), 4 * da, da);
      b.fc2 = lin(names::block("encoder", i, "mlp.fc2"), da, 4 * da);
      enc.push_back(b);
    }
    ln_post = norm("encoder.ln_post", da);
    tok_emb = weights.take<__half>(size_t(d.n_vocab) * dt);
    fill_half(tok_emb, size_t(d.n_vocab) * dt, "decoder.token_embedding.weight");
    dec_pos = weights.take<__half>(size_t(d.n_text_ctx) * dt);
    fill_half(dec_pos, size_t(d.n_text_ctx) * dt, "decoder.positional_embedding");
    for (int i = 0; i < d.n_text_layer; ++i) {
      DBlock b;
      b.attn_ln = norm(names::block("decoder", i, "attn_ln"), dt);
      b.cross_ln = norm(names::block("decoder", i, "cross_attn_ln"), dt);
      b.mlp_ln = norm(names::block("decoder", i, "mlp_ln"), dt);
      b.qkv = lin(names::block("decoder", i, "attn.qkv"), 3 * dt, dt);
      b.attn_out = lin(names::block("decoder", i, "attn.out"), dt, dt);
      b.cross_q = lin(names::block("decoder", i, "cross_attn.query"), dt, dt);
      b.cross_kv = lin(names::block("decoder", i, "cross_attn.kv"), 2 * dt, da);
      b.cross_out = lin(names::block("decoder", i, "cross_attn.out"), dt, dt);
      b.fc1 = lin(names::block("decoder", i, "mlp.fc1"), 4 * dt, dt);
      b.fc2 = lin(names::block("decoder", i, "mlp.fc2"), dt, 4 * dt);
      for (DLinear* l : {&b.qkv, &b.cross_q, &b.fc1}) {
        l->w_gamma = weights.take<float>(size_t(l->out));
        l->w_beta = weights.take<float>(size_t(l->out));
      }
      dec.push_back(b);
    }
    dec_ln = norm("decoder.ln", dt);
    logits_w_gamma = weights.take<float>(size_t(d.n_vocab));
    logits_w_beta = weights.take<float>(size_t(d.n_vocab));
  }

  // The constants of the decoder's folded pre-norms (DLinear::w_gamma), from the uploaded weights.
  void fold_decoder_norms() {
    for (const DBlock& b : dec) {
      const std::pair<const DNorm*, const DLinear*> pairs[] = {
          {&b.attn_ln, &b.qkv}, {&b.cross_ln, &b.cross_q}, {&b.mlp_ln, &b.fc1}};
      for (const auto& [ln, l] : pairs) {
        CK(kc::fold_norm(l->view, ln->gamma, ln->beta, l->w_gamma, l->w_beta, l->out, l->in, stream));
      }
    }
    CK(kc::fold_norm(kc::WeightView{kc::WeightType::kF16, tok_emb, nullptr, 0}, dec_ln.gamma, dec_ln.beta,
                     logits_w_gamma, logits_w_beta, d.n_vocab, d.n_text_state, stream));
  }

  // y [m, out] = act(x [m, in] · Wᵀ + b) for one linear layer: the GEMV kernels for a decode step's few
  // rows, cuBLASLt for many (a quantised weight is dequantised into `deq` first).
  // `append`: the K/V columns of y also go to a cache (kc::KvAppend), on the GEMV path only.
  // `gelu_form`: cuBLASLt's GELU epilogue (the encoder's set_encoder_gelu); the GEMV's GELU is always erf.
  void apply(const DLinear& l, const __half* x, __half* y, int64_t m, bool gelu, const kc::KvAppend* append = nullptr,
             kc::Epilogue gelu_form = kc::Epilogue::kBiasGeluErf) {
    if (use_gemv && m <= gemv_rows(l.view.type)) {
      CK(kc::gemv(x, l.view, l.b, nullptr, y, m, l.out, l.in, gelu, stream, {}, append));
      return;
    }
    CK(kc::linear(gemm, x, half_weight(l), l.b, y, m, l.out, l.in, gelu ? gelu_form : kc::Epilogue::kBias, stream));
  }

  // y [m, out] += x [m, in] · Wᵀ + b on cuBLASLt, the add in its epilogue (a quantised weight is dequantised into
  // `deq` first).
  void accumulate(const DLinear& l, const __half* x, __half* y, int64_t m) {
    CK(kc::linear(gemm, x, l.in, half_weight(l), l.b, y, l.out, m, l.out, l.in, kc::Epilogue::kBias, stream, true));
  }
  // The layer's fp16 weight for cuBLASLt: its own, or a quantised one dequantised into `deq`.
  const __half* half_weight(const DLinear& l) {
    if (l.w16) return l.w16;
    CK(kc::dequantize_weight(l.view, deq, l.out, l.in, stream));
    return deq;
  }

  // The decoder's pre-norm sub-layers over m rows of the residual stream dx. Each residual add runs in the
  // epilogue of the layer that produces it (the GEMV's with few rows, cuBLASLt's with many), and each norm is a
  // layer_norm kernel into dh or folded into the GEMV that consumes it (norm_folded).
  bool fused(int64_t m) const {
    if (!use_gemv) return false;
    for (const DBlock& b : dec) {
      for (const DLinear* l : {&b.qkv, &b.attn_out, &b.cross_q, &b.cross_out, &b.fc1, &b.fc2}) {
        if (m > gemv_rows(l->view.type)) return false;
      }
    }
    return true;
  }
  // The most rows a linear layer over weights of type t runs on the GEMV kernels: for fp16 weights 64 where the
  // Hopper (wgmma) kernel takes 9..64 rows, else 8, cuBLASLt being faster beyond; up to
  // GpuWhisper::kQuantizedGemvMaxRows for int8 / int4, where the GEMV reads the weights as stored instead of
  // dequantising them for cuBLASLt first (docs/cuda.md has the measurements).
  int64_t gemv_rows(kc::WeightType t) const {
    if (gemv_max_rows > 0) return gemv_max_rows;
    if (t != kc::WeightType::kF16) return GpuWhisper::kQuantizedGemvMaxRows;
    return kc::gemv_half_rows_on_wgmma() ? kc::kGemvMaxGroupedRows : kc::kGemvMaxRows;
  }
  // Whether the norm before a GEMV of m rows over weight w is folded into it (set_norm_placement).
  bool norm_folded(const kc::WeightView& w, int64_t m) const {
    using P = GpuWhisper::NormPlacement;
    if (!fused(m) || norms == P::kSeparate) return false;
    return norms == P::kFolded || (w.type == kc::WeightType::kF16 && m <= GpuWhisper::kAutoFoldMaxRows);
  }

  // dx += a [m, in] · Wᵀ + b.
  void residual_apply(const DLinear& l, const __half* a, int64_t m) {
    if (fused(m)) {
      CK(kc::gemv(a, l.view, l.b, dx, dx, m, l.out, l.in, false, stream));
    } else {
      accumulate(l, a, dx, m);
    }
  }
  // y [m, out] = act(ln(dx) · Wᵀ + b).
  void norm_apply(const DNorm& ln, const DLinear& l, __half* y, int64_t m, bool gelu,
                  const kc::KvAppend* append = nullptr) {
    if (norm_folded(l.view, m)) {
      CK(kc::gemv(dx, l.view, l.b, nullptr, y, m, l.out, l.in, gelu, stream,
                  kc::RowNorm{ln.gamma, l.w_gamma, l.w_beta, 1e-5f}, append));
    } else {
      normalize(ln, m);
      apply(l, dh, y, m, gelu, append);
    }
  }
  // dh [m, d] = ln(dx).
  void normalize(const DNorm& ln, int64_t m) {
    if (skip & GpuWhisper::kStepNorms) return;
    CK(kc::layer_norm(dx, ln.gamma, ln.beta, dh, m, d.n_text_state, 1e-5f, stream));
  }
  // logits [m, n_vocab] fp32 = dec_ln(dx) · token_embeddingᵀ.
  void norm_logits(float* logits, int64_t m) {
    const kc::WeightView w{kc::WeightType::kF16, tok_emb, nullptr, 0};
    if (norm_folded(w, m)) {
      CK(kc::gemv_f32_out(dx, w, logits, m, d.n_vocab, d.n_text_state, stream,
                          kc::RowNorm{dec_ln.gamma, logits_w_gamma, logits_w_beta, 1e-5f}));
    } else {
      normalize(dec_ln, m);
      project_logits(dh, logits, m);
    }
  }

  // logits [m, n_vocab] fp32 of the hidden rows x [m, d] (the output projection is the token embedding).
  void project_logits(const __half* x, float* logits, int64_t m) {
    const int64_t dt = d.n_text_state;
    if (use_gemv && m <= gemv_rows(kc::WeightType::kF16)) {
      CK(kc::gemv_f32_out(x, kc::WeightView{kc::WeightType::kF16, tok_emb, nullptr, 0}, logits, m, d.n_vocab, dt,
                          stream));
    } else {
      CK(kc::linear_f32_out(gemm, x, dt, tok_emb, nullptr, logits, d.n_vocab, m, d.n_vocab, dt, stream));
    }
  }

  // Samples of one 30 s window: a hop per mel frame.
  size_t window_samples() const { return size_t(2 * d.n_audio_ctx) * kc::kLogMelHop; }
  // The cuFFT plans and buffers of the log-mel, for inputs of one window (and padding up to a hop); made by
  // the first log-mel, so that programs without one do not pay for them.
  void init_log_mel() {
    if (mel_gpu.ready()) return;
    const std::vector<float> filters = core::mel_filters(d.n_mels);  // [n_mels, 201]
    kcheck(mel_gpu.init(d.n_mels, filters.data(), int64_t(window_samples()), kc::kLogMelDefaultPad),
           "DeviceLogMel::init");
  }

  void allocate_activations() {
    const size_t W = size_t(windows), S = size_t(sequences), R = size_t(rows), nc = size_t(d.n_audio_ctx);
    const size_t da = size_t(d.n_audio_state), dt = size_t(d.n_text_state), ctx = size_t(d.n_text_ctx);
    const size_t big_n = std::max(W * 2 * nc * da, W * nc * 4 * da);
    const size_t mid_n = std::max({W * 2 * nc * size_t(d.n_mels) * 3, W * nc * 3 * da});
    const size_t eb = size_t(kc::kv_element_bytes(kv_type)), h2 = 2 * size_t(d.n_text_head);
    const bool dynamic = kv_type == kc::KvType::kI8Dynamic;
    const size_t cross_scale_n = dynamic ? W * nc * h2 : h2, self_scale_n = dynamic ? S * ctx * h2 : h2;
    kv_layer_pitch = align_up(S * ctx * 2 * dt * eb);
    kv_scale_pitch = align_up(self_scale_n * 4);
    size_t n = align_up(W * window_samples() * 4) + align_up(W * d.n_mels * 2 * nc * 4) + align_up(big_n * 2) +
               align_up(mid_n * 2) + 4 * align_up(W * nc * da * 2);
    n += size_t(d.n_text_layer) *
         (align_up(W * nc * 2 * dt * eb) + kv_layer_pitch + align_up(cross_scale_n * 4) + kv_scale_pitch);
    n += align_up(5 * R * 4) + 4 * align_up(R * dt * 2) + align_up(R * 3 * dt * 2) + align_up(R * 4 * dt * 2) +
         align_up(R * size_t(d.n_vocab) * 4) + 2 * align_up(R * 4);
    n += align_up(R * sizeof(kc::TokenQueryRow)) + align_up(R * kRangesPerRow * sizeof(int2)) +
         2 * align_up(R * kc::kMaxTopTokens * 4);
    // n_q up to kDecoderMaxQueries: a prompt over quantised caches runs in chunks of that many queries
    attn_ws_bytes = kc::decoder_attention_workspace_bytes(std::max(windows, sequences), kc::kDecoderMaxQueries,
                                                          std::max(d.n_text_head, 1), std::max<int64_t>(nc, ctx));
    n += align_up(attn_ws_bytes) + 4096;
    acts.reserve(n);
    audio = acts.take<float>(W * window_samples());
    // silence until someone uploads audio (a benchmark of a real model runs log_mel on it as it is)
    cuda_check(cudaMemset(audio, 0, W * window_samples() * 4), "cudaMemset");
    mel = acts.take<float>(W * d.n_mels * 2 * nc);
    big = acts.take<__half>(big_n);
    mid = acts.take<__half>(mid_n);
    x = acts.take<__half>(W * nc * da);
    h = acts.take<__half>(W * nc * da);
    a = acts.take<__half>(W * nc * da);
    features = acts.take<__half>(W * nc * da);
    for (int l = 0; l < d.n_text_layer; ++l) {
      ckv.push_back(acts.take<char>(W * nc * 2 * dt * eb));
      ckv_scales.push_back(acts.take<float>(cross_scale_n));
    }
    char* kv_block = acts.take<char>(kv_layer_pitch * size_t(d.n_text_layer));
    char* scale_block = acts.take<char>(kv_scale_pitch * size_t(d.n_text_layer));
    for (int l = 0; l < d.n_text_layer; ++l) {
      kv.push_back(kv_block + l * kv_layer_pitch);
      kv_scales.push_back(reinterpret_cast<float*>(scale_block + l * kv_scale_pitch));
      if (!dynamic) {
        const std::vector<float> one(h2, 1.0f);
        const std::vector<float>& s = self_scale_init.empty() ? one : self_scale_init[size_t(l)];
        const std::vector<float>& c = cross_scale_init.empty() ? one : cross_scale_init[size_t(l)];
        cuda_check(cudaMemcpy(kv_scales.back(), s.data(), h2 * 4, cudaMemcpyHostToDevice), "upload K/V scales");
        cuda_check(cudaMemcpy(ckv_scales[size_t(l)], c.data(), h2 * 4, cudaMemcpyHostToDevice), "upload K/V scales");
      }
    }
    step_in = acts.take<int32_t>(5 * R);
    tokens = step_in;
    pos = step_in + R;
    len = step_in + 2 * R;
    seq_slot = step_in + 3 * R;
    win_slot = step_in + 4 * R;
    dx = acts.take<__half>(R * dt);
    dh = acts.take<__half>(R * dt);
    da_ = acts.take<__half>(R * dt);
    dy = acts.take<__half>(R * dt);
    dqkv = acts.take<__half>(R * 3 * dt);
    df = acts.take<__half>(R * 4 * dt);
    dlogits = acts.take<float>(R * size_t(d.n_vocab));
    next = acts.take<int32_t>(R);
    next_lp = acts.take<float>(R);
    queries = acts.take<kc::TokenQueryRow>(R);
    ranges = acts.take<int2>(R * kRangesPerRow);
    choice_ids = acts.take<int32_t>(R * kc::kMaxTopTokens);
    choice_lp = acts.take<float>(R * kc::kMaxTopTokens);
    attn_ws = acts.take<char>(attn_ws_bytes);
    CK(kc::decoder_attention_workspace_init(attn_ws, attn_ws_bytes, stream));
    cuda_check(cudaMemset(next, 0, R * 4), "cudaMemset");
    reset(std::min(windows, sequences));
  }

  // The benchmark form: B empty sequences, sequence b in slot b over window b.
  void reset(int B) {
    std::vector<int32_t> zero(size_t(B), 0), one(size_t(B), 1), own(size_t(B), 0);
    for (int b = 0; b < B; ++b) own[size_t(b)] = b;
    cuda_check(cudaMemcpyAsync(pos, zero.data(), size_t(B) * 4, cudaMemcpyHostToDevice, stream), "reset");
    cuda_check(cudaMemcpyAsync(len, one.data(), size_t(B) * 4, cudaMemcpyHostToDevice, stream), "reset");
    cuda_check(cudaMemcpyAsync(seq_slot, own.data(), size_t(B) * 4, cudaMemcpyHostToDevice, stream), "reset");
    cuda_check(cudaMemcpyAsync(win_slot, own.data(), size_t(B) * 4, cudaMemcpyHostToDevice, stream), "reset");
    cuda_check(cudaStreamSynchronize(stream), "reset");
    length = 0;
  }
  // The benchmark form's shared length: one more token in every sequence.
  void advance() {
    if (length >= d.n_text_ctx) throw std::runtime_error("GpuWhisper: decoder context is full");
    ++length;
  }

  void encode(int B) {
    const int64_t nc = d.n_audio_ctx, dm = d.n_audio_state, frames = 2 * nc, rows = int64_t(B) * nc;
    // conv1 (k 3, stride 1) + GELU: im2col over the fp32 mel, one GEMM.
    CK(kc::im2col_k3_mel(mel, mid, B, frames, d.n_mels, frames, 1, stream));
    CK(kc::linear(gemm, mid, conv1.w16, conv1.b, big, int64_t(B) * frames, dm, d.n_mels * 3, encoder_gelu, stream));
    // conv2 (k 3, stride 2) + GELU, then the positional embedding.
    CK(kc::im2col_k3(big, mid, B, frames, dm, nc, 2, stream));
    CK(kc::linear(gemm, mid, conv2.w16, conv2.b, x, rows, dm, 3 * dm, encoder_gelu, stream));
    CK(kc::add_rows(x, enc_pos, B, nc, dm, stream));
    CK(kc::layer_norm(x, enc[0].attn_ln.gamma, enc[0].attn_ln.beta, h, rows, dm, 1e-5f, stream));
    for (size_t l = 0; l < enc.size(); ++l) {
      const DBlock& b = enc[l];
      apply(b.qkv, h, mid, rows, false);
      CK(kc::attention(mid, 3 * dm, nc * 3 * dm, mid + dm, 3 * dm, nc * 3 * dm, mid + 2 * dm, 3 * dm, nc * 3 * dm, a,
                       dm, nc * dm, B, nc, nc, d.n_audio_head, dm / d.n_audio_head, false, 0, stream));
      // The residual adds run in cuBLASLt's epilogue (x += …), the norms are plain passes: against a separate
      // output and add_layer_norm, the batch-32 encoder of large-v2 148.5 → 141.8 ms, batch 1 5.44 → 5.18 ms (H200).
      accumulate(b.attn_out, a, x, rows);
      CK(kc::layer_norm(x, b.mlp_ln.gamma, b.mlp_ln.beta, a, rows, dm, 1e-5f, stream));
      apply(b.fc1, a, big, rows, true, nullptr, encoder_gelu);
      accumulate(b.fc2, big, x, rows);
      const DNorm& next_ln = l + 1 < enc.size() ? enc[l + 1].attn_ln : ln_post;
      CK(kc::layer_norm(x, next_ln.gamma, next_ln.beta, l + 1 < enc.size() ? h : features, rows, dm, 1e-5f, stream));
    }
  }

  // Cross-attention K/V of the B windows of `features` from window `first` on into window slots
  // [window, window + B).
  void cross(int B, int window = 0, int first = 0) {
    const int64_t rows = int64_t(B) * d.n_audio_ctx;
    const int64_t nc = d.n_audio_ctx, dt = d.n_text_state;
    const __half* in = features + size_t(first) * size_t(nc) * size_t(d.n_audio_state);
    for (size_t l = 0; l < dec.size(); ++l) {
      const kc::KvView v = cross_view(l, window, false);
      if (kv_type == kc::KvType::kF16) {
        apply(dec[l].cross_kv, in, static_cast<__half*>(v.data), rows, false);
      } else {  // the projection in fp16 (into `big`, free after the encoder), then quantised
        apply(dec[l].cross_kv, in, big, rows, false);
        CK(kc::kv_quantize(big, 2 * dt, nc * 2 * dt, v, nc, B, d.n_text_head, dt / d.n_text_head, stream));
      }
    }
  }

  // One decoder step over `tokens` (device [B]): eager, captured or replayed (see `graphs`).
  void step(int B) {
    int& eager = eager_steps[B];
    if (!use_graphs || eager == 0) {
      step_body(B);
      ++eager;
    } else {
      cudaGraphExec_t& exec = graphs[B];
      if (!exec) {
        cudaGraph_t g = nullptr;
        cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
        try {
          step_body(B);
        } catch (...) {
          cudaStreamEndCapture(stream, &g);
          if (g) cudaGraphDestroy(g);
          throw;
        }
        cuda_check(cudaStreamEndCapture(stream, &g), "end capture");
        const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
        cuda_check(e, "cudaGraphInstantiate");
      }
      cuda_check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    }
  }

  // Layer l's self-attention cache from sequence slot `seq` on, starting at row `row`.
  kc::KvView self_view(size_t l, int seq, int64_t row = 0) const {
    const int64_t ctx = d.n_text_ctx, ld = 2 * int64_t(d.n_text_state), h2 = 2 * int64_t(d.n_text_head);
    const int64_t first = int64_t(seq) * ctx + row;  // rows from the start of the layer's block
    kc::KvView v;
    v.type = kv_type;
    v.data = kv[l] + size_t(first * ld) * size_t(kc::kv_element_bytes(kv_type));
    v.ld = ld;
    v.batch_stride = ctx * ld;
    v.scales = kv_scales[l];
    if (kv_type == kc::KvType::kI8Dynamic) {
      v.scales += first * h2;
      v.scale_ld = h2;
      v.scale_batch_stride = ctx * h2;
    }
    return v;
  }
  // Layer l's cross-attention K/V from window slot `window` on; `shared`: one window for every sequence.
  kc::KvView cross_view(size_t l, int window, bool shared) const {
    const int64_t nc = d.n_audio_ctx, ld = 2 * int64_t(d.n_text_state), h2 = 2 * int64_t(d.n_text_head);
    kc::KvView v;
    v.type = kv_type;
    v.data = ckv[l] + size_t(int64_t(window) * nc * ld) * size_t(kc::kv_element_bytes(kv_type));
    v.ld = ld;
    v.batch_stride = shared ? 0 : nc * ld;
    v.scales = ckv_scales[l];
    if (kv_type == kc::KvType::kI8Dynamic) {
      v.scales += int64_t(window) * nc * h2;
      v.scale_ld = h2;
      v.scale_batch_stride = shared ? 0 : nc * h2;
    }
    return v;
  }

  // One decode step of B rows; row b's caches are sequence slot seq_slot[b] and window slot win_slot[b].
  void step_body(int B) {
    const int64_t dt = d.n_text_state, ctx = d.n_text_ctx, nc = d.n_audio_ctx, hd = dt / d.n_text_head;
    CK(kc::embed_tokens(tokens, pos, tok_emb, dec_pos, dx, B, dt, d.n_vocab, ctx, stream));
    const bool linears = !(skip & GpuWhisper::kStepAttentionLinears);
    for (size_t l = 0; l < dec.size(); ++l) {
      const DBlock& b = dec[l];
      kc::KvView cache = self_view(l, 0), cross = cross_view(l, 0, false);
      cache.slot = seq_slot;
      cross.slot = win_slot;
      // the attention may load the K/V rows that the kernel before it does not write before waiting for it
      cache.ready = kc::KvView::Ready::kAllButNew;
      cross.ready = kc::KvView::Ready::kAll;
      // causal self-attention: append K/V of the new token at row pos[b] of each sequence's cache, in the QKV
      // GEMV's epilogue when it can (one launch fewer a layer), else by its own kernel
      const bool append_in_gemv = fuse_kv_append && fused(B) && kv_type != kc::KvType::kI8Dynamic;
      const kc::KvAppend append{cache, pos, ctx, dt, 2 * dt};
      if (linears) norm_apply(b.attn_ln, b.qkv, dqkv, B, false, append_in_gemv ? &append : nullptr);
      if (!append_in_gemv && !(skip & GpuWhisper::kStepAppend))
        CK(kc::kv_append_quantized(dqkv + dt, 3 * dt, cache, pos, ctx, B, d.n_text_head, hd, stream));
      if (!(skip & GpuWhisper::kStepSelfAttention)) {
        CK(kc::decoder_attention_quantized(dqkv, 3 * dt, 3 * dt, cache, len, ctx, da_, dt, dt, B, 1, d.n_text_head, hd,
                                           true, attn_ws, attn_ws_bytes, stream));
      }
      if (linears) residual_apply(b.attn_out, da_, B);
      // cross-attention over the window's audio K/V
      if (linears) norm_apply(b.cross_ln, b.cross_q, dy, B, false);
      if (!(skip & GpuWhisper::kStepCrossAttention)) {
        CK(kc::decoder_attention_quantized(dy, dt, dt, cross, nullptr, nc, da_, dt, dt, B, 1, d.n_text_head, hd, false,
                                           attn_ws, attn_ws_bytes, stream));
      }
      if (linears) residual_apply(b.cross_out, da_, B);
      if (!(skip & GpuWhisper::kStepMlp)) feed_forward(b, B);
    }
    if (!(skip & GpuWhisper::kStepLogits)) {
      norm_logits(dlogits, B);
      CK(kc::argmax(dlogits, B, d.n_vocab, d.n_vocab, next, next_lp, stream));
    }
    CK(kc::add_scalar_i32(pos, len, B, 1, stream));
  }

  // The decoder's feed-forward sub-block over n rows of the residual stream: dx += fc2(gelu(fc1(mlp_ln(dx)))).
  void feed_forward(const DBlock& b, int64_t n) {
    norm_apply(b.mlp_ln, b.fc1, df, n, true);
    residual_apply(b.fc2, df, n);
  }

  // n tokens of sequence `seq` at positions [start, start + n), over window `window`, in one pass (a prompt):
  // the causal self-attention sees the cache rows [0, start) written before and the new rows. Leaves the
  // final hidden states in dh [n, d].
  //
  // fp16 caches use the fused flash attention; quantised ones the decoder attention in chunks of up to
  // kDecoderMaxQueries queries, whose cache lengths the caller left in len[0, chunks).
  void prefill(int window, int seq, int n, int start) {
    const int64_t dt = d.n_text_state, ctx = d.n_text_ctx, nc = d.n_audio_ctx, hd = dt / d.n_text_head;
    const int64_t q_chunk = kc::kDecoderMaxQueries;
    CK(kc::embed_tokens(tokens, pos, tok_emb, dec_pos, dx, n, dt, d.n_vocab, ctx, stream));
    for (size_t l = 0; l < dec.size(); ++l) {
      const DBlock& b = dec[l];
      const kc::KvView cache = self_view(l, seq), cross = cross_view(l, window, true);
      norm_apply(b.attn_ln, b.qkv, dqkv, n, false);
      CK(kc::kv_quantize(dqkv + dt, 3 * dt, 0, self_view(l, seq, start), n, 1, d.n_text_head, hd, stream));
      if (kv_type == kc::KvType::kF16) {
        const auto* k = static_cast<const __half*>(cache.data);
        CK(kc::attention(dqkv, 3 * dt, 0, k, 2 * dt, 0, k + dt, 2 * dt, 0, da_, dt, 0, 1, n, start + n, d.n_text_head,
                         hd, true, start, stream));
      } else {
        for (int64_t c = 0; c * q_chunk < n; ++c) {
          const int64_t q0 = c * q_chunk, nq = std::min<int64_t>(q_chunk, n - q0);
          CK(kc::decoder_attention_quantized(dqkv + q0 * 3 * dt, 3 * dt, 0, cache, len + c, ctx, da_ + q0 * dt, dt, 0,
                                             1, nq, d.n_text_head, hd, true, attn_ws, attn_ws_bytes, stream));
        }
      }
      residual_apply(b.attn_out, da_, n);
      norm_apply(b.cross_ln, b.cross_q, dy, n, false);
      if (kv_type == kc::KvType::kF16) {
        const auto* k = static_cast<const __half*>(cross.data);
        CK(kc::attention(dy, dt, 0, k, 2 * dt, 0, k + dt, 2 * dt, 0, da_, dt, 0, 1, n, nc, d.n_text_head, hd, false, 0,
                         stream));
      } else {
        for (int64_t q0 = 0; q0 < n; q0 += q_chunk) {
          const int64_t nq = std::min<int64_t>(q_chunk, n - q0);
          CK(kc::decoder_attention_quantized(dy + q0 * dt, dt, 0, cross, nullptr, nc, da_ + q0 * dt, dt, 0, 1, nq,
                                             d.n_text_head, hd, false, attn_ws, attn_ws_bytes, stream));
        }
      }
      residual_apply(b.cross_out, da_, n);
      feed_forward(b, n);
    }
    normalize(dec_ln, n);
  }
};

struct PinnedBuffers::Pool {
  std::mutex mu;
  std::multimap<size_t, float*> free;  // by size in floats
  ~Pool() {
    for (auto& [size, p] : free) cudaFreeHost(p);
  }
};

PinnedBuffers::PinnedBuffers() : pool_(std::make_shared<Pool>()) {}

std::shared_ptr<float> PinnedBuffers::take(size_t floats) {
  size_t size = 1;
  while (size < floats) size *= 2;
  float* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(pool_->mu);
    const auto it = pool_->free.lower_bound(size);
    if (it != pool_->free.end()) {
      size = it->first;
      p = it->second;
      pool_->free.erase(it);
    }
  }
  if (!p) {
    void* raw = nullptr;
    if (cudaMallocHost(&raw, size * sizeof(float)) != cudaSuccess) {
      cudaGetLastError();  // not sticky; ordinary memory will do
      return std::shared_ptr<float>(new float[floats], std::default_delete<float[]>());
    }
    p = static_cast<float*>(raw);
  }
  return std::shared_ptr<float>(p, [pool = pool_, size](float* q) {
    std::lock_guard<std::mutex> lock(pool->mu);
    pool->free.emplace(size, q);
  });
}

bool gpu_available() {
  if (!kc::device_available()) return false;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 8;  // the tensor-core kernels' minimum (and the architectures CMake builds for)
}

GpuWhisper::GpuWhisper(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuWhisper::~GpuWhisper() = default;

namespace {

std::unique_ptr<GpuWhisper::Impl> make_impl(const GpuDims& dims, GpuWhisper::Capacity cap) {
  if (!kc::device_available()) throw std::runtime_error("no CUDA device");
  if (!gpu_available()) throw std::runtime_error("the CUDA device is older than compute capability 8.0 (Ampere)");
  if (cap.windows < 1 || cap.sequences < 1) {
    throw std::invalid_argument("GpuWhisper: at least one window and one sequence slot are needed");
  }
  if (dims.n_audio_state / dims.n_audio_head != 64 || dims.n_text_state / dims.n_text_head != 64) {
    throw std::invalid_argument("GpuWhisper: the fused attention kernels need head_dim 64");
  }
  auto impl = std::make_unique<GpuWhisper::Impl>();
  impl->d = dims;
  impl->max_batch = std::min(cap.windows, cap.sequences);
  impl->windows = cap.windows;
  impl->sequences = cap.sequences;
  impl->rows = std::max(cap.sequences, dims.n_text_ctx);
  cuda_check(cudaGetDevice(&impl->device), "cudaGetDevice");
  size_t free_b = 0, total_b = 0;
  cuda_check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  impl->used_before = total_b - free_b;
  cuda_check(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  kcheck(impl->gemm.init(), "GemmContext::init");
  return impl;
}

// The cache storage and, for the static types, the scales: amax_of(name) returns the calibrated maxima of a
// "decoder.blocks.N.{attn,cross_attn}.kv_amax" tensor ([2·n_head]: K heads, V heads), or nothing.
void set_kv_cache(GpuWhisper::Impl& impl, GpuKvCache kv,
                  const std::function<std::vector<float>(const std::string&)>& amax_of) {
  static constexpr kc::KvType kTypes[] = {kc::KvType::kF16, kc::KvType::kI8Static, kc::KvType::kI8Dynamic,
                                          kc::KvType::kFp8};
  impl.kv_type = kTypes[static_cast<int>(kv)];
  if (kv != GpuKvCache::kInt8 && kv != GpuKvCache::kFp8) return;
  const float top = kv == GpuKvCache::kInt8 ? 127.0f : 448.0f;  // the largest code
  for (int l = 0; l < impl.d.n_text_layer; ++l) {
    for (const bool cross : {false, true}) {
      std::vector<float> amax = amax_of(names::kv_amax(l, cross));
      if (amax.empty()) {
        if (kv == GpuKvCache::kInt8) {
          throw std::invalid_argument(
              "the int8 KV cache needs calibrated scales: run `wisp calibrate` on this model "
              "(or use --kv-cache int8-dynamic)");
        }
        amax.assign(2 * size_t(impl.d.n_text_head), top);  // FP8 without calibration: scale 1
      }
      for (float& a : amax) a /= top;
      (cross ? impl.cross_scale_init : impl.self_scale_init).push_back(std::move(amax));
    }
  }
}

// Sizes the weight arena with a counting pass of the layout, reserves it, fills it, and takes the
// dequantisation scratch.
template <class FH, class FF, class FC>
void upload_weights(GpuWhisper::Impl& impl, const GpuWhisper::Impl::FormatOf& format_of, FH&& fill_half,
                    FF&& fill_float, FC&& fill_codes) {
  auto skip = [](auto*, size_t, const std::string&) {};
  impl.layout_weights(format_of, skip, skip, skip);
  impl.weights.reserve(impl.weights.used + align_up(impl.max_dequant * 2));
  impl.layout_weights(format_of, fill_half, fill_float, fill_codes);
  if (impl.max_dequant > 0) impl.deq = impl.weights.take<__half>(impl.max_dequant);
  impl.fold_decoder_norms();
}

std::vector<uint16_t> to_half_host(const core::Tensor& t, size_t count, const std::string& name) {
  if (!t.defined() || size_t(t.numel()) != count) {
    throw std::runtime_error("GpuWhisper: tensor " + name + " has " + std::to_string(t.defined() ? t.numel() : 0) +
                             " elements, expected " + std::to_string(count));
  }
  std::vector<uint16_t> out(count);
  if (t.dtype() == core::DType::kF16) {
    std::memcpy(out.data(), t.raw(), count * 2);
  } else if (t.dtype() == core::DType::kF32) {
    const float* p = t.data<float>();
    for (size_t i = 0; i < count; ++i) out[i] = core::float_to_half(p[i]);
  } else {
    throw std::runtime_error("GpuWhisper: tensor " + name + " must be f16 or f32");
  }
  return out;
}

}  // namespace

std::unique_ptr<GpuWhisper> GpuWhisper::create(const GpuDims& dims, Capacity capacity, const TensorSource& source,
                                               GpuKvCache kv_cache) {
  auto impl = make_impl(dims, capacity);
  set_kv_cache(*impl, kv_cache, [&](const std::string& name) -> std::vector<float> {
    core::Tensor t;
    try {
      t = source(name);
    } catch (const std::exception&) {  // an uncalibrated file: no such tensor
      return {};
    }
    if (t.dtype() != core::DType::kF32 || t.numel() != 2 * dims.n_text_head) {
      throw std::runtime_error("GpuWhisper: " + name + " is " + t.describe());
    }
    return {t.data<float>(), t.data<float>() + t.numel()};
  });
  auto fill_half = [&](__half* dst, size_t count, const std::string& name) {
    const std::vector<uint16_t> h = to_half_host(source(name), count, name);
    cuda_check(cudaMemcpy(dst, h.data(), count * 2, cudaMemcpyHostToDevice), "upload weight");
  };
  auto fill_float = [&](float* dst, size_t count, const std::string& name) {
    const std::vector<uint16_t> h = to_half_host(source(name), count, name);  // norms: f32 of the f16 values
    std::vector<float> f(count);
    const core::Tensor t = source(name);
    if (t.dtype() == core::DType::kF32) {
      std::memcpy(f.data(), t.raw(), count * 4);
    } else {
      for (size_t i = 0; i < count; ++i) f[i] = core::half_to_float(h[i]);
    }
    cuda_check(cudaMemcpy(dst, f.data(), count * 4, cudaMemcpyHostToDevice), "upload norm");
  };
  auto fill_codes = [&](char* dst, size_t bytes, const std::string& name) {
    const core::Tensor t = source(name);
    if ((t.dtype() != core::DType::kI8 && t.dtype() != core::DType::kU8) || size_t(t.numel()) != bytes) {
      throw std::runtime_error("GpuWhisper: quantised tensor " + name + " is " + t.describe());
    }
    cuda_check(cudaMemcpy(dst, t.raw(), bytes, cudaMemcpyHostToDevice), "upload weight");
  };
  // A layer is quantised when the file stores int8 codes, or int4 codes (two per byte) with grouped scales.
  auto format_of = [&](const std::string& name, int64_t, int64_t in) -> std::pair<GpuWeights, int> {
    const core::DType t = source(name + ".weight").dtype();
    if (t == core::DType::kI8) return {GpuWeights::kInt8, 0};
    if (t != core::DType::kU8) return {GpuWeights::kF16, 0};
    const core::Tensor scales = source(name + ".weight_scale");
    if (scales.rank() != 2 || scales.dim(1) <= 0 || in % scales.dim(1) != 0) {
      throw std::runtime_error("GpuWhisper: " + name + ".weight_scale is " + scales.describe());
    }
    return {GpuWeights::kInt4, int(in / scales.dim(1))};
  };
  upload_weights(*impl, format_of, fill_half, fill_float, fill_codes);
  impl->allocate_activations();
  cuda_check(cudaDeviceSynchronize(), "create");
  return std::unique_ptr<GpuWhisper>(new GpuWhisper(std::move(impl)));
}

std::unique_ptr<GpuWhisper> GpuWhisper::create_random(const GpuDims& dims, int max_batch, uint64_t seed,
                                                      GpuWeights weights, int group, GpuKvCache kv_cache) {
  if (weights == GpuWeights::kInt4 && group != 64 && group != 128) {
    throw std::invalid_argument("GpuWhisper: the int4 group size must be 64 or 128");
  }
  auto impl = make_impl(dims, Capacity{max_batch, max_batch});
  // random activations stay within a few units: calibrate as if |K|, |V| <= 4
  set_kv_cache(*impl, kv_cache, [&](const std::string&) { return std::vector<float>(2 * dims.n_text_head, 4.0f); });
  // A pool of N(0, 0.02) halves, uploaded at rotating offsets (the values only need to be finite and small).
  constexpr size_t kPool = size_t{1} << 22;
  std::vector<uint16_t> pool(2 * kPool);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (auto& v : pool) v = core::float_to_half(nd(rng));
  size_t rot = 0;
  auto fill_half = [&](__half* dst, size_t count, const std::string&) {
    for (size_t done = 0; done < count;) {
      const size_t n = std::min(count - done, kPool);
      rot = (rot * 2654435761u + 12345u) % kPool;
      cuda_check(cudaMemcpy(dst + done, pool.data() + rot, n * 2, cudaMemcpyHostToDevice), "upload weight");
      done += n;
    }
  };
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  // norms: gamma in [0.8, 1.2], beta in [-0.1, 0.1] (not 1 and 0, so that the folded norms' constants W·γ and W·β
  // matter in tests); scales of random codes: values of about the fp16 weights' size
  std::uniform_real_distribution<float> spread(-1.0f, 1.0f);
  auto fill_float = [&](float* dst, size_t count, const std::string& name) {
    std::vector<float> f(count, weights == GpuWeights::kInt8 ? 3e-4f : 5e-3f);
    if (!ends_with(name, ".weight_scale")) {
      const bool gamma = ends_with(name, ".weight");
      for (float& v : f) v = gamma ? 1.0f + 0.2f * spread(rng) : 0.1f * spread(rng);
    }
    cuda_check(cudaMemcpy(dst, f.data(), count * 4, cudaMemcpyHostToDevice), "upload norm");
  };
  // random codes: the bytes of the random halves
  auto fill_codes = [&](char* dst, size_t bytes, const std::string& name) {
    fill_half(reinterpret_cast<__half*>(dst), bytes / 2, name);
  };
  auto format_of = [&](const std::string&, int64_t, int64_t) { return std::pair<GpuWeights, int>{weights, group}; };
  upload_weights(*impl, format_of, fill_half, fill_float, fill_codes);
  impl->allocate_activations();
  // Random audio (uniform, ±0.1) for log_mel(nullptr, B), and a random mel in [-1, 1] so a benchmark has
  // input without encode(mel) too.
  const size_t audio_n = size_t(max_batch) * impl->window_samples();
  std::vector<float> audio(audio_n);
  std::uniform_real_distribution<float> ua(-0.1f, 0.1f);
  for (auto& v : audio) v = ua(rng);
  cuda_check(cudaMemcpy(impl->audio, audio.data(), audio_n * 4, cudaMemcpyHostToDevice), "upload audio");
  const size_t mel_n = size_t(max_batch) * dims.n_mels * 2 * dims.n_audio_ctx;
  std::vector<float> mel(mel_n);
  std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
  for (auto& v : mel) v = ud(rng);
  cuda_check(cudaMemcpy(impl->mel, mel.data(), mel_n * 4, cudaMemcpyHostToDevice), "upload mel");
  cuda_check(cudaDeviceSynchronize(), "create_random");
  return std::unique_ptr<GpuWhisper>(new GpuWhisper(std::move(impl)));
}

const GpuDims& GpuWhisper::dims() const { return impl_->d; }
int GpuWhisper::max_batch() const { return impl_->max_batch; }
int GpuWhisper::cache_length() const { return impl_->length; }
size_t GpuWhisper::weight_bytes() const { return impl_->weights.used; }

std::string GpuWhisper::device_name() const {
  cudaDeviceProp p{};
  cuda_check(cudaGetDeviceProperties(&p, impl_->device), "cudaGetDeviceProperties");
  return p.name;
}

static void check_batch(const GpuWhisper::Impl& m, int batch) {
  if (batch < 1 || batch > m.max_batch) throw std::invalid_argument("GpuWhisper: batch out of range");
}

void GpuWhisper::log_mel(const float* samples, int batch) {
  check_batch(*impl_, batch);
  Impl& m = *impl_;
  const size_t n = m.window_samples(), per_mel = size_t(m.d.n_mels) * 2 * m.d.n_audio_ctx;
  m.init_log_mel();
  if (samples) {
    cuda_check(cudaMemcpyAsync(m.audio, samples, size_t(batch) * n * 4, cudaMemcpyHostToDevice, m.stream),
               "upload audio");
  }
  for (int b = 0; b < batch; ++b) {
    kcheck(m.mel_gpu.compute(m.audio + size_t(b) * n, int64_t(n), m.mel + size_t(b) * per_mel, m.stream, 0),
           "DeviceLogMel::compute");
  }
  if (samples) synchronize();
}

std::vector<float> GpuWhisper::log_mel_host(const float* samples, int64_t n) {
  Impl& m = *impl_;
  m.init_log_mel();
  const int64_t frames = kc::DeviceLogMel::n_frames(n, kc::kLogMelDefaultPad);
  if (n <= 0 || frames <= 0) throw std::invalid_argument("GpuWhisper: no audio for a log-mel");
  std::vector<float> out(size_t(m.d.n_mels) * size_t(frames));
  kcheck(m.mel_gpu.compute_host(samples, n, out.data(), m.stream, kc::kLogMelDefaultPad), "DeviceLogMel::compute_host");
  return out;
}

void GpuWhisper::encode(const float* mel, int batch) {
  check_batch(*impl_, batch);
  if (mel) {
    const size_t n = size_t(batch) * impl_->d.n_mels * 2 * impl_->d.n_audio_ctx;
    cuda_check(cudaMemcpyAsync(impl_->mel, mel, n * 4, cudaMemcpyHostToDevice, impl_->stream), "upload mel");
  }
  impl_->encode(batch);
  if (mel) synchronize();
}

void GpuWhisper::cross_kv(int batch) {
  check_batch(*impl_, batch);
  impl_->cross(batch);
}

void GpuWhisper::reset(int batch) {
  check_batch(*impl_, batch);
  impl_->reset(batch);
}

void GpuWhisper::set_cuda_graphs(bool on) { impl_->use_graphs = on; }
void GpuWhisper::set_gemv(bool on) { impl_->use_gemv = on; }
void GpuWhisper::set_gemv_max_rows(int rows) {
  impl_->gemv_max_rows = std::clamp(rows, 0, int(kc::kGemvMaxGroupedRows));
}
void GpuWhisper::set_programmatic_launch(bool on) { kc::set_programmatic_launch(on); }
void GpuWhisper::set_norm_placement(NormPlacement placement) { impl_->norms = placement; }
void GpuWhisper::set_fused_kv_append(bool on) { impl_->fuse_kv_append = on; }
void GpuWhisper::set_step_ablation(unsigned parts) { impl_->skip = parts; }
void GpuWhisper::set_gemv_fill(int percent) { kc::set_gemv_fill(percent); }
void GpuWhisper::set_gemv_wgmma(int max_cluster) { kc::set_gemv_wgmma(max_cluster); }
void GpuWhisper::set_attention_wgmma(bool on) { kc::set_attention_wgmma(on); }
void GpuWhisper::set_decoder_attention_mma(bool on) { kc::set_decoder_attention_mma(on); }
void GpuWhisper::set_gemm_autotune(bool on) { impl_->gemm.set_autotune(on); }
void GpuWhisper::set_encoder_gelu(EncoderGelu form) {
  impl_->encoder_gelu = form == EncoderGelu::kTanh ? kc::Epilogue::kBiasGeluTanh : kc::Epilogue::kBiasGeluErf;
}

std::vector<int> GpuWhisper::decode_step(const int* tokens, int batch, std::vector<float>* logprob) {
  check_batch(*impl_, batch);
  std::vector<int32_t> t(tokens, tokens + batch);
  for (int32_t v : t) {
    if (v < 0 || v >= impl_->d.n_vocab) throw std::invalid_argument("GpuWhisper: token id out of range");
  }
  cuda_check(cudaMemcpyAsync(impl_->tokens, t.data(), size_t(batch) * 4, cudaMemcpyHostToDevice, impl_->stream),
             "upload tokens");
  impl_->advance();
  impl_->step(batch);
  std::vector<int32_t> out(static_cast<size_t>(batch), 0);
  cuda_check(cudaMemcpyAsync(out.data(), impl_->next, size_t(batch) * 4, cudaMemcpyDeviceToHost, impl_->stream),
             "download argmax");
  if (logprob) {
    logprob->resize(size_t(batch));
    cuda_check(
        cudaMemcpyAsync(logprob->data(), impl_->next_lp, size_t(batch) * 4, cudaMemcpyDeviceToHost, impl_->stream),
        "download logprob");
  }
  synchronize();
  return {out.begin(), out.end()};
}

void GpuWhisper::decode_step_feedback(int batch) {
  check_batch(*impl_, batch);
  cuda_check(cudaMemcpyAsync(impl_->tokens, impl_->next, size_t(batch) * 4, cudaMemcpyDeviceToDevice, impl_->stream),
             "feed back");
  impl_->advance();
  impl_->step(batch);
}

int GpuWhisper::window_slots() const { return impl_->windows; }
int GpuWhisper::sequence_slots() const { return impl_->sequences; }

namespace {

void check_slot(int slot, int count, int slots, const char* what) {
  if (slot < 0 || count < 1 || slot + count > slots) {
    throw std::invalid_argument(std::string("GpuWhisper: ") + what + " slot out of range");
  }
}

void check_tokens(const int* tokens, int n, int n_vocab) {
  for (int i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) throw std::invalid_argument("GpuWhisper: token id out of range");
  }
}

}  // namespace

void GpuWhisper::encode_windows(const float* mel, const int* windows, int count) {
  Impl& m = *impl_;
  if (count < 1 || count > m.windows) throw std::invalid_argument("GpuWhisper: window count out of range");
  for (int i = 0; i < count; ++i) check_slot(windows[i], 1, m.windows, "window");
  const size_t n = size_t(count) * m.d.n_mels * 2 * m.d.n_audio_ctx;
  cuda_check(cudaMemcpyAsync(m.mel, mel, n * 4, cudaMemcpyHostToDevice, m.stream), "upload mel");
  m.encode(count);
  // The cross K/V of each run of consecutive slots in one projection.
  for (int i = 0; i < count;) {
    int run = 1;
    while (i + run < count && windows[i + run] == windows[i] + run) ++run;
    m.cross(run, windows[i], i);
    i += run;
  }
  synchronize();
}

void GpuWhisper::prefill(int window, int seq, const int* tokens, int n, int start, const int* rows, int n_rows,
                         float* logits) {
  Impl& m = *impl_;
  check_slot(window, 1, m.windows, "window");
  check_slot(seq, 1, m.sequences, "sequence");
  if (n < 1 || start < 0 || start + n > m.d.n_text_ctx) {
    throw std::invalid_argument("GpuWhisper: the prompt does not fit the decoder context");
  }
  check_tokens(tokens, n, m.d.n_vocab);
  std::vector<int32_t> in(size_t(2) * n);
  for (int i = 0; i < n; ++i) in[size_t(i)] = tokens[i], in[size_t(n + i)] = start + i;
  // tokens and positions side by side in the rows' step_in (embed_tokens reads them from there)
  cuda_check(cudaMemcpyAsync(m.tokens, in.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream), "upload");
  cuda_check(cudaMemcpyAsync(m.pos, in.data() + n, size_t(n) * 4, cudaMemcpyHostToDevice, m.stream), "upload");
  // the cache length each chunk of queries sees (the quantised caches' chunked attention)
  std::vector<int32_t> chunk_len;
  for (int q0 = 0; q0 < n; q0 += int(kc::kDecoderMaxQueries)) {
    chunk_len.push_back(start + std::min(n, q0 + int(kc::kDecoderMaxQueries)));
  }
  cuda_check(cudaMemcpyAsync(m.len, chunk_len.data(), chunk_len.size() * 4, cudaMemcpyHostToDevice, m.stream),
             "upload");
  m.prefill(window, seq, n, start);
  synchronize();  // chunk_len must outlive the copy
  const int64_t dt = m.d.n_text_state;
  for (int done = 0; done < n_rows;) {
    const int chunk = std::min(n_rows - done, m.rows);
    for (int i = 0; i < chunk; ++i) {
      const int r = rows[done + i];
      if (r < 0 || r >= n) throw std::invalid_argument("GpuWhisper: logits row out of range");
      cuda_check(cudaMemcpyAsync(m.dy + size_t(i) * dt, m.dh + size_t(r) * dt, size_t(dt) * 2, cudaMemcpyDeviceToDevice,
                                 m.stream),
                 "gather rows");
    }
    m.project_logits(m.dy, m.dlogits, chunk);
    cuda_check(cudaMemcpyAsync(logits + size_t(done) * m.d.n_vocab, m.dlogits, size_t(chunk) * m.d.n_vocab * 4,
                               cudaMemcpyDeviceToHost, m.stream),
               "download logits");
    synchronize();
    done += chunk;
  }
  synchronize();
}

void GpuWhisper::step_groups(const StepGroup* groups, int count) {
  Impl& m = *impl_;
  const size_t R = size_t(m.rows);
  // tokens, positions, lengths, sequence slots, window slots [R] each: the first B of each, in one upload
  std::vector<int32_t> in(5 * R, 0);
  size_t B = 0;
  for (int g = 0; g < count; ++g) {
    const StepGroup& s = groups[g];
    check_slot(s.window, 1, m.windows, "window");
    check_slot(s.seq, s.batch, m.sequences, "sequence");
    if (s.start < 0 || s.start + 1 > m.d.n_text_ctx) {
      throw std::invalid_argument("GpuWhisper: decoder context is full");
    }
    check_tokens(s.tokens, s.batch, m.d.n_vocab);
    if (!s.logits) throw std::invalid_argument("GpuWhisper: a step group needs room for its logits");
    if (s.queries && !s.choices) throw std::invalid_argument("GpuWhisper: queries without room for the choices");
    for (int b = 0; s.queries && b < s.batch; ++b) {
      if (s.queries[b].top < 1) throw std::invalid_argument("GpuWhisper: a token query must ask for a token");
    }
    if (B + size_t(s.batch) > size_t(m.sequences)) throw std::invalid_argument("GpuWhisper: too many rows in a step");
    for (int b = 0; b < s.batch; ++b, ++B) {
      in[B] = s.tokens[b];
      in[R + B] = s.start;
      in[2 * R + B] = s.start + 1;
      in[3 * R + B] = s.seq + b;
      in[4 * R + B] = s.window;
    }
  }
  if (B == 0) throw std::invalid_argument("GpuWhisper: a step needs at least one row");
  std::vector<int32_t> seqs(in.begin() + long(3 * R), in.begin() + long(3 * R + B));
  std::sort(seqs.begin(), seqs.end());
  if (std::adjacent_find(seqs.begin(), seqs.end()) != seqs.end()) {
    throw std::invalid_argument("GpuWhisper: two rows of one step in the same sequence slot");
  }
  cuda_check(cudaMemcpyAsync(m.step_in, in.data(), in.size() * 4, cudaMemcpyHostToDevice, m.stream), "upload step");
  m.step(int(B));

  // Each group's answer: its queries on the device when they all fit, else its logits.
  const size_t row_floats = size_t(m.d.n_vocab);
  std::vector<kc::TokenQueryRow> rows(B);  // default: no ranges, no test, top 1 (a row without a query)
  std::vector<int2> ranges;
  std::vector<char> on_device(size_t(count), 0);
  size_t row = 0;
  for (int g = 0; g < count; ++g) {
    const StepGroup& s = groups[g];
    if (s.queries) {
      const size_t first = ranges.size();
      bool fits = true;
      for (int b = 0; b < s.batch && fits; ++b) {
        const model::TokenQuery& q = s.queries[b];
        kc::TokenQueryRow& r = rows[row + size_t(b)];
        r.first_range = int32_t(ranges.size());
        r.n_ranges = int32_t(q.rules.forbidden.size());
        r.timestamp_begin = q.rules.timestamp_begin;
        r.top = q.top;
        r.temperature = q.temperature;
        r.uniform = q.uniform;
        for (const auto& [begin, end] : q.rules.forbidden) ranges.push_back(int2{begin, end});
        fits = (q.temperature > 0 || q.top <= kc::kMaxTopTokens) && ranges.size() <= size_t(m.rows) * kRangesPerRow;
      }
      if (fits) {
        on_device[size_t(g)] = 1;
      } else {  // this group on the host: its rows become queries without effect
        ranges.resize(first);
        for (int b = 0; b < s.batch; ++b) rows[row + size_t(b)] = kc::TokenQueryRow{};
      }
    }
    if (!on_device[size_t(g)]) {
      cuda_check(cudaMemcpyAsync(s.logits, m.dlogits + row * row_floats, size_t(s.batch) * row_floats * 4,
                                 cudaMemcpyDeviceToHost, m.stream),
                 "download logits");
    }
    row += size_t(s.batch);
  }
  const bool any_on_device = std::find(on_device.begin(), on_device.end(), 1) != on_device.end();
  std::vector<int32_t> ids;
  std::vector<float> lps;
  if (any_on_device) {
    cuda_check(cudaMemcpyAsync(m.queries, rows.data(), B * sizeof(kc::TokenQueryRow), cudaMemcpyHostToDevice, m.stream),
               "upload queries");
    if (!ranges.empty()) {
      cuda_check(
          cudaMemcpyAsync(m.ranges, ranges.data(), ranges.size() * sizeof(int2), cudaMemcpyHostToDevice, m.stream),
          "upload queries");
    }
    // after the logits copies above: the kernel masks its rows in place
    CK(kc::choose_tokens(m.dlogits, int64_t(B), m.d.n_vocab, m.d.n_vocab, m.queries, m.ranges, m.choice_ids,
                         m.choice_lp, m.stream));
    ids.resize(B * kc::kMaxTopTokens);
    lps.resize(B * kc::kMaxTopTokens);
    cuda_check(cudaMemcpyAsync(ids.data(), m.choice_ids, ids.size() * 4, cudaMemcpyDeviceToHost, m.stream),
               "download choices");
    cuda_check(cudaMemcpyAsync(lps.data(), m.choice_lp, lps.size() * 4, cudaMemcpyDeviceToHost, m.stream),
               "download choices");
  }
  synchronize();

  row = 0;
  for (int g = 0; g < count; ++g) {
    const StepGroup& s = groups[g];
    for (int b = 0; s.queries && b < s.batch; ++b) {
      const size_t r = row + size_t(b);
      model::TokenChoice& c = s.choices[b];
      c = {};
      if (!on_device[size_t(g)]) continue;  // its logits came back instead
      const int n = s.queries[b].temperature > 0 ? 1 : s.queries[b].top;
      for (int j = 0; j < n; ++j) {
        const int32_t id = ids[r * kc::kMaxTopTokens + size_t(j)];
        if (id < 0) throw std::runtime_error("GpuWhisper: the logit rules left no token");
        c.ids.push_back(id);
        c.logprobs.push_back(lps[r * kc::kMaxTopTokens + size_t(j)]);
      }
    }
    row += size_t(s.batch);
  }
}

void GpuWhisper::copy_sequences(const int* src, const int* dst, int count, int length) {
  Impl& m = *impl_;
  if (length < 0 || length > m.d.n_text_ctx) throw std::invalid_argument("GpuWhisper: bad sequence length");
  if (length == 0) return;
  const size_t row_bytes = size_t(2) * m.d.n_text_state * size_t(kc::kv_element_bytes(m.kv_type));
  const size_t scale_row_bytes = size_t(2) * m.d.n_text_head * 4;
  for (int i = 0; i < count; ++i) {
    check_slot(src[i], 1, m.sequences, "sequence");
    check_slot(dst[i], 1, m.sequences, "sequence");
    // every layer at once: the layers are kv_layer_pitch bytes apart in one block
    const kc::KvView from = m.self_view(0, src[i]), to = m.self_view(0, dst[i]);
    cuda_check(cudaMemcpy2DAsync(to.data, m.kv_layer_pitch, from.data, m.kv_layer_pitch, row_bytes * size_t(length),
                                 size_t(m.d.n_text_layer), cudaMemcpyDeviceToDevice, m.stream),
               "copy sequence");
    if (m.kv_type == kc::KvType::kI8Dynamic) {
      cuda_check(cudaMemcpy2DAsync(to.scales, m.kv_scale_pitch, from.scales, m.kv_scale_pitch,
                                   scale_row_bytes * size_t(length), size_t(m.d.n_text_layer), cudaMemcpyDeviceToDevice,
                                   m.stream),
                 "copy sequence scales");
    }
  }
  // No synchronisation: every later use of these slots is a later operation on the same stream.
}

std::vector<std::vector<float>> GpuWhisper::cross_kv_host(int window) const {
  const Impl& m = *impl_;
  check_slot(window, 1, m.windows, "window");
  const size_t rows = size_t(m.d.n_audio_ctx), width = 2 * size_t(m.d.n_text_state), n = rows * width;
  const size_t eb = size_t(kc::kv_element_bytes(m.kv_type)), h2 = 2 * size_t(m.d.n_text_head), hd = width / h2;
  const bool dynamic = m.kv_type == kc::KvType::kI8Dynamic;
  std::vector<std::vector<float>> out;
  std::vector<uint8_t> codes(n * eb);
  std::vector<float> scales(dynamic ? rows * h2 : h2);
  synchronize();
  for (size_t l = 0; l < m.dec.size(); ++l) {
    const kc::KvView v = m.cross_view(l, window, true);
    cuda_check(cudaMemcpy(codes.data(), v.data, codes.size(), cudaMemcpyDeviceToHost), "download cross K/V");
    if (m.kv_type != kc::KvType::kF16) {
      cuda_check(cudaMemcpy(scales.data(), v.scales, scales.size() * 4, cudaMemcpyDeviceToHost), "download scales");
    }
    std::vector<float> f(n);
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c = 0; c < width; ++c) {
        const size_t i = r * width + c;
        const float scale = dynamic ? scales[r * h2 + c / hd] : scales[c / hd];
        switch (m.kv_type) {
          case kc::KvType::kF16: {
            uint16_t hv;
            std::memcpy(&hv, codes.data() + 2 * i, 2);
            f[i] = core::half_to_float(hv);
            break;
          }
          case kc::KvType::kI8Static:
          case kc::KvType::kI8Dynamic:
            f[i] = float(static_cast<int8_t>(codes[i])) * scale;
            break;
          case kc::KvType::kFp8:
            f[i] = e4m3_to_float(codes[i]) * scale;
            break;
        }
      }
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<float> GpuWhisper::features(int b) const {
  const size_t n = size_t(impl_->d.n_audio_ctx) * impl_->d.n_audio_state;
  std::vector<uint16_t> h(n);
  synchronize();
  cuda_check(cudaMemcpy(h.data(), impl_->features + size_t(b) * n, n * 2, cudaMemcpyDeviceToHost), "download");
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = core::half_to_float(h[i]);
  return f;
}

std::vector<float> GpuWhisper::logits(int b) const {
  const size_t n = size_t(impl_->d.n_vocab);
  std::vector<float> f(n);
  synchronize();
  cuda_check(cudaMemcpy(f.data(), impl_->dlogits + size_t(b) * n, n * 4, cudaMemcpyDeviceToHost), "download");
  return f;
}

void GpuWhisper::synchronize() const { cuda_check(cudaStreamSynchronize(impl_->stream), "synchronize"); }

size_t GpuWhisper::device_bytes_used() const {
  size_t free_b = 0, total_b = 0;
  cuda_check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  return total_b - free_b - impl_->used_before;
}

size_t GpuWhisper::peak_device_bytes() const { return device_bytes_used() + impl_->gemm.peak_transient_bytes(); }

float GpuWhisper::time_ms(const std::function<void()>& fn) {
  cudaEvent_t a, b;
  cuda_check(cudaEventCreate(&a), "cudaEventCreate");
  cuda_check(cudaEventCreate(&b), "cudaEventCreate");
  cuda_check(cudaEventRecord(a, impl_->stream), "cudaEventRecord");
  fn();
  cuda_check(cudaEventRecord(b, impl_->stream), "cudaEventRecord");
  cuda_check(cudaEventSynchronize(b), "cudaEventSynchronize");
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

}  // namespace wisp::runtime
