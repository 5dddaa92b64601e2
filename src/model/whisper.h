// The Whisper network: encoder, cross-attention K/V precompute, and the decoder with a self-attention
// KV cache. It reads like the paper: each pass is a short composition of ops.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "format/engine_file.h"

namespace wisp::model {

using core::Tensor;

struct Linear {
  Tensor w;  // [out, in], f32 or f16
  Tensor b;  // [out], f32 (undefined when the layer has no bias)
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

// Keys and values of every decoder layer's cross-attention for one 30 s window: computed once right
// after the encoder, read at every decoding step.
struct CrossKV {
  std::vector<Tensor> kv;  // per layer [n_audio_ctx, 2 · d]: keys in columns [0, d), values in [d, 2d)
};

// Self-attention keys and values of the tokens decoded so far.
struct KVCache {
  std::vector<Tensor> k;  // per layer [n_text_ctx, d]
  std::vector<Tensor> v;  // per layer [n_text_ctx, d]
  int64_t length = 0;     // tokens in the cache
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
  std::vector<Tensor> k;  // per layer [capacity · n_text_ctx, d]
  std::vector<Tensor> v;  // per layer [capacity · n_text_ctx, d]
  int64_t capacity = 0;   // sequences the tensors hold
  int64_t batch = 0;      // live sequences: [0, batch)
  int64_t length = 0;     // tokens in each sequence
  int64_t stride = 0;     // rows per sequence (n_text_ctx)
};

// Every one of `batch` sequences starts as a copy of `prompt` (a single-sequence cache). batch <= capacity.
void broadcast_cache(const KVCache& prompt, BatchKVCache& cache, int64_t batch);
// Sequence i becomes a copy of sequence origins[i] (numbered before the call), for i < origins.size(); the
// batch becomes origins.size() sequences (<= the current batch). Beam search reorders its beams with it;
// sampling drops finished sequences with it. Copies only the rows in use, and only for changed sequences.
void reorder_cache(BatchKVCache& cache, std::span<const int> origins);

class WhisperModel {
 public:
  // Maps the engine file and checks every tensor against the dimensions. Throws IoError / ModelError.
  static std::shared_ptr<const WhisperModel> load(const std::string& path);

  const format::ModelDims& dims() const { return meta_.dims; }
  const format::ModelMetadata& metadata() const { return meta_; }
  const std::vector<std::string>& vocabulary() const { return vocab_; }
  const std::string& path() const { return path_; }

  // mel [n_mels, 2 · n_audio_ctx] → audio features [n_audio_ctx, d]
  Tensor encode(const Tensor& mel) const;
  // features [n_audio_ctx, d] → cross-attention K/V of every decoder layer
  CrossKV cross_kv(const Tensor& features) const;

  KVCache new_cache() const;
  // Appends `tokens` to the sequence in `cache` and returns their final hidden states [n, d] (after the
  // last layer norm). Throws InvalidArgument when the sequence would exceed n_text_ctx.
  Tensor decode(std::span<const int> tokens, const CrossKV& cross, KVCache& cache) const;
  // hidden [n, d] → logits [n, n_vocab] (the output projection is tied to the token embedding)
  Tensor logits(const Tensor& hidden) const;

  // A cache for up to `capacity` sequences decoded together (see BatchKVCache); starts empty.
  BatchKVCache new_batch_cache(int64_t capacity) const;
  // One step of every live sequence of the batch: appends tokens[b] to sequence b, b < cache.batch, and
  // returns their final hidden states [batch, d]. Up to 8 sequences (the GEMV path of the linear kernel),
  // bitwise the result decode() gives for the same sequence alone (same kernels, same order of sums).
  // Throws InvalidArgument past n_text_ctx.
  Tensor decode_batch(std::span<const int> tokens, const CrossKV& cross, BatchKVCache& cache) const;

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
  void feed_forward(const Block& b, Tensor& x) const;               // x [n, d], updated in place
  // The decoder stack behind decode() and cross_attention_weights(); with `scores`, it also records the
  // pre-softmax cross-attention scores of `heads` (one [n, n_audio_ctx] tensor per head).
  Tensor decoder_forward(std::span<const int> tokens, const CrossKV& cross, KVCache& cache,
                         std::span<const std::pair<int, int>> heads, std::vector<Tensor>* scores) const;

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
