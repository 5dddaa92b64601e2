#include "model/whisper.h"

#include <cstring>
#include <functional>

#include "format/tensor_names.h"
#include "ops/ops.h"
#include "wisp/errors.h"

namespace wisp::model {

using core::DType;
using format::names::block;

namespace {

// Matrices stay in the file's type (the kernels read f16 and quantised codes directly); vectors become f32
// once at load.
Linear load_linear(const format::EngineFile& f, const std::string& name) {
  return {f.tensor(name + ".weight"), Tensor(), ops::to_f32(f.tensor(name + ".bias"))};
}
Norm load_norm(const format::EngineFile& f, const std::string& name) {
  return {ops::to_f32(f.tensor(name + ".weight")), ops::to_f32(f.tensor(name + ".bias"))};
}

}  // namespace

std::shared_ptr<const WhisperModel> WhisperModel::load(const std::string& path, const DeviceFactory& device) {
  auto m = std::make_shared<WhisperModel>();
  m->path_ = path;
  m->file_ = format::EngineFile::open(path);
  const format::EngineFile& f = m->file_;
  m->meta_ = f.metadata();
  m->vocab_ = f.vocabulary();
  const auto& d = m->meta_.dims;
  if (d.n_audio_state % d.n_audio_head != 0 || d.n_text_state % d.n_text_head != 0 || d.n_mels <= 0) {
    throw ModelError("'" + path + "': inconsistent model dimensions");
  }
  if (static_cast<int>(m->vocab_.size()) != d.n_vocab) throw ModelError("'" + path + "': vocabulary size mismatch");

  auto check = [&](const Tensor& t, core::Shape shape, const std::string& name) {
    if (t.shape() != shape) {
      throw ModelError("'" + path + "': tensor " + name + " is " + t.describe() + ", expected " +
                       core::shape_str(shape));
    }
    if (t.dtype() != DType::kF32 && t.dtype() != DType::kF16) {
      throw ModelError("'" + path + "': tensor " + name + " has unsupported type " + t.describe());
    }
  };
  auto check_stored = [&](const Tensor& t, DType dtype, const core::Shape& shape, const std::string& name) {
    if (t.dtype() != dtype || t.shape() != shape) {
      throw ModelError("'" + path + "': tensor " + name + " is " + t.describe() + ", expected " +
                       core::dtype_name(dtype) + core::shape_str(shape) + " for " +
                       format::weight_quantization_name(m->meta_.weight_quantization) + " weights");
    }
  };
  // A block's linear layer [out, in], stored as the header's weight_quantization says: float, int8 codes
  // with per-row scales, or int4 codes with per-group scales. In a quantised file a layer may also stay float
  // (then without a scale): one whose inputs are not whole groups (int4), and those `convert --keep-float` kept.
  const bool quantized_file = m->meta_.weight_quantization == format::WeightQuantization::kInt8 ||
                              m->meta_.weight_quantization == format::WeightQuantization::kInt4;
  auto block_linear = [&](const std::string& layer, int64_t out, int64_t in) {
    const std::string name = layer + ".weight";
    Linear l = load_linear(f, layer);
    const int64_t group = m->meta_.group_size;
    const bool float_weights = l.w.dtype() == DType::kF16 || l.w.dtype() == DType::kF32;
    if (float_weights && quantized_file && f.has(name + "_scale")) {
      throw ModelError("'" + path + "': tensor " + name + " is " + l.w.describe() + " but has a scale (" + name +
                       "_scale): expected the codes of " +
                       format::weight_quantization_name(m->meta_.weight_quantization) + " weights");
    }
    if (float_weights) {
      check(l.w, {out, in}, name);
    } else if (m->meta_.weight_quantization == format::WeightQuantization::kInt8) {
      check_stored(l.w, DType::kI8, {out, in}, name);
      l.scale = f.tensor(name + "_scale");
      check_stored(l.scale, DType::kF32, {out}, name + "_scale");
    } else if (m->meta_.weight_quantization == format::WeightQuantization::kInt4 && in % group == 0) {
      check_stored(l.w, DType::kU8, {out, in / 2}, name);
      l.scale = f.tensor(name + "_scale");
      check_stored(l.scale, DType::kF32, {out, in / group}, name + "_scale");
    } else {
      check(l.w, {out, in}, name);
    }
    return l;
  };
  auto load_block = [&](const std::string& stack, int i, int64_t n, bool cross) {
    Block b;
    b.attn_ln = load_norm(f, block(stack, i, "attn_ln"));
    b.qkv = block_linear(block(stack, i, "attn.qkv"), 3 * n, n);
    b.attn_out = block_linear(block(stack, i, "attn.out"), n, n);
    if (cross) {
      b.cross_ln = load_norm(f, block(stack, i, "cross_attn_ln"));
      b.cross_q = block_linear(block(stack, i, "cross_attn.query"), n, n);
      b.cross_kv = block_linear(block(stack, i, "cross_attn.kv"), 2 * n, d.n_audio_state);
      b.cross_out = block_linear(block(stack, i, "cross_attn.out"), n, n);
    }
    b.mlp_ln = load_norm(f, block(stack, i, "mlp_ln"));
    b.fc1 = block_linear(block(stack, i, "mlp.fc1"), 4 * n, n);
    b.fc2 = block_linear(block(stack, i, "mlp.fc2"), n, 4 * n);
    return b;
  };

  m->conv1_ = load_linear(f, "encoder.conv1");
  check(m->conv1_.w, {d.n_audio_state, d.n_mels, 3}, "encoder.conv1.weight");
  m->conv2_ = load_linear(f, "encoder.conv2");
  check(m->conv2_.w, {d.n_audio_state, d.n_audio_state, 3}, "encoder.conv2.weight");
  m->enc_pos_ = ops::to_f32(f.tensor("encoder.positional_embedding"));
  check(m->enc_pos_, {d.n_audio_ctx, d.n_audio_state}, "encoder.positional_embedding");
  for (int i = 0; i < d.n_audio_layer; ++i) m->enc_.push_back(load_block("encoder", i, d.n_audio_state, false));
  m->ln_post_ = load_norm(f, "encoder.ln_post");
  m->token_embedding_ = f.tensor("decoder.token_embedding.weight");
  check(m->token_embedding_, {d.n_vocab, d.n_text_state}, "decoder.token_embedding.weight");
  m->dec_pos_ = ops::to_f32(f.tensor("decoder.positional_embedding"));
  check(m->dec_pos_, {d.n_text_ctx, d.n_text_state}, "decoder.positional_embedding");
  for (int i = 0; i < d.n_text_layer; ++i) m->dec_.push_back(load_block("decoder", i, d.n_text_state, true));
  m->dec_ln_ = load_norm(f, "decoder.ln");
  if (device) m->device_ = device(*m);
  return m;
}

std::string WhisperModel::device_name() const { return device_ ? device_->name() : "cpu"; }

std::shared_ptr<void> WhisperModel::begin_transcription() const {
  return device_ ? device_->begin_transcription() : nullptr;
}

int WhisperModel::device_concurrency() const { return device_ ? device_->concurrency() : 0; }

std::vector<float> WhisperModel::device_log_mel(std::span<const float> samples) const {
  return device_ ? device_->log_mel(samples) : std::vector<float>();
}

Tensor WhisperModel::stored_tensor(const std::string& name) const { return file_.tensor(name); }

bool WhisperModel::on_device(const CrossKV& cross, const DeviceState* cache) const {
  const bool window = cross.device != nullptr;
  if (window != (cache != nullptr)) throw InternalError("decode: the window and the cache live on different devices");
  if (window && (cross.device->backend != device_.get() || cache->backend != device_.get())) {
    throw InternalError("decode: state of another model's device backend");
  }
  return window;
}

CrossKV WhisperModel::encode_window(const Tensor& mel) const {
  if (device_) return device_->encode_window(mel);
  return cross_kv(encode(mel));
}

Tensor WhisperModel::decode_logits(std::span<const int> tokens, const CrossKV& cross, KVCache& cache,
                                   std::span<const int64_t> rows) const {
  const int64_t last = static_cast<int64_t>(tokens.size()) - 1;
  const std::span<const int64_t> picked = rows.empty() ? std::span<const int64_t>(&last, 1) : rows;
  for (int64_t r : picked) {
    if (r < 0 || r > last) throw InvalidArgument("decode_logits: row out of the decoded tokens");
  }
  if (on_device(cross, cache.device.get())) return device_->decode_logits(tokens, cross, cache, picked);
  const Tensor hidden = decode(tokens, cross, cache);  // [n, d]
  Tensor sel = Tensor::empty({static_cast<int64_t>(picked.size()), hidden.dim(1)}, DType::kF32);
  for (size_t i = 0; i < picked.size(); ++i) {
    std::memcpy(sel.data<float>() + static_cast<int64_t>(i) * hidden.dim(1),
                hidden.data<float>() + picked[i] * hidden.dim(1), static_cast<size_t>(hidden.dim(1)) * 4);
  }
  return logits(sel);
}

namespace {
template <class Observer>
thread_local const Observer* t_observer = nullptr;
}  // namespace

template <class Observer>
ScopedObserver<Observer>::ScopedObserver(Observer observer) : observer_(std::move(observer)) {
  if (t_observer<Observer>) throw InternalError("an activation observer of this kind is already installed");
  t_observer<Observer> = &observer_;
}
template <class Observer>
ScopedObserver<Observer>::~ScopedObserver() {
  t_observer<Observer> = nullptr;
}
template <class Observer>
const Observer* ScopedObserver<Observer>::current() {
  return t_observer<Observer>;
}
template class ScopedObserver<NormObserver>;
template class ScopedObserver<LinearInputObserver>;

std::pair<bool, int> WhisperModel::block_position(const Block& b) const {
  const std::less<const Block*> before;  // a total order, also between the two stacks' arrays
  const bool decoder = enc_.empty() || before(&b, enc_.data()) || !before(&b, enc_.data() + enc_.size());
  return {decoder, static_cast<int>(&b - (decoder ? dec_.data() : enc_.data()))};
}

Tensor WhisperModel::block_norm(const Block& b, BlockNorm which, const Tensor& x) const {
  const Norm& n = which == BlockNorm::kAttention        ? b.attn_ln
                  : which == BlockNorm::kCrossAttention ? b.cross_ln
                                                        : b.mlp_ln;
  Tensor h = ops::layer_norm(x, n.gamma, n.beta);
  if (const NormObserver* observe = ScopedNormObserver::current()) {
    const auto [decoder, index] = block_position(b);
    (*observe)(decoder, index, which, h);
  }
  return h;
}

Tensor WhisperModel::block_linear(const Block& b, BlockLinear which, const Tensor& x) const {
  if (const LinearInputObserver* observe = ScopedLinearInputObserver::current()) {
    const auto [decoder, index] = block_position(b);
    (*observe)(decoder, index, which, x);
  }
  const Linear& l = which == BlockLinear::kQkv          ? b.qkv
                    : which == BlockLinear::kAttnOut    ? b.attn_out
                    : which == BlockLinear::kCrossQuery ? b.cross_q
                    : which == BlockLinear::kCrossKv    ? b.cross_kv
                    : which == BlockLinear::kCrossOut   ? b.cross_out
                    : which == BlockLinear::kFc1        ? b.fc1
                                                        : b.fc2;
  return ops::linear(x, l.w, l.scale, l.b);
}

// Pre-LN bidirectional self-attention sub-block of the encoder: x + out(attn(qkv(ln(x)))).
Tensor WhisperModel::encoder_attention(const Block& b, const Tensor& x) const {
  const int64_t n = x.dim(0), d = x.dim(1);
  const Tensor h = block_norm(b, BlockNorm::kAttention, x);
  const Tensor qkv = block_linear(b, BlockLinear::kQkv, h);  // [n, 3d]
  const Tensor a = ops::attention({&qkv, 0, n}, {&qkv, d, n}, {&qkv, 2 * d, n}, d, dims().n_audio_head, false, 0);
  Tensor y = block_linear(b, BlockLinear::kAttnOut, a);
  ops::add_(y, x);
  return y;
}

// Pre-LN feed-forward sub-block, in place: x += fc2(GELU(fc1(ln(x)))).
void WhisperModel::feed_forward(const Block& b, Tensor& x) const {
  const Tensor h = block_norm(b, BlockNorm::kFeedForward, x);
  Tensor f = block_linear(b, BlockLinear::kFc1, h);  // [n, 4d]
  ops::gelu_(f);
  const Tensor y = block_linear(b, BlockLinear::kFc2, f);
  ops::add_(x, y);
}

Tensor WhisperModel::encode(const Tensor& mel) const {
  const auto& d = dims();
  if (mel.rank() != 2 || mel.dim(0) != d.n_mels || mel.dim(1) != 2 * d.n_audio_ctx) {
    throw InvalidArgument("encoder input must be [" + std::to_string(d.n_mels) + ", " +
                          std::to_string(2 * d.n_audio_ctx) + "], got " + mel.describe());
  }
  // The convolutions run time-major: [frames, mels].
  const int64_t frames = mel.dim(1);
  Tensor xt = Tensor::empty({frames, d.n_mels}, DType::kF32);
  const float* src = mel.data<float>();
  float* dst = xt.data<float>();
  for (int64_t c = 0; c < d.n_mels; ++c) {
    for (int64_t t = 0; t < frames; ++t) dst[t * d.n_mels + c] = src[c * frames + t];
  }
  Tensor x = ops::conv1d_gelu(xt, conv1_.w, conv1_.b, 1);  // [3000, d]
  x = ops::conv1d_gelu(x, conv2_.w, conv2_.b, 2);          // [1500, d]
  ops::add_(x, enc_pos_);
  for (const Block& b : enc_) {
    x = encoder_attention(b, x);
    feed_forward(b, x);
  }
  return ops::layer_norm(x, ln_post_.gamma, ln_post_.beta);
}

CrossKV WhisperModel::cross_kv(const Tensor& features) const {
  CrossKV c;
  c.kv.reserve(dec_.size());
  for (const Block& b : dec_) {
    c.kv.push_back(block_linear(b, BlockLinear::kCrossKv, features));
  }
  return c;
}

KVCache WhisperModel::new_cache() const {
  if (device_) return device_->new_cache();
  return host_cache();
}

KVCache WhisperModel::host_cache() const {
  KVCache c;
  const auto& d = dims();
  for (int i = 0; i < d.n_text_layer; ++i) {
    c.k.push_back(Tensor::zeros({d.n_text_ctx, d.n_text_state}, DType::kF32));
    c.v.push_back(Tensor::zeros({d.n_text_ctx, d.n_text_state}, DType::kF32));
  }
  return c;
}

Tensor WhisperModel::decode(std::span<const int> tokens, const CrossKV& cross, KVCache& cache) const {
  if (cross.device || cache.device) throw InternalError("decode: device state has no host hidden states");
  return decoder_forward(tokens, cross, cache, {}, nullptr);
}

CrossAttention WhisperModel::cross_attention_weights(std::span<const int> tokens, const CrossKV& cross,
                                                     std::span<const std::pair<int, int>> heads) const {
  // The alignment pass runs on the CPU: a device window is copied back first.
  if (cross.device) return cross_attention_weights(tokens, device_->to_host(cross), heads);
  const auto& d = dims();
  for (const auto& [layer, head] : heads) {
    if (layer < 0 || layer >= d.n_text_layer || head < 0 || head >= d.n_text_head) {
      throw InvalidArgument("cross-attention head (" + std::to_string(layer) + ", " + std::to_string(head) +
                            ") out of range");
    }
  }
  KVCache cache = host_cache();
  CrossAttention out;
  out.scores.resize(heads.size());
  out.hidden = decoder_forward(tokens, cross, cache, heads, &out.scores);
  return out;
}

Tensor WhisperModel::embed(std::span<const int> tokens, int64_t position, int64_t step) const {
  const auto& d = dims();
  const int64_t width = d.n_text_state;
  Tensor x = Tensor::empty({static_cast<int64_t>(tokens.size()), width}, DType::kF32);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int tok = tokens[i];
    if (tok < 0 || tok >= d.n_vocab) throw InvalidArgument("token id " + std::to_string(tok) + " out of range");
    const Tensor row = ops::to_f32(token_embedding_.rows(tok, tok + 1));
    const float* e = row.data<float>();
    const float* p = dec_pos_.data<float>() + (position + static_cast<int64_t>(i) * step) * width;
    float* xi = x.data<float>() + static_cast<int64_t>(i) * width;
    for (int64_t j = 0; j < width; ++j) xi[j] = e[j] + p[j];
  }
  return x;
}

Tensor WhisperModel::decoder_forward(std::span<const int> tokens, const CrossKV& cross, KVCache& cache,
                                     std::span<const std::pair<int, int>> heads, std::vector<Tensor>* scores) const {
  const auto& d = dims();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t width = d.n_text_state;
  const int64_t past = cache.length;
  if (n == 0) throw InvalidArgument("decode needs at least one token");
  if (past + n > d.n_text_ctx) {
    throw InvalidArgument("token sequence longer than the decoder context (" + std::to_string(d.n_text_ctx) + ")");
  }
  if (cross.kv.size() != dec_.size()) throw InvalidArgument("cross-attention K/V of another model");

  Tensor x = embed(tokens, past, 1);  // [n, d]

  for (size_t l = 0; l < dec_.size(); ++l) {
    const Block& b = dec_[l];
    {  // causal self-attention over the cache
      const Tensor h = block_norm(b, BlockNorm::kAttention, x);
      const Tensor qkv = block_linear(b, BlockLinear::kQkv, h);  // [n, 3d]
      ops::copy_rows({&qkv, width, n}, width, cache.k[l], past);
      ops::copy_rows({&qkv, 2 * width, n}, width, cache.v[l], past);
      const Tensor a = ops::attention({&qkv, 0, n}, {&cache.k[l], 0, past + n}, {&cache.v[l], 0, past + n}, width,
                                      d.n_text_head, true, past);
      Tensor y = block_linear(b, BlockLinear::kAttnOut, a);
      ops::add_(x, y);
    }
    {  // cross-attention over the window's precomputed keys/values
      const Tensor h = block_norm(b, BlockNorm::kCrossAttention, x);
      const Tensor q = block_linear(b, BlockLinear::kCrossQuery, h);  // [n, d]
      const Tensor& kv = cross.kv[l];                                 // [n_audio_ctx, 2d]
      const Tensor a =
          ops::attention({&q, 0, n}, {&kv, 0, kv.dim(0)}, {&kv, width, kv.dim(0)}, width, d.n_text_head, false, 0);
      for (size_t i = 0; scores && i < heads.size(); ++i) {
        if (heads[i].first != static_cast<int>(l)) continue;
        (*scores)[i] = ops::attention_scores({&q, 0, n}, {&kv, 0, kv.dim(0)}, width, d.n_text_head, heads[i].second);
      }
      Tensor y = block_linear(b, BlockLinear::kCrossOut, a);
      ops::add_(x, y);
    }
    feed_forward(b, x);
  }
  cache.length = past + n;
  return ops::layer_norm(x, dec_ln_.gamma, dec_ln_.beta);
}

Tensor WhisperModel::logits(const Tensor& hidden) const { return ops::linear(hidden, token_embedding_, Tensor()); }

}  // namespace wisp::model
