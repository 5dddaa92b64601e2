// calibrate_kv_cache (wisp/calibrate.h) over clips in memory. The model runs behind a HostBackend: a
// model::DeviceBackend that computes on the CPU with a second, plain WhisperModel over the same file and sees every K/V
// row it produces, so the measured caches are exactly those of a real transcription (prompts, the decoded tokens, every
// window of the seek loop). The same backend can round those rows as the GPU's int8 / FP8 caches store them
// (make_rounding_backend), to measure their accuracy on the CPU. The calibration also watches the block norms'
// outputs of that network (model::ScopedNormObserver) for the input statistics of activation-aware quantisation.
#include "pipeline/kv_calibration.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "format/engine_file.h"
#include "format/tensor_names.h"
#include "model/whisper.h"
#include "ops/ops.h"
#include "pipeline/model_access.h"
#include "wisp/calibrate.h"
#include "wisp/errors.h"

namespace wisp {

namespace {

using core::DType;
using core::Tensor;

struct HostWindow final : model::DeviceState {
  model::CrossKV kv;
};
struct HostCache final : model::DeviceState {
  model::KVCache kv;
};
struct HostBatch final : model::DeviceState {
  model::BatchKVCache kv;
};

template <class T>
T& host(const std::shared_ptr<model::DeviceState>& state) {
  auto* s = dynamic_cast<T*>(state.get());
  if (!s) throw InternalError("host backend: state of another backend");
  return *s;
}

class HostBackend final : public model::DeviceBackend {
 public:
  HostBackend(const std::string& path, KvRounding rounding)
      : net_(model::WhisperModel::load(path)), rounding_(rounding) {
    const auto& d = net_->dims();
    heads_ = d.n_text_head;
    head_dim_ = d.n_text_state / d.n_text_head;
    self_amax_.assign(size_t(d.n_text_layer), std::vector<float>(2 * size_t(heads_), 0.0f));
    cross_amax_ = self_amax_;
    if (rounding_ == KvRounding::kInt8 || rounding_ == KvRounding::kFp8) {
      // the calibrated scales, as the GPU backend derives them (runtime/gpu_whisper.cpp, set_kv_cache)
      const float top = rounding_ == KvRounding::kInt8 ? 127.0f : 448.0f;
      for (int l = 0; l < d.n_text_layer; ++l) {
        for (const bool cross : {false, true}) {
          const std::string name = format::names::kv_amax(l, cross);
          std::vector<float> scale(2 * size_t(heads_), 1.0f);  // FP8 without calibration: scale 1
          Tensor t;
          try {
            t = net_->stored_tensor(name);
          } catch (const ModelError&) {  // an uncalibrated file: no such tensor
            if (rounding_ == KvRounding::kInt8) {
              throw InvalidArgument("the int8 KV cache needs calibrated scales: run `wisp calibrate` on this model");
            }
          }
          if (t.defined()) {
            if (t.numel() != 2 * heads_ || t.dtype() != DType::kF32) throw ModelError(name + " is " + t.describe());
            for (size_t g = 0; g < scale.size(); ++g) scale[g] = t.data<float>()[g] / top;
          }
          (cross ? cross_scale_ : self_scale_).push_back(std::move(scale));
        }
      }
    }
  }

  std::string name() const override {
    static const char* kNames[] = {"cpu (recording K/V maxima)", "cpu (K/V rounded as int8)",
                                   "cpu (K/V rounded as int8-dynamic)", "cpu (K/V rounded as fp8)"};
    return kNames[static_cast<int>(rounding_)];
  }

  model::CrossKV encode_window(const Tensor& mel) override {
    auto w = std::make_shared<HostWindow>();
    w->backend = this;
    w->kv = net_->cross_kv(net_->encode(mel));
    for (size_t l = 0; l < w->kv.kv.size(); ++l) visit(l, true, w->kv.kv[l], 0, w->kv.kv[l].dim(0), 0);
    ++windows_;
    model::CrossKV c;
    c.device = std::move(w);
    return c;
  }

  model::KVCache new_cache() override {
    auto c = std::make_shared<HostCache>();
    c->backend = this;
    c->kv = net_->new_cache();
    model::KVCache out;
    out.device = std::move(c);
    return out;
  }

  Tensor decode_logits(std::span<const int> tokens, const model::CrossKV& cross, model::KVCache& cache,
                       std::span<const int64_t> rows) override {
    model::KVCache& kv = host<HostCache>(cache.device).kv;
    kv.length = cache.length;  // copies of a cache share the rows, each has its own length
    const int64_t start = kv.length;
    const Tensor logits = net_->decode_logits(tokens, host<HostWindow>(cross.device).kv, kv, rows);
    for (size_t l = 0; l < kv.k.size(); ++l) {
      visit(l, false, kv.k[l], start, kv.length, 0);
      visit(l, false, kv.v[l], start, kv.length, heads_);
    }
    tokens_ += kv.length - start;
    cache.length = kv.length;
    return logits;
  }

  model::BatchKVCache new_batch_cache(int64_t capacity) override {
    auto b = std::make_shared<HostBatch>();
    b->backend = this;
    b->kv = net_->new_batch_cache(capacity);
    model::BatchKVCache out;
    out.capacity = capacity;
    out.stride = b->kv.stride;
    out.device = std::move(b);
    return out;
  }

  Tensor decode_batch_logits(std::span<const int> tokens, const model::CrossKV& cross,
                             model::BatchKVCache& cache) override {
    model::BatchKVCache& kv = sync(cache);
    const Tensor logits = net_->decode_batch_logits(tokens, host<HostWindow>(cross.device).kv, kv);
    for (size_t l = 0; l < kv.k.size(); ++l) {
      for (int64_t b = 0; b < kv.batch; ++b) {
        const int64_t row = b * kv.stride + kv.length - 1;
        visit(l, false, kv.k[l], row, row + 1, 0);
        visit(l, false, kv.v[l], row, row + 1, heads_);
      }
    }
    tokens_ += kv.batch;
    cache.length = kv.length;
    return logits;
  }

  void broadcast_cache(const model::KVCache& prompt, model::BatchKVCache& cache, int64_t batch) override {
    model::KVCache p = host<HostCache>(prompt.device).kv;
    p.length = prompt.length;
    model::BatchKVCache& kv = sync(cache);
    model::broadcast_cache(p, kv, batch);
    cache.batch = kv.batch, cache.length = kv.length;
  }

  void reorder_cache(model::BatchKVCache& cache, std::span<const int> origins) override {
    model::BatchKVCache& kv = sync(cache);
    model::reorder_cache(kv, origins);
    cache.batch = kv.batch;
  }

  model::CrossKV to_host(const model::CrossKV& cross) override { return host<HostWindow>(cross.device).kv; }

  const std::vector<std::vector<float>>& self_amax() const { return self_amax_; }
  const std::vector<std::vector<float>>& cross_amax() const { return cross_amax_; }
  int windows() const { return windows_; }
  long tokens() const { return tokens_; }

 private:
  // The host copy with the outer cache's batch and length (the outer struct is authoritative).
  static model::BatchKVCache& sync(model::BatchKVCache& cache) {
    model::BatchKVCache& kv = host<HostBatch>(cache.device).kv;
    kv.batch = cache.batch;
    kv.length = cache.length;
    return kv;
  }

  // Every K/V row the model writes passes here once: rows [r0, r1) of x, a window's cross-K/V (`cross`: K
  // heads in columns [0, d), V heads in [d, 2d)) or one layer's K or V cache (`offset` 0 for K, n_head for V:
  // the head groups' index into the [2·n_head] maxima and scales). Records the maxima and, when rounding,
  // replaces every head's 64 values by what the GPU cache would hold. (On the GPU a token's own K/V row is
  // rounded before its own step reads it; here only later steps see the rounded row.)
  void visit(size_t layer, bool cross, Tensor& x /* [rows, d] or [rows, 2d] */, int64_t r0, int64_t r1, int offset) {
    std::vector<float>& amax = (cross ? cross_amax_ : self_amax_)[layer];
    const int64_t width = x.dim(1), groups = width / head_dim_;
    for (int64_t r = r0; r < r1; ++r) {
      float* row = x.data<float>() + r * width;
      for (int64_t g = 0; g < groups; ++g) {
        float* v = row + g * head_dim_;
        const size_t group = size_t(offset + g);
        float peak = 0.0f;
        for (int64_t j = 0; j < head_dim_; ++j) peak = std::max(peak, std::fabs(v[j]));
        amax[group] = std::max(amax[group], peak);
        if (rounding_ == KvRounding::kNone) continue;
        const float scale =
            rounding_ == KvRounding::kInt8Dynamic ? peak / 127.0f : (cross ? cross_scale_ : self_scale_)[layer][group];
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;  // the GPU's reciprocal, rounded once
        for (int64_t j = 0; j < head_dim_; ++j) {
          const float code = rounding_ == KvRounding::kFp8 ? round_e4m3(v[j] * inv)
                                                           : std::clamp(std::nearbyint(v[j] * inv), -127.0f, 127.0f);
          v[j] = code * scale;
        }
      }
    }
  }

  std::shared_ptr<const model::WhisperModel> net_;
  int64_t heads_ = 0, head_dim_ = 0;
  KvRounding rounding_;
  std::vector<std::vector<float>> self_amax_, cross_amax_;    // per layer [2·n_head]
  std::vector<std::vector<float>> self_scale_, cross_scale_;  // per layer [2·n_head], static rounding only
  int windows_ = 0;
  long tokens_ = 0;
};

// A place in the model that the calibration statistics below are kept per: a norm or a linear layer of a block.
template <class Part>
struct BlockKey {
  bool decoder;
  int block;
  Part part;
  bool operator<(const BlockKey& o) const {
    return std::tie(decoder, block, part) < std::tie(o.decoder, o.block, o.part);
  }
};

// Per-column mean |x| and mean x² of the block norms' outputs (format::names::norm_stats), over every row the
// recording backend's network normalises: the inputs of attn.qkv, cross_attn.query and mlp.fc1.
class NormStats {
 public:
  void add(bool decoder, int block, model::BlockNorm norm, const Tensor& rows /* [n, d] f32 */) {
    Sums& s = sums_[Key{decoder, block, norm}];
    const int64_t n = rows.dim(0), d = rows.dim(1);
    if (s.abs.empty()) s.abs.assign(size_t(d), 0.0), s.sq.assign(size_t(d), 0.0);
    const float* x = rows.data<float>();
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < d; ++c) {
        const double v = x[r * d + c];
        s.abs[size_t(c)] += std::fabs(v);
        s.sq[size_t(c)] += v * v;
      }
    }
    s.rows += n;
  }

  void write(format::EngineWriter& out) const {
    for (const auto& [key, s] : sums_) {
      const auto d = int64_t(s.abs.size());
      Tensor t = Tensor::empty({2, d}, DType::kF32);
      for (int64_t c = 0; c < d; ++c) {
        t.data<float>()[c] = float(s.abs[size_t(c)] / double(s.rows));
        t.data<float>()[d + c] = float(s.sq[size_t(c)] / double(s.rows));
      }
      const char* norm = format::names::kNormedLinears[static_cast<int>(key.part)].norm;
      out.add_tensor(format::names::norm_stats(key.decoder ? "decoder" : "encoder", key.block, norm), t);
    }
  }

 private:
  using Key = BlockKey<model::BlockNorm>;
  struct Sums {
    std::vector<double> abs, sq;  // [d]
    int64_t rows = 0;
  };
  std::map<Key, Sums> sums_;
};

// The Gram matrix E[x xᵀ] of every block linear layer's inputs: the second-order statistics GPTQ rounds with.
class InputGrams {
 public:
  void add(bool decoder, int block, model::BlockLinear linear, const Tensor& rows /* [n, in] f32 */) {
    Sums& s = sums_[Key{decoder, block, linear}];
    if (!s.gram.defined()) s.gram = Tensor::zeros({rows.dim(1), rows.dim(1)}, DType::kF32);
    ops::add_gram_upper(rows, s.gram);
    s.rows += rows.dim(0);
  }

  void write(format::EngineWriter& out) const {
    for (const auto& [key, s] : sums_) {
      const int64_t k = s.gram.dim(0);
      Tensor t = Tensor::empty({k, k}, DType::kF32);
      const float* g = s.gram.data<float>();
      for (int64_t i = 0; i < k; ++i) {
        for (int64_t j = i; j < k; ++j) {
          t.data<float>()[i * k + j] = t.data<float>()[j * k + i] = float(double(g[i * k + j]) / double(s.rows));
        }
      }
      const char* linear = format::names::kBlockLinears[static_cast<int>(key.part)].linear;
      out.add_tensor(format::names::input_gram(key.decoder ? "decoder" : "encoder", key.block, linear), t);
    }
  }

 private:
  using Key = BlockKey<model::BlockLinear>;
  struct Sums {
    Tensor gram;  // [in, in], upper triangle: Σ x xᵀ
    int64_t rows = 0;
  };
  std::map<Key, Sums> sums_;
};

}  // namespace

float round_e4m3(float x) {
  const float a = std::fabs(x);
  if (!(a > 0.0f)) return x == x ? 0.0f : x;
  if (a >= 448.0f) return std::copysign(448.0f, x);
  const int e = std::max(std::ilogb(a), -6);   // the exponent of the binade (subnormals share -6's step)
  const float step = std::ldexp(1.0f, e - 3);  // 3 mantissa bits
  return std::copysign(std::min(std::nearbyint(a / step) * step, 448.0f), x);
}

std::unique_ptr<model::DeviceBackend> make_recording_backend(const std::string& model_path) {
  return std::make_unique<HostBackend>(model_path, KvRounding::kNone);
}

std::unique_ptr<model::DeviceBackend> make_rounding_backend(const std::string& model_path, KvRounding rounding) {
  return std::make_unique<HostBackend>(model_path, rounding);
}

CalibrationResult calibrate_kv_cache_on(const std::string& model_path, size_t n_clips,
                                        const std::function<std::vector<float>(size_t)>& clip,
                                        const std::string& out_path, const CalibrateOptions& options) {
  if (n_clips == 0) throw InvalidArgument("calibration needs at least one audio file");
  HostBackend* recorder = nullptr;
  auto net = model::WhisperModel::load(model_path, [&](const model::WhisperModel& m) {
    auto b = std::make_unique<HostBackend>(m.path(), KvRounding::kNone);
    recorder = b.get();
    return b;
  });
  const auto model = ModelAccess::wrap(net);
  TranscribeOptions greedy;
  greedy.beam_size = 1;
  greedy.temperatures = {0.0};
  CalibrationResult result;
  NormStats norms;
  InputGrams grams;
  {
    // The recording backend's network runs on this thread: its block norms' outputs and (input_grams) its linear
    // layers' inputs pass through here.
    const model::ScopedNormObserver observer([&](bool decoder, int block, model::BlockNorm norm, const Tensor& rows) {
      norms.add(decoder, block, norm, rows);
    });
    std::optional<model::ScopedLinearInputObserver> inputs;
    if (options.input_grams) {
      inputs.emplace([&](bool decoder, int block, model::BlockLinear linear, const Tensor& rows) {
        grams.add(decoder, block, linear, rows);
      });
    }
    for (size_t i = 0; i < n_clips; ++i) {
      model->transcribe(clip(i), greedy);
      ++result.clips;
    }
  }
  result.windows = recorder->windows();
  result.tokens = recorder->tokens();

  const format::EngineFile in = format::EngineFile::open(model_path);
  format::EngineWriter out;
  format::ModelMetadata meta = in.metadata();
  meta.source["kv_calibration"] = std::to_string(result.clips) + " clips, " + std::to_string(result.windows) +
                                  " windows, " + std::to_string(result.tokens) + " decoder positions";
  out.set_metadata(meta);
  out.set_vocabulary(in.vocabulary());
  // Everything but earlier measurements and the vocabulary's own tensors (the writer stores the vocabulary itself).
  auto ends_with = [](const std::string& name, const std::string& tail) {
    return name.size() > tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  };
  auto keep = [&](const std::string& name) {
    return !ends_with(name, ".kv_amax") && !ends_with(name, ".output_stats") && !ends_with(name, ".input_gram") &&
           name.rfind("tokenizer.", 0) != 0;
  };
  for (const format::TensorEntry& e : in.entries()) {
    if (keep(e.name)) out.add_tensor(e.name, in.tensor(e.name));
  }
  const int64_t h2 = 2 * int64_t(net->dims().n_text_head);
  for (size_t l = 0; l < recorder->self_amax().size(); ++l) {
    for (const bool cross : {false, true}) {
      const std::vector<float>& amax = (cross ? recorder->cross_amax() : recorder->self_amax())[l];
      Tensor t = Tensor::empty({h2}, DType::kF32);
      std::copy(amax.begin(), amax.end(), t.data<float>());
      out.add_tensor(format::names::kv_amax(static_cast<int>(l), cross), t);
    }
  }
  norms.write(out);
  grams.write(out);
  out.write(out_path);
  return result;
}

}  // namespace wisp
