// GpuNetwork (gpu_network.h): model::DeviceBackend over GpuWhisper's slots. A CrossKV or cache created here
// holds a Slot (its window or sequence slots); the slot returns to the pool when the last copy goes away.
// Device calls are serialised by one mutex. Decode steps and windows go through a CallGatherer, so that the
// transcriptions running at once on other threads share one batched step (GpuWhisper::step_groups) and one
// encoder batch; the other calls mark their thread busy for the gatherer while they run.
#include "runtime/gpu_network.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/call_gatherer.h"
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

// The gathered calls (CallGatherer kinds).
enum Kind { kStep = 0, kEncode = 1 };

// One decode step of a group of sequences: the beams of one window, or one sequence.
struct StepRequest final : CallGatherer::Request {
  GpuWhisper::StepGroup group;
};
// One window through the encoder into its slot.
struct EncodeRequest final : CallGatherer::Request {
  const float* mel = nullptr;  // [n_mels, 2·n_audio_ctx]
  int window = 0;
};

class GpuNetwork final : public model::DeviceBackend {
 public:
  GpuNetwork(const model::WhisperModel& m, const GpuNetworkOptions& o)
      : n_vocab_(m.dims().n_vocab),
        device_choice_(o.device_token_choice),
        gatherer_({[this](const std::vector<CallGatherer::Request*>& r) { run_steps(r); },
                   [this](const std::vector<CallGatherer::Request*>& r) { run_encodes(r); }},
                  o.patience) {
    if (o.transcriptions < 1 || o.windows < 1 || o.sequences < 1) {
      throw InvalidArgument("the GPU backend needs at least one transcription, window and sequence");
    }

    const auto& md = m.dims();
    dims_.n_mels = md.n_mels, dims_.n_vocab = md.n_vocab, dims_.n_audio_ctx = md.n_audio_ctx;
    dims_.n_audio_state = md.n_audio_state, dims_.n_audio_head = md.n_audio_head;
    dims_.n_audio_layer = md.n_audio_layer, dims_.n_text_ctx = md.n_text_ctx, dims_.n_text_state = md.n_text_state;
    dims_.n_text_head = md.n_text_head, dims_.n_text_layer = md.n_text_layer;
    const auto source = [&m](const std::string& name) { return m.stored_tensor(name); };
    for (transcriptions_ = o.transcriptions;; transcriptions_ = std::max(1, transcriptions_ / 2)) {
      try {
        gpu_ =
            GpuWhisper::create(dims_, GpuWhisper::Capacity{o.windows * transcriptions_, o.sequences * transcriptions_},
                               source, o.kv_cache);
        break;
      } catch (const GpuOutOfMemory&) {
        if (transcriptions_ == 1) throw;
      }
    }
    gpu_->set_encoder_gelu(o.encoder_gelu);
    const int windows = o.windows * transcriptions_, sequences = o.sequences * transcriptions_;
    pool_ = std::make_shared<SlotPool>();
    pool_->windows.assign(size_t(windows), false);
    pool_->sequences.assign(size_t(sequences), false);
    name_ = "cuda (" + gpu_->device_name() + ")";
  }

  std::string name() const override { return name_; }

  model::CrossKV encode_window(const Tensor& mel) override {
    if (mel.rank() != 2 || mel.dim(0) != dims_.n_mels || mel.dim(1) != 2 * dims_.n_audio_ctx ||
        mel.dtype() != DType::kF32) {
      throw InvalidArgument("encoder input must be f32 [" + std::to_string(dims_.n_mels) + ", " +
                            std::to_string(2 * dims_.n_audio_ctx) + "], got " + mel.describe());
    }
    model::CrossKV c;
    auto slot = take(true, 1);
    EncodeRequest r;
    r.mel = mel.data<float>();
    r.window = slot->first;
    gatherer_.submit(kEncode, r);
    c.device = std::move(slot);
    return c;
  }

  std::shared_ptr<void> begin_transcription() override { return gatherer_.join(); }
  int concurrency() const override { return transcriptions_; }

  std::vector<float> log_mel(std::span<const float> samples) override {
    const auto busy = gatherer_.busy();
    std::lock_guard<std::mutex> lock(mu_);
    return gpu_->log_mel_host(samples.data(), static_cast<int64_t>(samples.size()));
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
    const int seq = slot_of(cache.device).first;
    Tensor out = logits_tensor(static_cast<int64_t>(rows.size()));
    if (n == 1) {
      // One token: a (gathered, graph-captured) step. Every requested row is that token's.
      step(tokens, cross, seq, cache.length, out.data<float>());
      for (size_t r = 1; r < rows.size(); ++r) {
        std::memcpy(out.data<float>() + static_cast<int64_t>(r) * n_vocab_, out.data<float>(),
                    static_cast<size_t>(n_vocab_) * sizeof(float));
      }
    } else {
      check_tokens(tokens);
      if (cache.length + n > dims_.n_text_ctx) {
        throw InvalidArgument("token sequence longer than the decoder context (" + std::to_string(dims_.n_text_ctx) +
                              ")");
      }
      const auto busy = gatherer_.busy();
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<int> r(rows.begin(), rows.end());
      gpu_->prefill(slot_of(cross.device).first, seq, tokens.data(), n, static_cast<int>(cache.length), r.data(),
                    static_cast<int>(r.size()), out.data<float>());
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
    Tensor out = logits_tensor(n);
    step(tokens, cross, slot_of(cache.device).first, cache.length, out.data<float>());
    cache.length += 1;
    return out;
  }

  model::TokenChoice decode_choose(int token, const model::CrossKV& cross, model::KVCache& cache,
                                   const model::TokenQuery& query) override {
    const int tokens[1] = {token};
    std::vector<model::TokenChoice> out = choose(tokens, cross, slot_of(cache.device).first, cache.length, {&query, 1});
    cache.length += 1;
    return std::move(out[0]);
  }

  std::vector<model::TokenChoice> decode_batch_choose(std::span<const int> tokens, const model::CrossKV& cross,
                                                      model::BatchKVCache& cache,
                                                      std::span<const model::TokenQuery> queries) override {
    if (tokens.empty() || static_cast<int64_t>(tokens.size()) != cache.batch || queries.size() != tokens.size()) {
      throw InvalidArgument("decode_batch: " + std::to_string(tokens.size()) + " tokens and " +
                            std::to_string(queries.size()) + " queries for a batch of " + std::to_string(cache.batch));
    }
    std::vector<model::TokenChoice> out = choose(tokens, cross, slot_of(cache.device).first, cache.length, queries);
    cache.length += 1;
    return out;
  }

  void broadcast_cache(const model::KVCache& prompt, model::BatchKVCache& cache, int64_t batch) override {
    if (batch <= 0 || batch > cache.capacity) {
      throw InvalidArgument("broadcast_cache: batch of " + std::to_string(batch) + " for a cache of " +
                            std::to_string(cache.capacity));
    }
    const auto busy = gatherer_.busy();
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
    const auto busy = gatherer_.busy();
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
    const auto busy = gatherer_.busy();
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
  // Before a request joins a batch (step(), prefill): token ids of the vocabulary.
  void check_tokens(std::span<const int> tokens) const {
    for (int t : tokens) {
      if (t < 0 || t >= n_vocab_) throw InvalidArgument("decode: token id " + std::to_string(t) + " out of range");
    }
  }

  // One gathered decode step: tokens[b] appended to sequence slot seq + b (each holding `length` tokens) over
  // the window of `cross`; logits [tokens, n_vocab] receive the rows' logits, or, with queries, choices
  // [tokens] their answers (GpuWhisper::StepGroup). Checked here first, so that a bad request fails alone
  // instead of the other transcriptions' step with it.
  void step(std::span<const int> tokens, const model::CrossKV& cross, int seq, int64_t length, float* logits,
            std::span<const model::TokenQuery> queries = {}, model::TokenChoice* choices = nullptr) {
    if (length + 1 > dims_.n_text_ctx) {
      throw InvalidArgument("token sequence longer than the decoder context (" + std::to_string(dims_.n_text_ctx) +
                            ")");
    }
    check_tokens(tokens);
    for (const model::TokenQuery& q : queries) {
      if (q.top < 1) throw InvalidArgument("choose_tokens: at least one token must be asked for");
    }
    StepRequest r;
    r.group = GpuWhisper::StepGroup{slot_of(cross.device).first, seq,           static_cast<int>(tokens.size()),
                                    static_cast<int>(length),    tokens.data(), logits};
    if (choices) {
      r.group.queries = queries.data();
      r.group.choices = choices;
    }
    gatherer_.submit(kStep, r);
  }

  // One step whose rows answer `queries`: on the device (unless device_token_choice is off), else, and for a
  // query beyond the device's limits, here from the logits that come back instead.
  std::vector<model::TokenChoice> choose(std::span<const int> tokens, const model::CrossKV& cross, int seq,
                                         int64_t length, std::span<const model::TokenQuery> queries) {
    Tensor logits = logits_tensor(static_cast<int64_t>(tokens.size()));
    std::vector<model::TokenChoice> out(tokens.size());
    step(tokens, cross, seq, length, logits.data<float>(), queries, device_choice_ ? out.data() : nullptr);
    for (size_t b = 0; b < out.size(); ++b) {
      if (!out[b].ids.empty()) continue;
      out[b] = model::choose_tokens({logits.data<float>() + b * size_t(n_vocab_), size_t(n_vocab_)}, queries[b]);
    }
    return out;
  }

  // [rows, n_vocab] f32 in page-locked memory (the step's logits are copied straight into it).
  Tensor logits_tensor(int64_t rows) {
    std::shared_ptr<float> buffer = pinned_.take(static_cast<size_t>(rows * n_vocab_));
    float* data = buffer.get();
    return Tensor::wrap(std::move(buffer), data, {rows, n_vocab_}, DType::kF32);
  }

  void run_steps(const std::vector<CallGatherer::Request*>& batch) {
    std::vector<GpuWhisper::StepGroup> groups;
    for (CallGatherer::Request* r : batch) groups.push_back(static_cast<StepRequest*>(r)->group);
    std::lock_guard<std::mutex> lock(mu_);
    gpu_->step_groups(groups.data(), static_cast<int>(groups.size()));
  }
  void run_encodes(const std::vector<CallGatherer::Request*>& batch) {
    const size_t per = size_t(dims_.n_mels) * 2 * size_t(dims_.n_audio_ctx);
    std::vector<float> mel(batch.size() * per);
    std::vector<int> windows;
    for (size_t i = 0; i < batch.size(); ++i) {
      const auto* r = static_cast<EncodeRequest*>(batch[i]);
      std::memcpy(mel.data() + i * per, r->mel, per * sizeof(float));
      windows.push_back(r->window);
    }
    std::lock_guard<std::mutex> lock(mu_);
    gpu_->encode_windows(mel.data(), windows.data(), static_cast<int>(windows.size()));
  }

  std::shared_ptr<Slot> take(bool window, int count) {
    std::lock_guard<std::mutex> lock(pool_->mu);
    const int first = SlotPool::take(window ? pool_->windows : pool_->sequences, count);
    if (first < 0) {
      throw InvalidArgument(std::string("the GPU backend has no ") + std::to_string(count) + " free " +
                            (window ? "window" : "sequence") +
                            " slot(s) left (more transcriptions at once than the model was loaded for, see "
                            "LoadOptions::concurrency, or a beam size or best-of too large?)");
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
  bool device_choice_ = true;  // GpuNetworkOptions::device_token_choice
  std::unique_ptr<GpuWhisper> gpu_;
  int transcriptions_ = 1;  // transcriptions with slots of their own
  std::shared_ptr<SlotPool> pool_;
  std::mutex mu_;  // one device call at a time
  CallGatherer gatherer_;
  PinnedBuffers pinned_;
  std::string name_;
};

}  // namespace

std::unique_ptr<model::DeviceBackend> make_gpu_backend(const model::WhisperModel& model,
                                                       const GpuNetworkOptions& options) {
  return std::make_unique<GpuNetwork>(model, options);
}

}  // namespace wisp::runtime
