// A small random Whisper-shaped engine file (every tensor the model reads, at toy sizes) and a scratch
// directory, for format and model tests that must not depend on the installed models. Header-only: a test
// that includes it links wisp_format.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>

#include "format/engine_file.h"
#include "format/tensor_names.h"

namespace wisp::test {

// A directory under the system temp dir, removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("wisp_" + std::string(testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Widths are multiples of 64 so that every block matrix can be int4 with either group size; 16 audio
// frames and up to 16 tokens let the linear layers run both the GEMV (m <= 8) and the BLAS path.
inline format::ModelDims synthetic_dims() {
  format::ModelDims d;
  d.n_mels = 4;
  d.n_vocab = 12;
  d.n_audio_ctx = 16;
  d.n_audio_state = 128;
  d.n_audio_head = 2;
  d.n_audio_layer = 2;
  d.n_text_ctx = 16;
  d.n_text_state = 128;
  d.n_text_head = 2;
  d.n_text_layer = 2;
  return d;
}

// name → tensor of a random f32 model with synthetic_dims(): weights uniform in ±0.2, norm gains near 1.
inline std::map<std::string, core::Tensor> synthetic_tensors(uint32_t seed) {
  using core::Shape;
  const format::ModelDims d = synthetic_dims();
  const int64_t a = d.n_audio_state, t = d.n_text_state;
  std::mt19937 rng(seed);
  std::map<std::string, core::Tensor> out;
  auto put = [&](const std::string& name, Shape shape, float center = 0.0f) {
    core::Tensor x = core::Tensor::empty(std::move(shape), core::DType::kF32);
    std::uniform_real_distribution<float> u(center - 0.2f, center + 0.2f);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = u(rng);
    out[name] = x;
  };
  auto norm = [&](const std::string& name, int64_t n) {
    put(name + ".weight", {n}, 1.0f);
    put(name + ".bias", {n});
  };
  auto linear = [&](const std::string& name, int64_t rows, int64_t cols) {
    put(name + ".weight", {rows, cols});
    put(name + ".bias", {rows});
  };
  using format::names::block;
  put("encoder.conv1.weight", {a, d.n_mels, 3});
  put("encoder.conv1.bias", {a});
  put("encoder.conv2.weight", {a, a, 3});
  put("encoder.conv2.bias", {a});
  put("encoder.positional_embedding", {d.n_audio_ctx, a});
  for (const std::string stack : {"encoder", "decoder"}) {
    const int layers = stack == "encoder" ? d.n_audio_layer : d.n_text_layer;
    const int64_t n = stack == "encoder" ? a : t;
    for (int i = 0; i < layers; ++i) {
      norm(block(stack, i, "attn_ln"), n);
      linear(block(stack, i, "attn.qkv"), 3 * n, n);
      linear(block(stack, i, "attn.out"), n, n);
      norm(block(stack, i, "mlp_ln"), n);
      linear(block(stack, i, "mlp.fc1"), 4 * n, n);
      linear(block(stack, i, "mlp.fc2"), n, 4 * n);
      if (stack == "decoder") {
        norm(block(stack, i, "cross_attn_ln"), n);
        linear(block(stack, i, "cross_attn.query"), n, n);
        linear(block(stack, i, "cross_attn.kv"), 2 * n, a);
        linear(block(stack, i, "cross_attn.out"), n, n);
      }
    }
  }
  norm("encoder.ln_post", a);
  put("decoder.token_embedding.weight", {d.n_vocab, t});
  put("decoder.positional_embedding", {d.n_text_ctx, t});
  norm("decoder.ln", t);
  return out;
}

// Writes `tensors` with the synthetic dimensions, a vocabulary of one-letter tokens and `meta_edit` applied
// to the metadata (e.g. to declare int8 weights).
inline void write_synthetic(const std::string& path, const std::map<std::string, core::Tensor>& tensors,
                            const std::function<void(format::ModelMetadata&)>& meta_edit = {}) {
  format::ModelMetadata meta;
  meta.name = "synthetic";
  meta.dims = synthetic_dims();
  if (meta_edit) meta_edit(meta);
  format::EngineWriter w;
  w.set_metadata(meta);
  std::vector<std::string> vocab;
  for (int i = 0; i < meta.dims.n_vocab; ++i) vocab.push_back(std::string(1, static_cast<char>('a' + i)));
  w.set_vocabulary(vocab);
  for (const auto& [name, t] : tensors) w.add_tensor(name, t);
  w.write(path);
}

// Every tensor of an engine file but the vocabulary, by name (views into the mapped file).
inline std::map<std::string, core::Tensor> model_tensors(const format::EngineFile& f) {
  std::map<std::string, core::Tensor> out;
  for (const auto& e : f.entries()) {
    if (e.name.rfind("tokenizer.", 0) != 0) out[e.name] = f.tensor(e.name);
  }
  return out;
}

}  // namespace wisp::test
