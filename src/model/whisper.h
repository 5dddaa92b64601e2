// The Whisper network: encoder, cross-attention K/V precompute, and the decoder with a self-attention
// KV cache. It reads like the paper: each pass is a short composition of ops.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "format/engine_file.h"
#include "model/token_choice.h"

namespace wisp::model {

using core::Tensor;

struct Linear {
  Tensor w;      // [out, in] f32 or f16; weight-only quantised: int8 codes i8 [out, in] or int4 codes u8 [out, in / 2]
  Tensor scale;  // int8: f32 [out]; int4: f32 [out, in / group_size]; undefined for f32/f16 weights
  Tensor b;      // [out], f32 (undefined when the layer has no bias)
};
struct Norm {
  Tensor gamma;  // [d], f32
  Tensor beta;   // [d], f32
};

struct Block {
  Norm attn_ln;
  Linear qkv;  // fused query/key/value projection: [3d, d]
  Linear attn_out;
  Norm cross_ln;  // decoder blocks only
  Linear cross_q;
  Linear cross_kv;  // fused key/value projection of the audio features: [2d, d]
  Linear cross_out;
  Norm mlp_ln;
  Linear fc1;
  Linear fc2;
};

class DeviceBackend;

// State that lives on a device backend (a window's cross K/V, a cache's rows): what the backend needs to
// find it again. Released when the last CrossKV / cache holding it goes away.
struct DeviceState {
  virtual ~DeviceState() = default;
  DeviceBackend* backend = nullptr;  // the backend that owns it
};

// Keys and values of every decoder layer's cross-attention for one 30 s window: computed once right
// after the encoder, read at every decoding step.
struct CrossKV {
  std::vector<Tensor> kv;               // per layer [n_audio_ctx, 2 · d]: keys in columns [0, d), values in [d, 2d)
  std::shared_ptr<DeviceState> device;  // set (and kv empty) when the K/V live on a device backend
};

// Self-attention keys and values of the tokens decoded so far.
struct KVCache {
  std::vector<Tensor> k;                // per layer [n_text_ctx, d]
  std::vector<Tensor> v;                // per layer [n_text_ctx, d]
  int64_t length = 0;                   // tokens in the cache
  std::shared_ptr<DeviceState> device;  // set (and k, v empty) when the rows live on a device backend
};

// One teacher-forced decoder pass that also exposes chosen cross-attention heads (word alignment).
struct CrossAttention {
  Tensor hidden;               // [n, d] final hidden states of every position (after the last layer norm)
  std::vector<Tensor> scores;  // per requested head: [n, n_audio_ctx] pre-softmax scores q·k / sqrt(head_dim)
};

// Self-attention keys and values of a batch of sequences of equal length decoded in lockstep (the beams of
// a beam search, the candidates of best-of sampling). Sequence b owns rows [b · n_text_ctx, (b + 1) ·
// n_text_ctx) of every layer's tensors, so one step reads each sequence's cache in place and a GPU backend
// can run the whole batch as one kernel.
struct BatchKVCache {
  std::vector<Tensor> k;                // per layer [capacity · n_text_ctx, d]
  std::vector<Tensor> v;                // per layer [capacity · n_text_ctx, d]
  int64_t capacity = 0;                 // sequences the tensors hold
  int64_t batch = 0;                    // live sequences: [0, batch)
  int64_t length = 0;                   // tokens in each sequence
  int64_t stride = 0;                   // rows per sequence (n_text_ctx)
  std::shared_ptr<DeviceState> device;  // set (and k, v empty) when the rows live on a device backend
};

// Every one of `batch` sequences starts as a copy of `prompt` (a single-sequence cache). batch <= capacity.
void broadcast_cache(const KVCache& prompt, BatchKVCache& cache, int64_t batch);
// Sequence i becomes a copy of sequence origins[i] (numbered before the call), for i < origins.size(); the
// batch becomes origins.size() sequences (<= the current batch). Beam search reorders its beams with it;
// sampling drops finished sequences with it. Copies only the rows in use, and only for changed sequences.
void reorder_cache(BatchKVCache& cache, std::span<const int> origins);

// The block layer norms whose output feeds exactly one linear layer, so that a per-column scale of that layer can
// move into the norm's gamma and beta (activation-aware quantisation, ops/column_scaling.h):
// attn_ln → attn.qkv, cross_attn_ln → cross_attn.query (decoder), mlp_ln → mlp.fc1.
// (format::names::kNormedLinears lists their names in this order.)
enum class BlockNorm { kAttention, kCrossAttention, kFeedForward };

// A block's linear layers, in format::names::kBlockLinears' order (cross_* in decoder blocks only).
enum class BlockLinear { kQkv, kAttnOut, kCrossQuery, kCrossKv, kCrossOut, kFc1, kFc2 };

// Observers of the activations inside the CPU network, for `wisp calibrate`: while one is installed on a thread,
// the CPU passes on that thread (a device backend's are not seen) show it, with the stack (decoder or encoder)
// and the block index,
// - NormObserver: the rows [n, d] (f32) every block norm of those three produces (the input statistics of
//   activation-aware quantisation);
// - LinearInputObserver: the rows [n, in] (f32) every block linear layer reads (the input Gram matrices of GPTQ).
// Not nested: installing a second one of a kind is an InternalError.
using NormObserver = std::function<void(bool decoder, int block, BlockNorm norm, const Tensor& rows)>;
using LinearInputObserver = std::function<void(bool decoder, int block, BlockLinear linear, const Tensor& rows)>;
template <class Observer>
class ScopedObserver {
 public:
  explicit ScopedObserver(Observer observer);
  ~ScopedObserver();
  ScopedObserver(const ScopedObserver&) = delete;
  ScopedObserver& operator=(const ScopedObserver&) = delete;
  // The one installed on this thread, or null.
  static const Observer* current();

 private:
  Observer observer_;
};
using ScopedNormObserver = ScopedObserver<NormObserver>;
using ScopedLinearInputObserver = ScopedObserver<LinearInputObserver>;

class WhisperModel;

// Runs the network on another device (the GPU runner, src/runtime/gpu_network.cpp) for a WhisperModel,
// which forwards to it every call whose state (CrossKV, caches) the backend created. The model layer only
// sees this interface: it neither includes nor links a device runtime.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual std::string name() const = 0;  // e.g. "cuda:0 (NVIDIA H100 80GB HBM3)"
  // mel [n_mels, 2 · n_audio_ctx] → the window's cross-attention K/V on the device
  virtual CrossKV encode_window(const Tensor& mel) = 0;
  virtual KVCache new_cache() = 0;
  // See WhisperModel::decode_logits / new_batch_cache / decode_batch_logits / broadcast_cache / reorder_cache.
  virtual Tensor decode_logits(std::span<const int> tokens, const CrossKV& cross, KVCache& cache,
                               std::span<const int64_t> rows) = 0;
  virtual BatchKVCache new_batch_cache(int64_t capacity) = 0;
  virtual Tensor decode_batch_logits(std::span<const int> tokens, const CrossKV& cross, BatchKVCache& cache) = 0;
  virtual void broadcast_cache(const KVCache& prompt, BatchKVCache& cache, int64_t batch) = 0;
  virtual void reorder_cache(BatchKVCache& cache, std::span<const int> origins) = 0;
  // See WhisperModel::decode_choose / decode_batch_choose. These forms run the step's logits through
  // choose_tokens() on the host; a backend that chooses on the device overrides them.
  virtual TokenChoice decode_choose(int token, const CrossKV& cross, KVCache& cache, const TokenQuery& query);
  virtual std::vector<TokenChoice> decode_batch_choose(std::span<const int> tokens, const CrossKV& cross,
                                                       BatchKVCache& cache, std::span<const TokenQuery> queries);
  // The window's K/V as host tensors (for the passes the backend leaves to the CPU: word alignment).
  virtual CrossKV to_host(const CrossKV& cross) = 0;
  // See WhisperModel::begin_transcription. Null: calls run one by one as they come.
  virtual std::shared_ptr<void> begin_transcription() { return nullptr; }
  // Transcriptions that can run at once (each needs device state of its own).
  virtual int concurrency() const { return 1; }
  // The log-mel of a whole recording, as audio::LogMel::compute (16 kHz samples → [n_mels, frames]), computed
  // on the device; empty when the backend has none.
  virtual std::vector<float> log_mel(std::span<const float> samples) {
    (void)samples;
    return {};
  }
};

// Creates the backend for a model that has just been loaded (its weights are mapped and checked).
using DeviceFactory = std::function<std::unique_ptr<DeviceBackend>(const WhisperModel&)>;

class WhisperModel {
 public:
  // Maps the engine file and checks every tensor against the dimensions; with `device`, also creates the
  // device backend that the window and decoding calls below then run on. Throws IoError / ModelError (and
  // whatever the factory throws).
  static std::shared_ptr<const WhisperModel> load(const std::string& path, const DeviceFactory& device = nullptr);
  // "cpu", or the device backend's name.
  std::string device_name() const;
  // A transcription starts on the calling thread and may run while others run on other threads: until the
  // handle goes, a device backend may gather this thread's calls with theirs into batched calls (the GPU
  // backend runs their decode steps as one step). Null on the CPU.
  std::shared_ptr<void> begin_transcription() const;
  // Transcriptions that can run at once on the device backend (0 on the CPU: no limit of its own).
  int device_concurrency() const;
  // DeviceBackend::log_mel of the device backend; empty on the CPU (the pipeline computes it there).
  std::vector<float> device_log_mel(std::span<const float> samples) const;
  // The tensor of an engine-file name as stored (for a device backend uploading the weights).
  Tensor stored_tensor(const std::string& name) const;

  const format::ModelDims& dims() const { return meta_.dims; }
  const format::ModelMetadata& metadata() const { return meta_; }
  const std::vector<std::string>& vocabulary() const { return vocab_; }
  const std::string& path() const { return path_; }

  // mel [n_mels, 2 · n_audio_ctx] → audio features [n_audio_ctx, d]
  Tensor encode(const Tensor& mel) const;
  // features [n_audio_ctx, d] → cross-attention K/V of every decoder layer
  CrossKV cross_kv(const Tensor& features) const;
  // mel [n_mels, 2 · n_audio_ctx] → the window's cross-attention K/V: cross_kv(encode(mel)) on the CPU, or on
  // the device backend when there is one (then the K/V stay there).
  CrossKV encode_window(const Tensor& mel) const;

  KVCache new_cache() const;
  // Appends `tokens` to the sequence in `cache` and returns their final hidden states [n, d] (after the
  // last layer norm). Throws InvalidArgument when the sequence would exceed n_text_ctx.
  Tensor decode(std::span<const int> tokens, const CrossKV& cross, KVCache& cache) const;
  // hidden [n, d] → logits [n, n_vocab] (the output projection is tied to the token embedding)
  Tensor logits(const Tensor& hidden) const;
  // decode() then logits() of the positions `rows` of `tokens` (empty: the last one) → [rows, n_vocab]. Runs
  // where `cross` and `cache` live (both on the CPU or both on the device backend; InternalError otherwise).
  Tensor decode_logits(std::span<const int> tokens, const CrossKV& cross, KVCache& cache,
                       std::span<const int64_t> rows = {}) const;

  // A cache for up to `capacity` sequences decoded together (see BatchKVCache); starts empty.
  BatchKVCache new_batch_cache(int64_t capacity) const;
  // One step of every live sequence of the batch: appends tokens[b] to sequence b, b < cache.batch, and
  // returns their final hidden states [batch, d]. Up to 8 sequences (the GEMV path of the linear kernel),
  // bitwise the result decode() gives for the same sequence alone (same kernels, same order of sums).
  // Throws InvalidArgument past n_text_ctx.
  Tensor decode_batch(std::span<const int> tokens, const CrossKV& cross, BatchKVCache& cache) const;
  // logits(decode_batch(...)) → [batch, n_vocab], where `cross` and `cache` live (as decode_logits).
  Tensor decode_batch_logits(std::span<const int> tokens, const CrossKV& cross, BatchKVCache& cache) const;

  // A decode step that returns the tokens the search asks for instead of logits (token_choice.h): appends
  // `token` to the sequence in `cache` and answers `query` from the logits after it. On a device backend the
  // rules and the choice run on the device. Same placement rules as decode_logits.
  TokenChoice decode_choose(int token, const CrossKV& cross, KVCache& cache, const TokenQuery& query) const;
  // decode_batch_logits, then queries[b] for row b (one query per live sequence).
  std::vector<TokenChoice> decode_batch_choose(std::span<const int> tokens, const CrossKV& cross, BatchKVCache& cache,
                                               std::span<const TokenQuery> queries) const;

  // Runs the whole sequence `tokens` through the decoder in one pass (a fresh self-attention cache, causal
  // as in decoding; nothing is generated) and returns, besides the hidden states, the cross-attention
  // scores of every (decoder layer, head) in `heads`, in that order: the values the attention feeds its
  // softmax, computed by the same ops as decode(). metadata().alignment_heads lists the heads that follow
  // the timing of the words. Throws InvalidArgument for a head out of range or a sequence longer than
  // n_text_ctx.
  CrossAttention cross_attention_weights(std::span<const int> tokens, const CrossKV& cross,
                                         std::span<const std::pair<int, int>> heads) const;

 private:
  Tensor encoder_attention(const Block& b, const Tensor& x) const;  // x [n_audio_ctx, d]
  // ln(x) of block b's norm `which` [n, d], shown to this thread's ScopedNormObserver if there is one.
  Tensor block_norm(const Block& b, BlockNorm which, const Tensor& x) const;
  // x [n, in] · Wᵀ + b of block b's linear layer `which`, x shown first to this thread's ScopedLinearInputObserver
  // if there is one.
  Tensor block_linear(const Block& b, BlockLinear which, const Tensor& x) const;
  // Whether b is one of the decoder's blocks, and its index in its stack.
  std::pair<bool, int> block_position(const Block& b) const;
  void feed_forward(const Block& b, Tensor& x) const;  // x [n, d], updated in place
  // Token embedding + learned position embedding [tokens, d]: token i at position `position + i · step`
  // (step 1: a sequence; step 0: one step of a batch whose sequences share a length).
  Tensor embed(std::span<const int> tokens, int64_t position, int64_t step) const;
  // The decoder stack behind decode() and cross_attention_weights(); with `scores`, it also records the
  // pre-softmax cross-attention scores of `heads` (one [n, n_audio_ctx] tensor per head).
  Tensor decoder_forward(std::span<const int> tokens, const CrossKV& cross, KVCache& cache,
                         std::span<const std::pair<int, int>> heads, std::vector<Tensor>* scores) const;

  KVCache host_cache() const;  // an empty cache on the CPU, whatever the backend
  // Which side runs a call on this state: the device backend (true) or the CPU (false).
  bool on_device(const CrossKV& cross, const DeviceState* cache) const;

  std::unique_ptr<DeviceBackend> device_;  // null: everything runs on the CPU
  std::string path_;
  format::ModelMetadata meta_;
  std::vector<std::string> vocab_;
  format::EngineFile file_;

  Linear conv1_, conv2_;  // conv weights [d, c_in, 3]
  Tensor enc_pos_;        // [n_audio_ctx, d], f32
  std::vector<Block> enc_;
  Norm ln_post_;
  Tensor token_embedding_;  // [n_vocab, d]
  Tensor dec_pos_;          // [n_text_ctx, d], f32
  std::vector<Block> dec_;
  Norm dec_ln_;
};

}  // namespace wisp::model
