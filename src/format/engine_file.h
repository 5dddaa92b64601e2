// The wisp engine file: one versioned, memory-mappable file per model (docs/engine-format.md).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace wisp::format {

inline constexpr char kMagic[8] = {'W', 'I', 'S', 'P', 'E', 'N', 'G', '\0'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint64_t kAlignment = 256;

struct ModelDims {
  int n_mels = 0;
  int n_vocab = 0;
  int n_audio_ctx = 0;
  int n_audio_state = 0;
  int n_audio_head = 0;
  int n_audio_layer = 0;
  int n_text_ctx = 0;
  int n_text_state = 0;
  int n_text_head = 0;
  int n_text_layer = 0;
};

// How the linear layers of the encoder and decoder blocks store their weights (docs/quantization.md); the
// header's "weight_quantization". Everything else (convolutions, embeddings, norms, biases) stays float.
enum class WeightQuantization { kF32, kF16, kInt8, kInt4 };
const char* weight_quantization_name(WeightQuantization q);  // "f32", "f16", "int8", "int4"

struct ModelMetadata {
  std::string name;  // e.g. "base", "tiny.en" (informational)
  ModelDims dims;
  std::vector<int> suppress_tokens;                  // non-speech tokens suppressed at every step
  std::vector<int> suppress_tokens_begin;            // suppressed at the first sampled step (blank, eot)
  std::vector<int> lang_ids;                         // language token ids, empty for English-only models
  std::vector<std::pair<int, int>> alignment_heads;  // (decoder layer, head) pairs for word timing
  std::map<std::string, std::string> source;         // importer, source path, sha256, ...
  // Files written before quantisation existed have no such keys: f16 (or f32, as their tensors say).
  WeightQuantization weight_quantization = WeightQuantization::kF16;
  int group_size = 0;  // int4: inputs per scale (64 or 128); 0 otherwise
};

struct TensorEntry {
  std::string name;
  core::DType dtype;
  core::Shape shape;
  uint64_t offset = 0;  // from the start of the file, a multiple of kAlignment
  uint64_t nbytes = 0;
};

// Read side: the file is memory-mapped; tensors are views into the mapping.
class EngineFile {
 public:
  // Throws IoError (cannot open), ModelError (not an engine file, other version, truncated, inconsistent).
  static EngineFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const ModelMetadata& metadata() const { return meta_; }
  const std::vector<TensorEntry>& entries() const { return entries_; }
  const std::vector<std::string>& vocabulary() const { return vocab_; }  // token bytes by id
  bool has(const std::string& name) const;
  // A view of the named tensor; throws ModelError when it is absent.
  core::Tensor tensor(const std::string& name) const;

 private:
  std::string path_;
  std::shared_ptr<const void> mapping_;
  uint64_t size_ = 0;
  ModelMetadata meta_;
  std::vector<TensorEntry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<std::string> vocab_;
};

// Write side: collect metadata, vocabulary and tensors, then write atomically.
class EngineWriter {
 public:
  void set_metadata(ModelMetadata meta) { meta_ = std::move(meta); }
  void set_vocabulary(std::vector<std::string> tokens) { vocab_ = std::move(tokens); }
  void add_tensor(const std::string& name, core::Tensor t);
  // Writes to a temporary file beside `path`, then renames; throws IoError and leaves nothing behind.
  void write(const std::string& path) const;

 private:
  ModelMetadata meta_;
  std::vector<std::string> vocab_;
  std::vector<std::pair<std::string, core::Tensor>> tensors_;
};

}  // namespace wisp::format
