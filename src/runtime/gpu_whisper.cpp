// GpuWhisper (gpu_whisper.h): the Whisper forward pass composed from src/kernels/cuda. Built only when
// WISP_CUDA is on (CMake picks gpu_stub.cpp otherwise).
#include "runtime/gpu_whisper.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <stdexcept>

#include "core/dtype.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"

namespace wisp::runtime {

namespace kc = wisp::kernels::cuda;

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

// One cudaMalloc, carved by a bump pointer (256-byte aligned pieces).
struct Arena {
  char* base = nullptr;
  size_t size = 0, used = 0;
  void reserve(size_t bytes) {
    size = bytes;
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, bytes), "cudaMalloc (arena)");
    base = static_cast<char*>(p);
  }
  template <class T>
  T* take(size_t count) {
    const size_t bytes = align_up(count * sizeof(T));
    if (used + bytes > size) throw std::runtime_error("GpuWhisper arena overflow");
    T* p = reinterpret_cast<T*>(base + used);
    used += bytes;
    return p;
  }
  ~Arena() {
    if (base) cudaFree(base);
  }
};

struct DLinear {
  __half* w = nullptr;  // [out, in]
  __half* b = nullptr;  // [out] or null
  int64_t out = 0, in = 0;
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
  int max_batch = 0;
  int device = 0;
  size_t used_before = 0;
  cudaStream_t stream = nullptr;
  kc::GemmContext gemm;
  Arena weights, acts;

  DLinear conv1, conv2;  // [d, c_in · 3]
  __half* enc_pos = nullptr;
  std::vector<DBlock> enc, dec;
  DNorm ln_post, dec_ln;
  __half* tok_emb = nullptr;  // [n_vocab, d]
  __half* dec_pos = nullptr;  // [n_text_ctx, d]

  // Activations (sized for max_batch).
  float* mel = nullptr;        // [B, n_mels, 2·n_audio_ctx]
  __half* big = nullptr;       // conv1 output [B, 2·n_ctx, d] / fc1 output [B, n_ctx, 4d]
  __half* mid = nullptr;       // im2col columns / qkv [B, n_ctx, 3d]
  __half* x = nullptr;         // residual stream [B, n_ctx, d]
  __half* h = nullptr;         // normed [B, n_ctx, d]
  __half* a = nullptr;         // attention output [B, n_ctx, d]
  __half* features = nullptr;  // [B, n_ctx, d]
  std::vector<__half*> ckv;    // per decoder layer [B, n_ctx, 2d]
  std::vector<__half*> kv;     // per decoder layer [B, n_text_ctx, 2d]: K in [0, d), V in [d, 2d)
  // Decoder step buffers.
  int32_t* tokens = nullptr;  // [B]
  int32_t* pos = nullptr;     // [B] position of the next token (device: a captured step reads it)
  int32_t* len = nullptr;     // [B] cache length after the next token (pos + 1)
  __half* dx = nullptr;       // [B, d]
  __half* dh = nullptr;       // [B, d]
  __half* dqkv = nullptr;     // [B, 3d]
  __half* dy = nullptr;       // [B, d]
  __half* df = nullptr;       // [B, 4d]
  float* dlogits = nullptr;   // [B, n_vocab]
  int32_t* next = nullptr;    // [B]
  float* next_lp = nullptr;   // [B]
  void* attn_ws = nullptr;
  size_t attn_ws_bytes = 0;
  int length = 0;
  // CUDA graphs of one decode step, per batch size: the first step of a batch size runs eagerly (it creates
  // the cuBLASLt plans), the second captures, every later one replays.
  bool use_graphs = true;
  std::vector<int> eager_steps;         // [max_batch + 1]
  std::vector<cudaGraphExec_t> graphs;  // [max_batch + 1]

  ~Impl() {
    for (cudaGraphExec_t g : graphs) {
      if (g) cudaGraphExecDestroy(g);
    }
    if (stream) cudaStreamDestroy(stream);
  }

  size_t weight_bytes_needed() const {
    const int64_t da = d.n_audio_state, dt = d.n_text_state;
    size_t n = 0;
    auto lin = [&](int64_t o, int64_t i) { n += align_up(o * i * 2) + align_up(o * 2); };
    auto norm = [&](int64_t c) { n += 2 * align_up(c * 4); };
    lin(da, d.n_mels * 3);
    lin(da, da * 3);
    n += align_up(size_t(d.n_audio_ctx) * da * 2);
    for (int i = 0; i < d.n_audio_layer; ++i) {
      norm(da), norm(da), lin(3 * da, da), lin(da, da), lin(4 * da, da), lin(da, 4 * da);
    }
    norm(da);
    n += align_up(size_t(d.n_vocab) * dt * 2) + align_up(size_t(d.n_text_ctx) * dt * 2);
    for (int i = 0; i < d.n_text_layer; ++i) {
      norm(dt), norm(dt), norm(dt), lin(3 * dt, dt), lin(dt, dt), lin(dt, dt), lin(2 * dt, da), lin(dt, dt),
          lin(4 * dt, dt), lin(dt, 4 * dt);
    }
    norm(dt);
    return n + 4096;
  }

  // Fills the weight arena. `fill_half(dst, count, name)` / `fill_float(dst, count, name)` upload one tensor.
  template <class FH, class FF>
  void layout_weights(FH&& fill_half, FF&& fill_float) {
    const int64_t da = d.n_audio_state, dt = d.n_text_state;
    auto lin = [&](const std::string& name, int64_t o, int64_t i, bool bias = true) {
      DLinear l;
      l.out = o, l.in = i;
      l.w = weights.take<__half>(size_t(o * i));
      fill_half(l.w, size_t(o * i), name + ".weight");
      l.b = weights.take<__half>(size_t(o));
      if (bias) {
        fill_half(l.b, size_t(o), name + ".bias");
      } else {
        cuda_check(cudaMemset(l.b, 0, size_t(o) * 2), "cudaMemset");
      }
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
    auto blk = [](const std::string& s, int i, const std::string& leaf) {
      return s + ".blocks." + std::to_string(i) + "." + leaf;
    };
    conv1 = lin("encoder.conv1", da, d.n_mels * 3);
    conv2 = lin("encoder.conv2", da, da * 3);
    enc_pos = weights.take<__half>(size_t(d.n_audio_ctx) * da);
    fill_half(enc_pos, size_t(d.n_audio_ctx) * da, "encoder.positional_embedding");
    for (int i = 0; i < d.n_audio_layer; ++i) {
      DBlock b;
      b.attn_ln = norm(blk("encoder", i, "attn_ln"), da);
      b.mlp_ln = norm(blk("encoder", i, "mlp_ln"), da);
      b.qkv = lin(blk("encoder", i, "attn.qkv"), 3 * da, da);
      b.attn_out = lin(blk("encoder", i, "attn.out"), da, da);
      b.fc1 = lin(blk("encoder", i, "mlp.fc1"), 4 * da, da);
      b.fc2 = lin(blk("encoder", i, "mlp.fc2"), da, 4 * da);
      enc.push_back(b);
    }
    ln_post = norm("encoder.ln_post", da);
    tok_emb = weights.take<__half>(size_t(d.n_vocab) * dt);
    fill_half(tok_emb, size_t(d.n_vocab) * dt, "decoder.token_embedding.weight");
    dec_pos = weights.take<__half>(size_t(d.n_text_ctx) * dt);
    fill_half(dec_pos, size_t(d.n_text_ctx) * dt, "decoder.positional_embedding");
    for (int i = 0; i < d.n_text_layer; ++i) {
      DBlock b;
      b.attn_ln = norm(blk("decoder", i, "attn_ln"), dt);
      b.cross_ln = norm(blk("decoder", i, "cross_attn_ln"), dt);
      b.mlp_ln = norm(blk("decoder", i, "mlp_ln"), dt);
      b.qkv = lin(blk("decoder", i, "attn.qkv"), 3 * dt, dt);
      b.attn_out = lin(blk("decoder", i, "attn.out"), dt, dt);
      b.cross_q = lin(blk("decoder", i, "cross_attn.query"), dt, dt);
      b.cross_kv = lin(blk("decoder", i, "cross_attn.kv"), 2 * dt, da);
      b.cross_out = lin(blk("decoder", i, "cross_attn.out"), dt, dt);
      b.fc1 = lin(blk("decoder", i, "mlp.fc1"), 4 * dt, dt);
      b.fc2 = lin(blk("decoder", i, "mlp.fc2"), dt, 4 * dt);
      dec.push_back(b);
    }
    dec_ln = norm("decoder.ln", dt);
  }

  void allocate_activations() {
    const size_t B = size_t(max_batch), nc = size_t(d.n_audio_ctx), da = size_t(d.n_audio_state);
    const size_t dt = size_t(d.n_text_state), ctx = size_t(d.n_text_ctx);
    const size_t big_n = std::max(B * 2 * nc * da, B * nc * 4 * da);
    const size_t mid_n = std::max({B * 2 * nc * size_t(d.n_mels) * 3, B * nc * 3 * da});
    size_t n =
        align_up(B * d.n_mels * 2 * nc * 4) + align_up(big_n * 2) + align_up(mid_n * 2) + 4 * align_up(B * nc * da * 2);
    n += size_t(d.n_text_layer) * (align_up(B * nc * 2 * dt * 2) + align_up(B * ctx * 2 * dt * 2));
    n += align_up(B * 4) * 5 + 4 * align_up(B * dt * 2) + align_up(B * 3 * dt * 2) + align_up(B * 4 * dt * 2) +
         align_up(B * size_t(d.n_vocab) * 4) + align_up(B * 4);
    attn_ws_bytes =
        kc::decoder_attention_workspace_bytes(max_batch, 1, std::max(d.n_text_head, 1), std::max<int64_t>(nc, ctx));
    n += align_up(attn_ws_bytes) + 4096;
    acts.reserve(n);
    mel = acts.take<float>(B * d.n_mels * 2 * nc);
    big = acts.take<__half>(big_n);
    mid = acts.take<__half>(mid_n);
    x = acts.take<__half>(B * nc * da);
    h = acts.take<__half>(B * nc * da);
    a = acts.take<__half>(B * nc * da);
    features = acts.take<__half>(B * nc * da);
    for (int l = 0; l < d.n_text_layer; ++l) {
      ckv.push_back(acts.take<__half>(B * nc * 2 * dt));
      kv.push_back(acts.take<__half>(B * ctx * 2 * dt));
    }
    tokens = acts.take<int32_t>(B);
    pos = acts.take<int32_t>(B);
    len = acts.take<int32_t>(B);
    dx = acts.take<__half>(B * dt);
    dh = acts.take<__half>(B * dt);
    da_ = acts.take<__half>(B * dt);
    dy = acts.take<__half>(B * dt);
    dqkv = acts.take<__half>(B * 3 * dt);
    df = acts.take<__half>(B * 4 * dt);
    dlogits = acts.take<float>(B * size_t(d.n_vocab));
    next = acts.take<int32_t>(B);
    next_lp = acts.take<float>(B);
    attn_ws = acts.take<char>(attn_ws_bytes);
    CK(kc::decoder_attention_workspace_init(attn_ws, attn_ws_bytes, stream));
    cuda_check(cudaMemset(next, 0, B * 4), "cudaMemset");
    eager_steps.assign(B + 1, 0);
    graphs.assign(B + 1, nullptr);
    reset(max_batch);
  }

  void reset(int B) {
    std::vector<int32_t> zero(size_t(B), 0), one(size_t(B), 1);
    cuda_check(cudaMemcpyAsync(pos, zero.data(), size_t(B) * 4, cudaMemcpyHostToDevice, stream), "reset");
    cuda_check(cudaMemcpyAsync(len, one.data(), size_t(B) * 4, cudaMemcpyHostToDevice, stream), "reset");
    cuda_check(cudaStreamSynchronize(stream), "reset");
    length = 0;
  }
  __half* da_ = nullptr;

  void encode(int B) {
    const int64_t nc = d.n_audio_ctx, dm = d.n_audio_state, frames = 2 * nc, rows = int64_t(B) * nc;
    // conv1 (k 3, stride 1) + GELU: im2col over the fp32 mel, one GEMM.
    CK(kc::im2col_k3_mel(mel, mid, B, frames, d.n_mels, frames, 1, stream));
    CK(kc::linear(gemm, mid, conv1.w, conv1.b, big, int64_t(B) * frames, dm, d.n_mels * 3, kc::Epilogue::kBiasGeluErf,
                  stream));
    // conv2 (k 3, stride 2) + GELU, then the positional embedding.
    CK(kc::im2col_k3(big, mid, B, frames, dm, nc, 2, stream));
    CK(kc::linear(gemm, mid, conv2.w, conv2.b, x, rows, dm, 3 * dm, kc::Epilogue::kBiasGeluErf, stream));
    CK(kc::add_rows(x, enc_pos, B, nc, dm, stream));
    CK(kc::layer_norm(x, enc[0].attn_ln.gamma, enc[0].attn_ln.beta, h, rows, dm, 1e-5f, stream));
    for (size_t l = 0; l < enc.size(); ++l) {
      const DBlock& b = enc[l];
      CK(kc::linear(gemm, h, b.qkv.w, b.qkv.b, mid, rows, 3 * dm, dm, kc::Epilogue::kBias, stream));
      CK(kc::attention(mid, 3 * dm, nc * 3 * dm, mid + dm, 3 * dm, nc * 3 * dm, mid + 2 * dm, 3 * dm, nc * 3 * dm, a,
                       dm, nc * dm, B, nc, nc, d.n_audio_head, dm / d.n_audio_head, false, 0, stream));
      CK(kc::linear(gemm, a, b.attn_out.w, b.attn_out.b, h, rows, dm, dm, kc::Epilogue::kBias, stream));
      CK(kc::add_layer_norm(x, h, b.mlp_ln.gamma, b.mlp_ln.beta, a, rows, dm, 1e-5f, stream));
      CK(kc::linear(gemm, a, b.fc1.w, b.fc1.b, big, rows, 4 * dm, dm, kc::Epilogue::kBiasGeluErf, stream));
      CK(kc::linear(gemm, big, b.fc2.w, b.fc2.b, a, rows, dm, 4 * dm, kc::Epilogue::kBias, stream));
      const DNorm& next_ln = l + 1 < enc.size() ? enc[l + 1].attn_ln : ln_post;
      __half* out = l + 1 < enc.size() ? h : features;
      CK(kc::add_layer_norm(x, a, next_ln.gamma, next_ln.beta, out, rows, dm, 1e-5f, stream));
    }
  }

  void cross(int B) {
    const int64_t rows = int64_t(B) * d.n_audio_ctx, dt = d.n_text_state;
    for (size_t l = 0; l < dec.size(); ++l) {
      CK(kc::linear(gemm, features, dec[l].cross_kv.w, dec[l].cross_kv.b, ckv[l], rows, 2 * dt, d.n_audio_state,
                    kc::Epilogue::kBias, stream));
    }
  }

  // One decoder step over `tokens` (device [B]): eager, captured or replayed (see `graphs`).
  void step(int B) {
    if (length >= d.n_text_ctx) throw std::runtime_error("GpuWhisper: decoder context is full");
    if (!use_graphs || eager_steps[size_t(B)] == 0) {
      step_body(B);
      ++eager_steps[size_t(B)];
    } else {
      if (!graphs[size_t(B)]) {
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
        cudaGraphExec_t exec = nullptr;
        const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
        cuda_check(e, "cudaGraphInstantiate");
        graphs[size_t(B)] = exec;
      }
      cuda_check(cudaGraphLaunch(graphs[size_t(B)], stream), "cudaGraphLaunch");
    }
    ++length;
  }

  void step_body(int B) {
    const int64_t dt = d.n_text_state, ctx = d.n_text_ctx, nc = d.n_audio_ctx, hd = dt / d.n_text_head;
    CK(kc::embed_tokens(tokens, pos, tok_emb, dec_pos, dx, B, dt, d.n_vocab, ctx, stream));
    CK(kc::layer_norm(dx, dec[0].attn_ln.gamma, dec[0].attn_ln.beta, dh, B, dt, 1e-5f, stream));
    for (size_t l = 0; l < dec.size(); ++l) {
      const DBlock& b = dec[l];
      // causal self-attention: append K/V of the new token at row `length` of each sequence's cache
      CK(kc::linear(gemm, dh, b.qkv.w, b.qkv.b, dqkv, B, 3 * dt, dt, kc::Epilogue::kBias, stream));
      CK(kc::kv_append(dqkv + dt, 3 * dt, kv[l], ctx * 2 * dt, 2 * dt, pos, ctx, 2 * dt, B, stream));
      CK(kc::decoder_attention(dqkv, 3 * dt, 3 * dt, kv[l], 2 * dt, ctx * 2 * dt, kv[l] + dt, 2 * dt, ctx * 2 * dt, len,
                               ctx, da_, dt, dt, B, 1, d.n_text_head, hd, true, attn_ws, attn_ws_bytes, stream));
      CK(kc::linear(gemm, da_, b.attn_out.w, b.attn_out.b, dy, B, dt, dt, kc::Epilogue::kBias, stream));
      CK(kc::add_layer_norm(dx, dy, b.cross_ln.gamma, b.cross_ln.beta, dh, B, dt, 1e-5f, stream));
      // cross-attention over the window's audio K/V
      CK(kc::linear(gemm, dh, b.cross_q.w, b.cross_q.b, dy, B, dt, dt, kc::Epilogue::kBias, stream));
      CK(kc::decoder_attention(dy, dt, dt, ckv[l], 2 * dt, nc * 2 * dt, ckv[l] + dt, 2 * dt, nc * 2 * dt, nullptr, nc,
                               da_, dt, dt, B, 1, d.n_text_head, hd, false, attn_ws, attn_ws_bytes, stream));
      CK(kc::linear(gemm, da_, b.cross_out.w, b.cross_out.b, dy, B, dt, dt, kc::Epilogue::kBias, stream));
      CK(kc::add_layer_norm(dx, dy, b.mlp_ln.gamma, b.mlp_ln.beta, dh, B, dt, 1e-5f, stream));
      // feed-forward
      CK(kc::linear(gemm, dh, b.fc1.w, b.fc1.b, df, B, 4 * dt, dt, kc::Epilogue::kBiasGeluErf, stream));
      CK(kc::linear(gemm, df, b.fc2.w, b.fc2.b, dy, B, dt, 4 * dt, kc::Epilogue::kBias, stream));
      const DNorm& next_ln = l + 1 < dec.size() ? dec[l + 1].attn_ln : dec_ln;
      CK(kc::add_layer_norm(dx, dy, next_ln.gamma, next_ln.beta, dh, B, dt, 1e-5f, stream));
    }
    CK(kc::linear_f32_out(gemm, dh, dt, tok_emb, nullptr, dlogits, d.n_vocab, B, d.n_vocab, dt, stream));
    CK(kc::argmax(dlogits, B, d.n_vocab, d.n_vocab, next, next_lp, stream));
    CK(kc::add_scalar_i32(pos, len, B, 1, stream));
  }
};

bool gpu_available() { return kc::device_available(); }

GpuWhisper::GpuWhisper(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuWhisper::~GpuWhisper() = default;

namespace {

std::unique_ptr<GpuWhisper::Impl> make_impl(const GpuDims& dims, int max_batch) {
  if (!kc::device_available()) throw std::runtime_error("no CUDA device");
  if (max_batch < 1) throw std::invalid_argument("GpuWhisper: max_batch must be >= 1");
  if (dims.n_audio_state / dims.n_audio_head != 64 || dims.n_text_state / dims.n_text_head != 64) {
    throw std::invalid_argument("GpuWhisper: the fused attention kernels need head_dim 64");
  }
  auto impl = std::make_unique<GpuWhisper::Impl>();
  impl->d = dims;
  impl->max_batch = max_batch;
  cuda_check(cudaGetDevice(&impl->device), "cudaGetDevice");
  size_t free_b = 0, total_b = 0;
  cuda_check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  impl->used_before = total_b - free_b;
  cuda_check(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  kcheck(impl->gemm.init(), "GemmContext::init");
  impl->weights.reserve(impl->weight_bytes_needed());
  return impl;
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

std::unique_ptr<GpuWhisper> GpuWhisper::create(const GpuDims& dims, int max_batch, const TensorSource& source) {
  auto impl = make_impl(dims, max_batch);
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
  impl->layout_weights(fill_half, fill_float);
  impl->allocate_activations();
  cuda_check(cudaDeviceSynchronize(), "create");
  return std::unique_ptr<GpuWhisper>(new GpuWhisper(std::move(impl)));
}

std::unique_ptr<GpuWhisper> GpuWhisper::create_random(const GpuDims& dims, int max_batch, uint64_t seed) {
  auto impl = make_impl(dims, max_batch);
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
  auto fill_float = [&](float* dst, size_t count, const std::string& name) {
    const bool gamma = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    std::vector<float> f(count, gamma ? 1.0f : 0.0f);
    cuda_check(cudaMemcpy(dst, f.data(), count * 4, cudaMemcpyHostToDevice), "upload norm");
  };
  impl->layout_weights(fill_half, fill_float);
  impl->allocate_activations();
  // A random mel in [-1, 1] so a benchmark has input without encode(mel).
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

std::vector<int> GpuWhisper::decode_step(const int* tokens, int batch, std::vector<float>* logprob) {
  check_batch(*impl_, batch);
  std::vector<int32_t> t(tokens, tokens + batch);
  for (int32_t v : t) {
    if (v < 0 || v >= impl_->d.n_vocab) throw std::invalid_argument("GpuWhisper: token id out of range");
  }
  cuda_check(cudaMemcpyAsync(impl_->tokens, t.data(), size_t(batch) * 4, cudaMemcpyHostToDevice, impl_->stream),
             "upload tokens");
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
  impl_->step(batch);
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
