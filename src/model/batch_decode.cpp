// Decoding a batch of sequences in lockstep over one window's cross-attention K/V: the beams of a beam
// search or the candidates of best-of sampling. Every op takes the whole batch (one GEMV reads each weight
// once for all sequences); only the self-attention reads a per-sequence cache.
#include <algorithm>
#include <cstring>

#include "model/whisper.h"
#include "ops/ops.h"
#include "wisp/errors.h"

namespace wisp::model {

using core::DType;

namespace {

void copy_sequence(const Tensor& src, int64_t src_seq, Tensor& dst, int64_t dst_seq, int64_t stride, int64_t length) {
  const int64_t width = src.dim(1);
  std::memcpy(dst.data<float>() + dst_seq * stride * width, src.data<float>() + src_seq * stride * width,
              static_cast<size_t>(length * width) * sizeof(float));
}

// choose_tokens of each row of logits [rows, n_vocab] with its query.
std::vector<TokenChoice> choose_rows(Tensor& logits, std::span<const TokenQuery> queries) {
  const auto n_vocab = static_cast<size_t>(logits.dim(1));
  std::vector<TokenChoice> out;
  for (size_t r = 0; r < queries.size(); ++r) {
    out.push_back(choose_tokens({logits.data<float>() + r * n_vocab, n_vocab}, queries[r]));
  }
  return out;
}

}  // namespace

BatchKVCache WhisperModel::new_batch_cache(int64_t capacity) const {
  if (capacity <= 0) throw InvalidArgument("a batch cache needs at least one sequence");
  if (device_) return device_->new_batch_cache(capacity);
  const auto& d = dims();
  BatchKVCache c;
  c.capacity = capacity;
  c.stride = d.n_text_ctx;
  for (int i = 0; i < d.n_text_layer; ++i) {
    c.k.push_back(Tensor::empty({capacity * d.n_text_ctx, d.n_text_state}, DType::kF32));
    c.v.push_back(Tensor::empty({capacity * d.n_text_ctx, d.n_text_state}, DType::kF32));
  }
  return c;
}

void broadcast_cache(const KVCache& prompt, BatchKVCache& cache, int64_t batch) {
  if (cache.device) {
    if (!prompt.device || prompt.device->backend != cache.device->backend) {
      throw InternalError("broadcast_cache: the prompt and the batch live on different devices");
    }
    cache.device->backend->broadcast_cache(prompt, cache, batch);
    return;
  }
  if (batch <= 0 || batch > cache.capacity || prompt.k.size() != cache.k.size()) {
    throw InvalidArgument("broadcast_cache: batch of " + std::to_string(batch) + " for a cache of " +
                          std::to_string(cache.capacity));
  }
  if (prompt.length > cache.stride) throw InvalidArgument("broadcast_cache: prompt longer than the cache");
  for (size_t l = 0; l < cache.k.size(); ++l) {
    for (int64_t b = 0; b < batch; ++b) {
      // The single-sequence cache is [n_text_ctx, d]: sequence 0 with the same stride.
      copy_sequence(prompt.k[l], 0, cache.k[l], b, cache.stride, prompt.length);
      copy_sequence(prompt.v[l], 0, cache.v[l], b, cache.stride, prompt.length);
    }
  }
  cache.batch = batch;
  cache.length = prompt.length;
}

void reorder_cache(BatchKVCache& cache, std::span<const int> origins) {
  if (cache.device) {
    cache.device->backend->reorder_cache(cache, origins);
    return;
  }
  const int64_t n = static_cast<int64_t>(origins.size());
  if (n > cache.batch) throw InvalidArgument("reorder_cache: more sequences than the batch holds");
  for (int o : origins) {
    if (o < 0 || o >= cache.batch) throw InvalidArgument("reorder_cache: origin out of the batch");
  }
  // Sources that some other slot copies from are saved first, so a slot may be overwritten before (or
  // after) it is read. Slots that keep their own sequence are not touched.
  std::vector<int> saved(static_cast<size_t>(cache.batch), -1);  // source → index in the scratch
  int n_saved = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int o = origins[static_cast<size_t>(i)];
    if (o != i && saved[static_cast<size_t>(o)] < 0) saved[static_cast<size_t>(o)] = n_saved++;
  }
  if (n_saved > 0) {
    const int64_t width = cache.k.empty() ? 0 : cache.k[0].dim(1);
    const int64_t rows = cache.length;
    std::vector<float> scratch(static_cast<size_t>(n_saved * rows * width));
    for (std::vector<Tensor>* side : {&cache.k, &cache.v}) {
      for (Tensor& t : *side) {
        float* base = t.data<float>();
        for (int64_t s = 0; s < cache.batch; ++s) {
          const int slot = saved[static_cast<size_t>(s)];
          if (slot < 0) continue;
          std::memcpy(scratch.data() + slot * rows * width, base + s * cache.stride * width,
                      static_cast<size_t>(rows * width) * sizeof(float));
        }
        for (int64_t i = 0; i < n; ++i) {
          const int o = origins[static_cast<size_t>(i)];
          if (o == i) continue;
          std::memcpy(base + i * cache.stride * width, scratch.data() + saved[static_cast<size_t>(o)] * rows * width,
                      static_cast<size_t>(rows * width) * sizeof(float));
        }
      }
    }
  }
  cache.batch = n;
}

Tensor WhisperModel::decode_batch_logits(std::span<const int> tokens, const CrossKV& cross, BatchKVCache& cache) const {
  if (on_device(cross, cache.device.get())) return device_->decode_batch_logits(tokens, cross, cache);
  return logits(decode_batch(tokens, cross, cache));
}

TokenChoice WhisperModel::decode_choose(int token, const CrossKV& cross, KVCache& cache,
                                        const TokenQuery& query) const {
  if (on_device(cross, cache.device.get())) return device_->decode_choose(token, cross, cache, query);
  const int tokens[1] = {token};
  Tensor l = decode_logits(tokens, cross, cache);
  return std::move(choose_rows(l, {&query, 1})[0]);
}

std::vector<TokenChoice> WhisperModel::decode_batch_choose(std::span<const int> tokens, const CrossKV& cross,
                                                           BatchKVCache& cache,
                                                           std::span<const TokenQuery> queries) const {
  if (queries.size() != tokens.size()) throw InvalidArgument("decode_batch_choose: one query per token is needed");
  if (on_device(cross, cache.device.get())) return device_->decode_batch_choose(tokens, cross, cache, queries);
  Tensor l = decode_batch_logits(tokens, cross, cache);
  return choose_rows(l, queries);
}

TokenChoice DeviceBackend::decode_choose(int token, const CrossKV& cross, KVCache& cache, const TokenQuery& query) {
  const int tokens[1] = {token};
  const int64_t rows[1] = {0};
  Tensor l = decode_logits(tokens, cross, cache, rows);
  return std::move(choose_rows(l, {&query, 1})[0]);
}

std::vector<TokenChoice> DeviceBackend::decode_batch_choose(std::span<const int> tokens, const CrossKV& cross,
                                                            BatchKVCache& cache, std::span<const TokenQuery> queries) {
  Tensor l = decode_batch_logits(tokens, cross, cache);
  return choose_rows(l, queries);
}

Tensor WhisperModel::decode_batch(std::span<const int> tokens, const CrossKV& cross, BatchKVCache& cache) const {
  if (cross.device || cache.device) throw InternalError("decode_batch: device state has no host hidden states");
  const auto& d = dims();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t width = d.n_text_state;
  const int64_t past = cache.length;
  if (n == 0 || n != cache.batch) {
    throw InvalidArgument("decode_batch: " + std::to_string(n) + " tokens for a batch of " +
                          std::to_string(cache.batch));
  }
  if (past + 1 > d.n_text_ctx || cache.stride != d.n_text_ctx) {
    throw InvalidArgument("token sequence longer than the decoder context (" + std::to_string(d.n_text_ctx) + ")");
  }
  if (cross.kv.size() != dec_.size() || cache.k.size() != dec_.size()) {
    throw InvalidArgument("cross-attention K/V or cache of another model");
  }

  Tensor x = embed(tokens, past, 0);  // [n, d]: every sequence is at position `past`

  for (size_t l = 0; l < dec_.size(); ++l) {
    const Block& b = dec_[l];
    {  // causal self-attention: sequence i over its own cache rows
      const Tensor h = block_norm(b, BlockNorm::kAttention, x);
      const Tensor qkv = block_linear(b, BlockLinear::kQkv, h);  // [n, 3d]
      for (int64_t i = 0; i < n; ++i) {
        const Tensor row = qkv.rows(i, i + 1);
        ops::copy_rows({&row, width, 1}, width, cache.k[l], i * cache.stride + past);
        ops::copy_rows({&row, 2 * width, 1}, width, cache.v[l], i * cache.stride + past);
      }
      const int64_t rows = cache.k[l].dim(0);
      const Tensor a = ops::attention_decode({&qkv, 0, n}, {&cache.k[l], 0, rows}, {&cache.v[l], 0, rows}, width,
                                             d.n_text_head, cache.stride, past + 1);
      Tensor y = block_linear(b, BlockLinear::kAttnOut, a);
      ops::add_(x, y);
    }
    {  // cross-attention: every sequence over the window's keys/values
      const Tensor h = block_norm(b, BlockNorm::kCrossAttention, x);
      const Tensor q = block_linear(b, BlockLinear::kCrossQuery, h);  // [n, d]
      const Tensor& kv = cross.kv[l];                                 // [n_audio_ctx, 2d]
      const Tensor a = ops::attention_decode({&q, 0, n}, {&kv, 0, kv.dim(0)}, {&kv, width, kv.dim(0)}, width,
                                             d.n_text_head, 0, kv.dim(0));
      Tensor y = block_linear(b, BlockLinear::kCrossOut, a);
      ops::add_(x, y);
    }
    feed_forward(b, x);
  }
  cache.length = past + 1;
  return ops::layer_norm(x, dec_ln_.gamma, dec_ln_.beta);
}

}  // namespace wisp::model
