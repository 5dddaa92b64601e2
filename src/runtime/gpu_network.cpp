// GpuNetwork (gpu_network.h): model::DeviceBackend over GpuWhisper's slots. A CrossKV or cache created here
// holds a Slot (its window or sequence slots); the slot returns to the pool when the last copy goes away.
// Calls are serialised by one mutex: one transcription at a time per model on the device.
#include "runtime/gpu_network.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/gpu_whisper.h"
#include "runtime/reorder_plan.h"
#include "wisp/errors.h"

namespace wisp::runtime {

namespace {

using core::DType;
using core::Tensor;

// Which slots are taken. Shared with the Slot handles, so a handle that outlives the backend stays harmless.
struct SlotPool {
  std::mutex mu;
  std::vector<bool> windows, sequences;

  // First run of `count` free slots, or -1.
  static int take(std::vector<bool>& used, int count) {
    const int n = static_cast<int>(used.size());
    for (int first = 0; first + count <= n; ++first) {
      const auto b = used.begin() + first;
      if (std::none_of(b, b + count, [](bool u) { return u; })) {
        std::fill(b, b + count, true);
        return first;
      }
    }
    return -1;
  }
};

struct Slot final : model::DeviceState {
  std::shared_ptr<SlotPool> pool;
  bool window = false;  // a window slot (else sequence slots)
  int first = 0, count = 0;
  ~Slot() override {
    std::lock_guard<std::mutex> lock(pool->mu);
    auto& used = window ? pool->windows : pool->sequences;
    std::fill(used.begin() + first, used.begin() + first + count, false);
  }
};

class GpuNetwork final : public model::DeviceBackend {
 public:
  GpuNetwork(const model::WhisperModel& m, const GpuNetworkOptions& o) : n_vocab_(m.dims().n_vocab) {
    const auto& md = m.dims();
    dims_.n_mels = md.n_mels, dims_.n_vocab = md.n_vocab, dims_.n_audio_ctx = md.n_audio_ctx;
    dims_.n_audio_state = md.n_audio_state, dims_.n_audio_head = md.n_audio_head;
    dims_.n_audio_layer = md.n_audio_layer, dims_.n_text_ctx = md.n_text_ctx, dims_.n_text_state = md.n_text_state;
    dims_.n_text_head = md.n_text_head, dims_.n_text_layer = md.n_text_layer;
    gpu_ = GpuWhisper::create(
        dims_, GpuWhisper::Capacity{o.windows, o.sequences},
        [&m](const std::string& name) { return m.stored_tensor(name); }, o.kv_cache);
    pool_ = std::make_shared<SlotPool>();
    pool_->windows.assign(size_t(o.windows), false);
    pool_->sequences.assign(size_t(o.sequences), false);
    name_ = "cuda (" + gpu_->device_name() + ")";
  }

  std::string name() const override { return name_; }

  model::CrossKV encode_window(const Tensor& mel) override {
    if (mel.rank() != 2 || mel.dim(0) != dims_.n_mels || mel.dim(1) != 2 * dims_.n_audio_ctx ||
        mel.dtype() != DType::kF32) {
      throw InvalidArgument("encoder input must be f32 [" + std::to_string(dims_.n_mels) + ", " +
                            std::to_string(2 * dims_.n_audio_ctx) + "], got " + mel.describe());
    }
    std::lock_guard<std::mutex> lock(mu_);
    model::CrossKV c;
    auto slot = take(true, 1);
    gpu_->encode_window(mel.data<float>(), slot->first);
    c.device = std::move(slot);
    return c;
  }

  model::KVCache new_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    model::KVCache c;
    c.device = take(false, 1);
    return c;
  }

  Tensor decode_logits(std::span<const int> tokens, const model::CrossKV& cross, model::KVCache& cache,
                       std::span<const int64_t> rows) override {
    const int n = static_cast<int>(tokens.size());
    if (n == 0) throw InvalidArgument("decode: no tokens");
    if (cache.length + n > dims_.n_text_ctx) {
      throw InvalidArgument("token sequence longer than the decoder context (" + std::to_string(dims_.n_text_ctx) +
                            ")");
    }
    std::lock_guard<std::mutex> lock(mu_);
    const int window = slot_of(cross.device).first, seq = slot_of(cache.device).first;
    Tensor out = Tensor::empty({static_cast<int64_t>(rows.size()), n_vocab_}, DType::kF32);
    const int start = static_cast<int>(cache.length);
    if (n == 1) {
      // One token: the graph-captured step (a greedy decoding step). Every requested row is that token's.
      gpu_->step_window(window, seq, 1, tokens.data(), start, out.data<float>());
      for (size_t r = 1; r < rows.size(); ++r) {
        std::memcpy(out.data<float>() + static_cast<int64_t>(r) * n_vocab_, out.data<float>(),
                    static_cast<size_t>(n_vocab_) * sizeof(float));
      }
    } else {
      std::vector<int> r(rows.begin(), rows.end());
      gpu_->prefill(window, seq, tokens.data(), n, start, r.data(), static_cast<int>(r.size()), out.data<float>());
    }
    cache.length += n;
    return out;
  }

  model::BatchKVCache new_batch_cache(int64_t capacity) override {
    std::lock_guard<std::mutex> lock(mu_);
    model::BatchKVCache c;
    c.capacity = capacity;
    c.stride = dims_.n_text_ctx;
    c.device = take(false, static_cast<int>(capacity));
    return c;
  }

  Tensor decode_batch_logits(std::span<const int> tokens, const model::CrossKV& cross,
                             model::BatchKVCache& cache) override {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0 || n != cache.batch) {
      throw InvalidArgument("decode_batch: " + std::to_string(n) + " tokens for a batch of " +
                            std::to_string(cache.batch));
    }
    if (cache.length + 1 > dims_.n_text_ctx) {
      throw InvalidArgument("token sequence longer than the decoder context (" + std::to_string(dims_.n_text_ctx) +
                            ")");
    }
    std::lock_guard<std::mutex> lock(mu_);
    const int window = slot_of(cross.device).first, seq = slot_of(cache.device).first;
    Tensor out = Tensor::empty({n, n_vocab_}, DType::kF32);
    gpu_->step_window(window, seq, static_cast<int>(n), tokens.data(), static_cast<int>(cache.length),
                      out.data<float>());
    cache.length += 1;
    return out;
  }

  void broadcast_cache(const model::KVCache& prompt, model::BatchKVCache& cache, int64_t batch) override {
    if (batch <= 0 || batch > cache.capacity) {
      throw InvalidArgument("broadcast_cache: batch of " + std::to_string(batch) + " for a cache of " +
                            std::to_string(cache.capacity));
    }
    std::lock_guard<std::mutex> lock(mu_);
    const int from = slot_of(prompt.device).first, first = slot_of(cache.device).first;
    std::vector<int> src(static_cast<size_t>(batch), from), dst(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) dst[static_cast<size_t>(b)] = first + static_cast<int>(b);
    gpu_->copy_sequences(src.data(), dst.data(), static_cast<int>(batch), static_cast<int>(prompt.length));
    cache.batch = batch;
    cache.length = prompt.length;
  }

  // Sequence i ← sequence origins[i] (reorder_plan.h: overwritten sources go to spare slots first).
  void reorder_cache(model::BatchKVCache& cache, std::span<const int> origins) override {
    const int n = static_cast<int>(origins.size());
    if (n > cache.batch) throw InvalidArgument("reorder_cache: more sequences than the batch holds");
    for (int o : origins) {
      if (o < 0 || o >= cache.batch) throw InvalidArgument("reorder_cache: origin out of the batch");
    }
    std::lock_guard<std::mutex> lock(mu_);
    const int first = slot_of(cache.device).first, length = static_cast<int>(cache.length);
    const ReorderPlan plan = plan_reorder(origins, static_cast<int>(cache.batch));
    std::shared_ptr<Slot> spare;
    std::vector<int> src, dst;
    if (!plan.saves.empty()) {
      spare = take(false, static_cast<int>(plan.saves.size()));
      for (size_t s = 0; s < plan.saves.size(); ++s) {
        src.push_back(first + plan.saves[s]);
        dst.push_back(spare->first + static_cast<int>(s));
      }
      gpu_->copy_sequences(src.data(), dst.data(), static_cast<int>(src.size()), length);
      src.clear(), dst.clear();
    }
    for (const ReorderPlan::Copy& c : plan.copies) {
      src.push_back(c.from_spare ? spare->first + c.from : first + c.from);
      dst.push_back(first + c.to);
    }
    if (!src.empty()) gpu_->copy_sequences(src.data(), dst.data(), static_cast<int>(src.size()), length);
    cache.batch = n;
  }

  model::CrossKV to_host(const model::CrossKV& cross) override {
    std::lock_guard<std::mutex> lock(mu_);
    model::CrossKV c;
    for (std::vector<float>& layer : gpu_->cross_kv_host(slot_of(cross.device).first)) {
      Tensor t = Tensor::empty({dims_.n_audio_ctx, 2 * dims_.n_text_state}, DType::kF32);
      std::memcpy(t.data<float>(), layer.data(), layer.size() * sizeof(float));
      c.kv.push_back(std::move(t));
    }
    return c;
  }

 private:
  std::shared_ptr<Slot> take(bool window, int count) {
    std::lock_guard<std::mutex> lock(pool_->mu);
    const int first = SlotPool::take(window ? pool_->windows : pool_->sequences, count);
    if (first < 0) {
      throw InvalidArgument(std::string("the GPU backend has no ") + std::to_string(count) + " free " +
                            (window ? "window" : "sequence") + " slot(s) left (beam size or best-of too large?)");
    }
    auto s = std::make_shared<Slot>();
    s->backend = this;
    s->pool = pool_;
    s->window = window;
    s->first = first;
    s->count = count;
    return s;
  }
  const Slot& slot_of(const std::shared_ptr<model::DeviceState>& state) const {
    const auto* s = dynamic_cast<const Slot*>(state.get());
    if (!s || s->backend != this) throw InternalError("decode: state of another device backend");
    return *s;
  }

  GpuDims dims_;
  int64_t n_vocab_ = 0;
  std::unique_ptr<GpuWhisper> gpu_;
  std::shared_ptr<SlotPool> pool_;
  std::mutex mu_;
  std::string name_;
};

}  // namespace

std::unique_ptr<model::DeviceBackend> make_gpu_backend(const model::WhisperModel& model,
                                                       const GpuNetworkOptions& options) {
  return std::make_unique<GpuNetwork>(model, options);
}

}  // namespace wisp::runtime
