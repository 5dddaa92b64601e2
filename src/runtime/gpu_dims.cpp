// Model sizes for `wisp bench --random SIZE` (both builds).
#include <stdexcept>

#include "format/tensor_names.h"
#include "runtime/gpu_whisper.h"

namespace wisp::runtime {

GpuKvCache kv_cache_from_name(const std::string& name) {
  if (name == "fp16") return GpuKvCache::kF16;
  if (name == "int8") return GpuKvCache::kInt8;
  if (name == "int8-dynamic") return GpuKvCache::kInt8Dynamic;
  if (name == "fp8") return GpuKvCache::kFp8;
  throw std::invalid_argument("unknown KV cache type '" + name + "' (expected fp16, int8, int8-dynamic or fp8)");
}

GpuWhisper::EncoderGelu encoder_gelu_from_name(const std::string& name) {
  if (name == "erf") return GpuWhisper::EncoderGelu::kErf;
  if (name == "tanh") return GpuWhisper::EncoderGelu::kTanh;
  throw std::invalid_argument("unknown encoder GELU '" + name + "' (expected erf or tanh)");
}

GpuDims dims_for_size(const std::string& size) {
  GpuDims d;
  auto set = [&](int state, int head, int layer) {
    d.n_audio_state = d.n_text_state = state;
    d.n_audio_head = d.n_text_head = head;
    d.n_audio_layer = d.n_text_layer = layer;
  };
  if (size == "tiny" || size == "tiny.en") {
    set(384, 6, 4);
  } else if (size == "base" || size == "base.en") {
    set(512, 8, 6);
  } else if (size == "small" || size == "small.en") {
    set(768, 12, 12);
  } else if (size == "medium" || size == "medium.en") {
    set(1024, 16, 24);
  } else if (size == "large-v1" || size == "large-v2" || size == "large") {
    set(1280, 20, 32);
  } else if (size == "large-v3") {
    set(1280, 20, 32);
    d.n_mels = 128;
    d.n_vocab = 51866;
  } else {
    throw std::invalid_argument("unknown model size '" + size + "' (tiny, base, small, medium, large-v2, large-v3)");
  }
  if (size.size() > 3 && size.compare(size.size() - 3, 3, ".en") == 0) d.n_vocab = 51864;
  return d;
}

}  // namespace wisp::runtime

namespace wisp::runtime {

std::vector<std::string> weight_names(const GpuDims& d) {
  std::vector<std::string> n;
  auto lin = [&](const std::string& s) { n.push_back(s + ".weight"), n.push_back(s + ".bias"); };
  lin("encoder.conv1");
  lin("encoder.conv2");
  n.push_back("encoder.positional_embedding");
  for (int i = 0; i < d.n_audio_layer; ++i) {
    for (const char* leaf : {"attn_ln", "mlp_ln", "attn.qkv", "attn.out", "mlp.fc1", "mlp.fc2"})
      lin(format::names::block("encoder", i, leaf));
  }
  lin("encoder.ln_post");
  n.push_back("decoder.token_embedding.weight");
  n.push_back("decoder.positional_embedding");
  for (int i = 0; i < d.n_text_layer; ++i) {
    for (const char* leaf : {"attn_ln", "cross_attn_ln", "mlp_ln", "attn.qkv", "attn.out", "cross_attn.query",
                             "cross_attn.kv", "cross_attn.out", "mlp.fc1", "mlp.fc2"}) {
      lin(format::names::block("decoder", i, leaf));
    }
  }
  lin("decoder.ln");
  return n;
}

}  // namespace wisp::runtime
