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

 private:
  Tensor encoder_attention(const Block& b, const Tensor& x) const;  // x [n_audio_ctx, d]

  std::string path_;
  format::ModelMetadata meta_;
  std::vector<std::string> vocab_;
  format::EngineFile file_;

  Linear conv1_, conv2_;       // conv weights [d, c_in, 3]
  Tensor enc_pos_;             // [n_audio_ctx, d], f32
  std::vector<Block> enc_;
  Norm ln_post_;
  Tensor token_embedding_;     // [n_vocab, d]
  Tensor dec_pos_;             // [n_text_ctx, d], f32
  std::vector<Block> dec_;
  Norm dec_ln_;
};

}  // namespace wisp::model
