#include "format/importers.h"

#include <fnmatch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <vector>

#include "format/mapped_file.h"
#include "format/tensor_names.h"
#include "ops/column_scaling.h"
#include "ops/ops.h"
#include "tokenizer/vocabulary.h"
#include "wisp/errors.h"

namespace wisp::format {

namespace fs = std::filesystem;
using core::DType;
using core::Shape;
using core::Tensor;
using nlohmann::json;

namespace {

// Whether the block matrix `name` stays float in a quantised file (ConvertOptions::keep_float); counts the
// matches of each pattern in `matches` when given.
bool kept_float(const std::string& name, const ConvertOptions& opts, std::vector<int>* matches = nullptr) {
  bool kept = false;
  for (size_t i = 0; i < opts.keep_float.size(); ++i) {
    if (fnmatch(opts.keep_float[i].c_str(), name.c_str(), 0) == 0) {
      if (matches) ++(*matches)[i];
      kept = true;
    }
  }
  return kept;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw IoError("cannot open '" + p.string() + "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ModelError("'" + p.string() + "' is not valid JSON: " + e.what());
  }
}

// Collects tensors under canonical names, then checks them against the dimensions they imply and
// writes them with the requested weight type.
class ModelBuilder {
 public:
  explicit ModelBuilder(std::string source) : source_(std::move(source)) {}

  void put(const std::string& name, Tensor t) { tensors_[name] = std::move(t); }
  // Before quantising the block linear layer `weight` [n, k], multiply its columns by `scale` [k], and divide
  // the gamma and beta of the norm `norm` ("<stack>.blocks.N.<norm>", the layer's only input) by it: the same
  // function, rounded differently (ops/column_scaling.h).
  void scale_columns(const std::string& weight, const std::string& norm, std::vector<float> scale) {
    norm_divisor_[norm + ".weight"] = scale;
    norm_divisor_[norm + ".bias"] = scale;
    column_scale_[weight] = std::move(scale);
  }
  // The codes and scales of the block linear layer `weight`, chosen by the caller (GPTQ) instead of finish()'s plain
  // rounding of its float matrix.
  void set_quantized(const std::string& weight, ops::QuantizedWeight q) { quantized_[weight] = std::move(q); }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const Tensor& get(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw ModelError(source_ + ": missing tensor for " + name);
    return it->second;
  }

  ModelDims infer_dims(int n_audio_head, int n_text_head) const {
    ModelDims d;
    const Tensor& conv1 = get("encoder.conv1.weight");  // [d, n_mels, 3]
    if (conv1.rank() != 3 || conv1.dim(2) != 3) throw ModelError(source_ + ": conv1 weight is not [d, n_mels, 3]");
    d.n_audio_state = static_cast<int>(conv1.dim(0));
    d.n_mels = static_cast<int>(conv1.dim(1));
    d.n_audio_ctx = static_cast<int>(get("encoder.positional_embedding").dim(0));
    const Tensor& emb = get("decoder.token_embedding.weight");  // [n_vocab, d]
    d.n_vocab = static_cast<int>(emb.dim(0));
    d.n_text_state = static_cast<int>(emb.dim(1));
    d.n_text_ctx = static_cast<int>(get("decoder.positional_embedding").dim(0));
    while (has(names::block("encoder", d.n_audio_layer, "attn.qkv.weight"))) ++d.n_audio_layer;
    while (has(names::block("decoder", d.n_text_layer, "attn.qkv.weight"))) ++d.n_text_layer;
    d.n_audio_head = n_audio_head > 0 ? n_audio_head : d.n_audio_state / 64;
    d.n_text_head = n_text_head > 0 ? n_text_head : d.n_text_state / 64;
    if (d.n_audio_layer == 0 || d.n_text_layer == 0) throw ModelError(source_ + ": no encoder or decoder layers found");
    return d;
  }

  // A tensor the model reads: its name, its shape and whether it is the weight of a block's linear layer
  // (the matrices that int8/int4 quantise).
  struct Expected {
    std::string name;
    Shape shape;
    bool block_linear = false;
  };

  // Every tensor the model reads, with its expected shape.
  static std::vector<Expected> expected(const ModelDims& d) {
    std::vector<Expected> e;
    const int64_t a = d.n_audio_state, t = d.n_text_state;
    e.push_back({"encoder.conv1.weight", {a, d.n_mels, 3}});
    e.push_back({"encoder.conv1.bias", {a}});
    e.push_back({"encoder.conv2.weight", {a, a, 3}});
    e.push_back({"encoder.conv2.bias", {a}});
    e.push_back({"encoder.positional_embedding", {d.n_audio_ctx, a}});
    auto common = [&](const std::string& stack, int i, int64_t n) {
      e.push_back({names::block(stack, i, "attn_ln.weight"), {n}});
      e.push_back({names::block(stack, i, "attn_ln.bias"), {n}});
      e.push_back({names::block(stack, i, "attn.qkv.weight"), {3 * n, n}, true});
      e.push_back({names::block(stack, i, "attn.qkv.bias"), {3 * n}});
      e.push_back({names::block(stack, i, "attn.out.weight"), {n, n}, true});
      e.push_back({names::block(stack, i, "attn.out.bias"), {n}});
      e.push_back({names::block(stack, i, "mlp_ln.weight"), {n}});
      e.push_back({names::block(stack, i, "mlp_ln.bias"), {n}});
      e.push_back({names::block(stack, i, "mlp.fc1.weight"), {4 * n, n}, true});
      e.push_back({names::block(stack, i, "mlp.fc1.bias"), {4 * n}});
      e.push_back({names::block(stack, i, "mlp.fc2.weight"), {n, 4 * n}, true});
      e.push_back({names::block(stack, i, "mlp.fc2.bias"), {n}});
    };
    for (int i = 0; i < d.n_audio_layer; ++i) common("encoder", i, a);
    e.push_back({"encoder.ln_post.weight", {a}});
    e.push_back({"encoder.ln_post.bias", {a}});
    e.push_back({"decoder.token_embedding.weight", {d.n_vocab, t}});
    e.push_back({"decoder.positional_embedding", {d.n_text_ctx, t}});
    for (int i = 0; i < d.n_text_layer; ++i) {
      common("decoder", i, t);
      e.push_back({names::block("decoder", i, "cross_attn_ln.weight"), {t}});
      e.push_back({names::block("decoder", i, "cross_attn_ln.bias"), {t}});
      e.push_back({names::block("decoder", i, "cross_attn.query.weight"), {t, t}, true});
      e.push_back({names::block("decoder", i, "cross_attn.query.bias"), {t}});
      e.push_back({names::block("decoder", i, "cross_attn.kv.weight"), {2 * t, a}, true});
      e.push_back({names::block("decoder", i, "cross_attn.kv.bias"), {2 * t}});
      e.push_back({names::block("decoder", i, "cross_attn.out.weight"), {t, t}, true});
      e.push_back({names::block("decoder", i, "cross_attn.out.bias"), {t}});
    }
    e.push_back({"decoder.ln.weight", {t}});
    e.push_back({"decoder.ln.bias", {t}});
    return e;
  }

  void finish(ModelMetadata meta, std::vector<std::string> vocab, const ConvertOptions& opts,
              EngineWriter& writer) const {
    const bool quantize = opts.weights == WeightType::kInt8 || opts.weights == WeightType::kInt4;
    meta.weight_quantization = WeightQuantization::kF16;
    meta.group_size = 0;
    std::vector<int> keep_float_matches(opts.keep_float.size(), 0);
    for (const auto& [name, shape, block_linear] : expected(meta.dims)) {
      const Tensor& t = get(name);
      if (t.shape() != shape) {
        throw ModelError(source_ + ": tensor " + name + " has shape " + core::shape_str(t.shape()) + ", expected " +
                         core::shape_str(shape));
      }
      // A matrix whose inputs are not a whole number of groups cannot be int4: it keeps its float type
      // (never the case for Whisper's widths, all multiples of 128); so do those keep_float names.
      if (block_linear && !kept_float(name, opts, &keep_float_matches) &&
          (opts.weights == WeightType::kInt8 ||
           (opts.weights == WeightType::kInt4 && shape[1] % opts.group_size == 0))) {
        const auto chosen = quantized_.find(name);
        const Tensor w = chosen == quantized_.end() ? scaled_columns(name, t) : Tensor();
        const ops::QuantizedWeight q = chosen != quantized_.end()          ? chosen->second
                                       : opts.weights == WeightType::kInt8 ? ops::quantize_int8(w)
                                                                           : ops::quantize_int4(w, opts.group_size);
        writer.add_tensor(name, q.codes);
        writer.add_tensor(name + "_scale", q.scale);
        continue;
      }
      if (const auto it = norm_divisor_.find(name); it != norm_divisor_.end()) {
        Tensor out = t.to_f32();  // f32, so that the division is the only rounding
        for (int64_t i = 0; i < out.numel(); ++i) out.data<float>()[i] /= it->second[size_t(i)];
        writer.add_tensor(name, out);
        continue;
      }
      const Tensor out = convert(t, quantize ? WeightType::kKeep : opts.weights);
      if (block_linear && out.dtype() == DType::kF32) meta.weight_quantization = WeightQuantization::kF32;
      writer.add_tensor(name, out);
    }
    for (size_t i = 0; i < opts.keep_float.size(); ++i) {
      if (keep_float_matches[i] == 0) {
        throw InvalidArgument("--keep-float pattern '" + opts.keep_float[i] +
                              "' matches no block matrix (names like decoder.blocks.0.mlp.fc1.weight)");
      }
    }
    if (opts.weights == WeightType::kInt8) meta.weight_quantization = WeightQuantization::kInt8;
    if (opts.weights == WeightType::kInt4) {
      meta.weight_quantization = WeightQuantization::kInt4;
      meta.group_size = opts.group_size;
    }
    if (static_cast<int>(vocab.size()) != meta.dims.n_vocab) {
      throw ModelError(source_ + ": vocabulary has " + std::to_string(vocab.size()) + " tokens, the model " +
                       std::to_string(meta.dims.n_vocab));
    }
    // English-only models have no language tokens (the engine format's rule); CTranslate2's config lists the
    // multilingual ids even for them, and in the English vocabulary those ids name other tokens.
    if (meta.dims.n_vocab == 51864) meta.lang_ids.clear();
    if (!opts.name.empty()) meta.name = opts.name;
    writer.set_metadata(std::move(meta));
    writer.set_vocabulary(std::move(vocab));
  }

 private:
  // t [n, k] with its columns multiplied by the layer's scale_columns() scale (f32), or t itself.
  Tensor scaled_columns(const std::string& name, const Tensor& t) const {
    const auto it = column_scale_.find(name);
    if (it == column_scale_.end()) return t;
    Tensor w = t.to_f32();
    const int64_t n = w.dim(0), k = w.dim(1);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < k; ++i) w.data<float>()[j * k + i] *= it->second[size_t(i)];
    }
    return w;
  }

  static Tensor convert(const Tensor& t, WeightType w) {
    // Vectors (norms, biases) and embeddings tables of positions stay as they are unless forced: they are
    // small and read once per window.
    const DType target = w == WeightType::kF16 ? DType::kF16 : w == WeightType::kF32 ? DType::kF32 : t.dtype();
    if (t.dtype() == DType::kBF16 || (target == DType::kF32 && t.dtype() != DType::kF32)) return t.to_f32();
    if (target == DType::kF16 && t.dtype() == DType::kF32) {
      Tensor out = Tensor::empty(t.shape(), DType::kF16);
      const float* s = t.data<float>();
      auto* d = out.data<uint16_t>();
      for (int64_t i = 0; i < t.numel(); ++i) d[i] = core::float_to_half(s[i]);
      return out;
    }
    return t;
  }

  std::string source_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::vector<float>> column_scale_, norm_divisor_;  // scale_columns()
  std::map<std::string, ops::QuantizedWeight> quantized_;                  // set_quantized()
};

// Concatenates tensors along dimension 0 (fusing q/k/v projections). A missing part (the key bias,
// which Whisper does not have) is given as an undefined tensor and filled with zeros of `rows` rows.
Tensor concat_rows(const std::vector<std::pair<Tensor, int64_t>>& parts) {
  Shape shape;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  for (const auto& [t, n] : parts) {
    if (t.defined()) {
      shape = t.shape();
      dtype = t.dtype();
    }
    rows += n;
  }
  shape[0] = rows;
  Tensor out = Tensor::zeros(shape, dtype);
  char* dst = static_cast<char*>(out.raw());
  const size_t row_bytes = out.nbytes() / static_cast<size_t>(rows);
  for (const auto& [t, n] : parts) {
    if (t.defined()) {
      if (t.dtype() != dtype || t.nbytes() != row_bytes * static_cast<size_t>(n)) {
        throw ModelError("cannot fuse projections of different shapes or types");
      }
      std::memcpy(dst, t.raw(), t.nbytes());
    }
    dst += row_bytes * static_cast<size_t>(n);
  }
  return out;
}

std::vector<std::string> vocabulary_from_strings(const std::vector<std::string>& bpe, int n_vocab) {
  std::vector<std::string> vocab;
  vocab.reserve(bpe.size());
  for (const auto& s : bpe) {
    // Special tokens are kept literally; ordinary tokens are byte-level BPE strings.
    if (s.size() > 4 && s.rfind("<|", 0) == 0 && s.compare(s.size() - 2, 2, "|>") == 0) {
      vocab.push_back(s);
    } else {
      vocab.push_back(tokenizer::byte_level_to_bytes(s));
    }
  }
  // Some exports stop before the timestamp tokens; they follow from the model's vocabulary size.
  if (static_cast<int>(vocab.size()) < n_vocab) {
    const int n_languages = n_vocab - 51765 - (n_vocab >= 51865 ? 1 : 0);
    const auto specials = tokenizer::special_token_texts(n_vocab == 51864 ? 0 : n_languages);
    const int first_special = n_vocab - static_cast<int>(specials.size());
    for (int id = static_cast<int>(vocab.size()); id < n_vocab; ++id) {
      if (id < first_special) throw ModelError("vocabulary is missing ordinary tokens");
      vocab.push_back(specials[static_cast<size_t>(id - first_special)]);
    }
  }
  return vocab;
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw IoError("cannot open '" + p.string() + "'");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// ---------------------------------------------------------------- CTranslate2

struct Ct2Variable {
  DType dtype;
  Shape shape;
  const char* data;
  uint64_t nbytes;
};

class Ct2Reader {
 public:
  explicit Ct2Reader(const std::string& path) : file_(path) {
    pos_ = 0;
    const uint32_t version = u32();
    if (version < 1 || version > 6) {
      throw ModelError("'" + path + "' is not a CTranslate2 model.bin this wisp reads (binary version " +
                       std::to_string(version) + ")");
    }
    if (version >= 2) {
      spec_ = str();
      u32();  // spec revision
      if (spec_ != "WhisperSpec") throw ModelError("'" + path + "' holds a " + spec_ + ", not a Whisper model");
    }
    const uint32_t n = u32();
    for (uint32_t i = 0; i < n; ++i) {
      const std::string name = str();
      const uint8_t rank = u8();
      Shape shape;
      for (int r = 0; r < rank; ++r) shape.push_back(u32());
      Ct2Variable v{};
      v.shape = shape;
      if (version >= 4) {
        v.dtype = ct2_dtype(u8());
        v.nbytes = u32();
      } else {
        const uint8_t item = u8();
        const uint32_t count = u32();
        v.dtype = item == 4 ? DType::kF32 : item == 2 ? DType::kF16 : DType::kI8;
        v.nbytes = uint64_t{item} * count;
      }
      need(v.nbytes);
      v.data = file_.data() + pos_;
      pos_ += v.nbytes;
      if (static_cast<uint64_t>(core::shape_numel(shape)) * core::dtype_size(v.dtype) != v.nbytes) {
        throw ModelError("'" + path + "': variable " + name + " has an inconsistent size");
      }
      vars_[name] = v;
    }
    if (version >= 3) {
      const uint32_t n_alias = u32();
      for (uint32_t i = 0; i < n_alias; ++i) {
        const std::string alias = str();
        const std::string target = str();
        if (vars_.count(target)) vars_[alias] = vars_[target];
      }
    }
  }

  bool has(const std::string& name) const { return vars_.count(name) != 0; }

  // The variable as a tensor; int8 weights with a per-row scale are dequantised to f32.
  Tensor tensor(const std::string& name) const {
    const auto it = vars_.find(name);
    if (it == vars_.end()) throw ModelError("'" + file_.path() + "' has no variable " + name);
    const Ct2Variable& v = it->second;
    Tensor t = Tensor::wrap(file_.owner(), v.data, v.shape, v.dtype);
    if (v.dtype == DType::kI8) {
      const Tensor scale = tensor(name + "_scale").to_f32();
      Tensor out = Tensor::empty(v.shape, DType::kF32);
      const int64_t rows = v.shape[0], cols = t.numel() / rows;
      const auto* q = t.data<int8_t>();
      const float* s = scale.data<float>();
      float* o = out.data<float>();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) o[r * cols + c] = static_cast<float>(q[r * cols + c]) / s[r];
      }
      return out;
    }
    return t;
  }

  int scalar_int(const std::string& name, int fallback) const {
    const auto it = vars_.find(name);
    if (it == vars_.end()) return fallback;
    const Ct2Variable& v = it->second;
    if (v.dtype == DType::kI16) {
      int16_t x;
      std::memcpy(&x, v.data, 2);
      return x;
    }
    if (v.dtype == DType::kI32) {
      int32_t x;
      std::memcpy(&x, v.data, 4);
      return x;
    }
    if (v.dtype == DType::kI8) return static_cast<int8_t>(*v.data);
    return fallback;
  }

 private:
  static DType ct2_dtype(uint8_t id) {
    switch (id) {
      case 0:
        return DType::kF32;
      case 1:
        return DType::kI8;
      case 2:
        return DType::kI16;
      case 3:
        return DType::kI32;
      case 4:
        return DType::kF16;
      case 5:
        return DType::kBF16;
      default:
        throw ModelError("unknown CTranslate2 dtype " + std::to_string(id));
    }
  }
  void need(uint64_t n) const {
    if (pos_ + n > file_.size()) throw ModelError("'" + file_.path() + "' is truncated");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(file_.data()[pos_++]);
  }
  uint32_t u32() {
    need(4);
    uint32_t v;
    std::memcpy(&v, file_.data() + pos_, 4);
    pos_ += 4;
    return v;
  }
  std::string str() {
    need(2);
    uint16_t n;
    std::memcpy(&n, file_.data() + pos_, 2);
    pos_ += 2;
    need(n);
    std::string s(file_.data() + pos_, n ? n - 1 : 0);  // the length counts a trailing NUL
    pos_ += n;
    return s;
  }

  MappedFile file_;
  uint64_t pos_ = 0;
  std::string spec_;
  std::map<std::string, Ct2Variable> vars_;
};

void put_linear(ModelBuilder& b, const Ct2Reader& r, const std::string& from, const std::string& to) {
  b.put(to + ".weight", r.tensor(from + "/weight"));
  b.put(to + ".bias", r.tensor(from + "/bias"));
}

void put_norm(ModelBuilder& b, const Ct2Reader& r, const std::string& from, const std::string& to) {
  b.put(to + ".weight", r.tensor(from + "/gamma"));
  b.put(to + ".bias", r.tensor(from + "/beta"));
}

std::string file_size_text(const fs::path& p) {
  std::error_code ec;
  return std::to_string(fs::file_size(p, ec)) + " bytes";
}

// ---------------------------------------------------------------- safetensors

class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path) : file_(path) {
    if (file_.size() < 8) throw ModelError("'" + path + "' is not a safetensors file (too short)");
    uint64_t n;
    std::memcpy(&n, file_.data(), 8);
    if (n > file_.size() - 8) throw ModelError("'" + path + "' is truncated (header)");
    json header;
    try {
      header = json::parse(file_.data() + 8, file_.data() + 8 + n);
    } catch (const json::exception& e) {
      throw ModelError("'" + path + "' has a corrupt safetensors header: " + e.what());
    }
    const uint64_t base = 8 + n;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      const std::string dt = it.value().at("dtype");
      const DType dtype = dt == "F16"    ? DType::kF16
                          : dt == "F32"  ? DType::kF32
                          : dt == "BF16" ? DType::kBF16
                                         : DType::kU8;
      if (dtype == DType::kU8) throw ModelError("'" + path + "': tensor " + it.key() + " has unsupported dtype " + dt);
      const Shape shape = it.value().at("shape").get<Shape>();
      const auto offs = it.value().at("data_offsets").get<std::vector<uint64_t>>();
      if (offs.size() != 2 || offs[1] < offs[0] || base + offs[1] > file_.size()) {
        throw ModelError("'" + path + "' is truncated: tensor " + it.key() + " ends past the end of the file");
      }
      if (static_cast<uint64_t>(core::shape_numel(shape)) * core::dtype_size(dtype) != offs[1] - offs[0]) {
        throw ModelError("'" + path + "': tensor " + it.key() + " has an inconsistent size");
      }
      std::string name = it.key();
      if (name.rfind("model.", 0) == 0) name = name.substr(6);
      tensors_[name] = Tensor::wrap(file_.owner(), file_.data() + base + offs[0], shape, dtype);
    }
  }
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }

 private:
  MappedFile file_;
  std::map<std::string, Tensor> tensors_;
};

}  // namespace

SourceKind detect_source(const std::string& path) {
  const fs::path p(path);
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.bin")) return SourceKind::kCTranslate2;
    if (fs::exists(p / "model.safetensors") || fs::exists(p / "model.safetensors.index.json")) {
      return SourceKind::kSafetensors;
    }
    return SourceKind::kUnknown;
  }
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  if (in && std::memcmp(magic, kMagic, 8) == 0) return SourceKind::kEngine;
  return SourceKind::kUnknown;
}

void import_ctranslate2(const std::string& dir, const ConvertOptions& opts, EngineWriter& writer) {
  const fs::path root(dir);
  const Ct2Reader r((root / "model.bin").string());
  ModelBuilder b(dir);
  b.put("encoder.conv1.weight", r.tensor("encoder/conv1/weight"));
  b.put("encoder.conv1.bias", r.tensor("encoder/conv1/bias"));
  b.put("encoder.conv2.weight", r.tensor("encoder/conv2/weight"));
  b.put("encoder.conv2.bias", r.tensor("encoder/conv2/bias"));
  b.put("encoder.positional_embedding", r.tensor("encoder/position_encodings/encodings"));
  put_norm(b, r, "encoder/layer_norm", "encoder.ln_post");
  b.put("decoder.token_embedding.weight", r.tensor("decoder/embeddings/weight"));
  b.put("decoder.positional_embedding", r.tensor("decoder/position_encodings/encodings"));
  put_norm(b, r, "decoder/layer_norm", "decoder.ln");
  for (const std::string stack : {"encoder", "decoder"}) {
    for (int i = 0; r.has(stack + "/layer_" + std::to_string(i) + "/ffn/linear_0/weight"); ++i) {
      const std::string src = stack + "/layer_" + std::to_string(i);
      put_norm(b, r, src + "/self_attention/layer_norm", names::block(stack, i, "attn_ln"));
      put_linear(b, r, src + "/self_attention/linear_0", names::block(stack, i, "attn.qkv"));
      put_linear(b, r, src + "/self_attention/linear_1", names::block(stack, i, "attn.out"));
      put_norm(b, r, src + "/ffn/layer_norm", names::block(stack, i, "mlp_ln"));
      put_linear(b, r, src + "/ffn/linear_0", names::block(stack, i, "mlp.fc1"));
      put_linear(b, r, src + "/ffn/linear_1", names::block(stack, i, "mlp.fc2"));
      if (stack == "decoder") {
        put_norm(b, r, src + "/attention/layer_norm", names::block(stack, i, "cross_attn_ln"));
        put_linear(b, r, src + "/attention/linear_0", names::block(stack, i, "cross_attn.query"));
        put_linear(b, r, src + "/attention/linear_1", names::block(stack, i, "cross_attn.kv"));
        put_linear(b, r, src + "/attention/linear_2", names::block(stack, i, "cross_attn.out"));
      }
    }
  }
  ModelMetadata meta;
  meta.dims = b.infer_dims(r.scalar_int("encoder/num_heads", 0), r.scalar_int("decoder/num_heads", 0));

  if (fs::exists(root / "config.json")) {
    const json cfg = read_json(root / "config.json");
    meta.suppress_tokens = cfg.value("suppress_ids", std::vector<int>{});
    meta.suppress_tokens_begin = cfg.value("suppress_ids_begin", std::vector<int>{});
    meta.lang_ids = cfg.value("lang_ids", std::vector<int>{});
    meta.alignment_heads = cfg.value("alignment_heads", std::vector<std::pair<int, int>>{});
  }
  std::vector<std::string> bpe;
  if (fs::exists(root / "vocabulary.json")) {
    bpe = read_json(root / "vocabulary.json").get<std::vector<std::string>>();
  } else if (fs::exists(root / "vocabulary.txt")) {
    bpe = read_lines(root / "vocabulary.txt");
  } else {
    throw ModelError(dir + ": no vocabulary.json or vocabulary.txt");
  }
  meta.name = meta.dims.n_vocab == 51864 ? "english-only" : "multilingual";
  meta.source = {{"importer", "ctranslate2"},
                 {"path", fs::absolute(root).string()},
                 {"model.bin", file_size_text(root / "model.bin")}};
  b.finish(std::move(meta), vocabulary_from_strings(bpe, b.infer_dims(0, 0).n_vocab), opts, writer);
}

void import_safetensors(const std::string& dir, const ConvertOptions& opts, EngineWriter& writer) {
  const fs::path root(dir);
  std::vector<std::unique_ptr<SafetensorsReader>> shards;
  if (fs::exists(root / "model.safetensors.index.json")) {
    const json index = read_json(root / "model.safetensors.index.json");
    std::map<std::string, bool> files;
    for (auto it = index.at("weight_map").begin(); it != index.at("weight_map").end(); ++it) {
      files[it.value().get<std::string>()] = true;
    }
    for (const auto& [f, _] : files) shards.push_back(std::make_unique<SafetensorsReader>((root / f).string()));
  } else {
    shards.push_back(std::make_unique<SafetensorsReader>((root / "model.safetensors").string()));
  }
  std::map<std::string, Tensor> t;
  for (const auto& s : shards) t.insert(s->tensors().begin(), s->tensors().end());
  auto get = [&](const std::string& name) -> Tensor {
    const auto it = t.find(name);
    if (it == t.end()) throw ModelError(dir + ": safetensors has no tensor " + name);
    return it->second;
  };
  auto opt = [&](const std::string& name) -> Tensor {
    const auto it = t.find(name);
    return it == t.end() ? Tensor() : it->second;
  };

  const json cfg = read_json(root / "config.json");
  ModelBuilder b(dir);
  b.put("encoder.conv1.weight", get("encoder.conv1.weight"));
  b.put("encoder.conv1.bias", get("encoder.conv1.bias"));
  b.put("encoder.conv2.weight", get("encoder.conv2.weight"));
  b.put("encoder.conv2.bias", get("encoder.conv2.bias"));
  b.put("encoder.positional_embedding", get("encoder.embed_positions.weight"));
  b.put("encoder.ln_post.weight", get("encoder.layer_norm.weight"));
  b.put("encoder.ln_post.bias", get("encoder.layer_norm.bias"));
  b.put("decoder.token_embedding.weight", get("decoder.embed_tokens.weight"));
  b.put("decoder.positional_embedding", get("decoder.embed_positions.weight"));
  b.put("decoder.ln.weight", get("decoder.layer_norm.weight"));
  b.put("decoder.ln.bias", get("decoder.layer_norm.bias"));

  auto linear = [&](const std::string& from, const std::string& to) {
    b.put(to + ".weight", get(from + ".weight"));
    b.put(to + ".bias", get(from + ".bias"));
  };
  // Fuses separate projections into one [sum(rows), in] matrix; the key projection has no bias.
  auto fused = [&](const std::string& prefix, const std::vector<std::string>& parts, const std::string& to) {
    std::vector<std::pair<Tensor, int64_t>> w, bias;
    for (const auto& p : parts) {
      const Tensor wt = get(prefix + p + ".weight");
      w.push_back({wt, wt.dim(0)});
      bias.push_back({opt(prefix + p + ".bias"), wt.dim(0)});
    }
    b.put(to + ".weight", concat_rows(w));
    b.put(to + ".bias", concat_rows(bias));
  };
  const int enc_layers = cfg.at("encoder_layers");
  const int dec_layers = cfg.at("decoder_layers");
  for (int i = 0; i < enc_layers + dec_layers; ++i) {
    const bool enc = i < enc_layers;
    const std::string stack = enc ? "encoder" : "decoder";
    const int l = enc ? i : i - enc_layers;
    const std::string src = stack + ".layers." + std::to_string(l) + ".";
    linear(src + "self_attn_layer_norm", names::block(stack, l, "attn_ln"));
    fused(src + "self_attn.", {"q_proj", "k_proj", "v_proj"}, names::block(stack, l, "attn.qkv"));
    linear(src + "self_attn.out_proj", names::block(stack, l, "attn.out"));
    linear(src + "final_layer_norm", names::block(stack, l, "mlp_ln"));
    linear(src + "fc1", names::block(stack, l, "mlp.fc1"));
    linear(src + "fc2", names::block(stack, l, "mlp.fc2"));
    if (!enc) {
      linear(src + "encoder_attn_layer_norm", names::block(stack, l, "cross_attn_ln"));
      linear(src + "encoder_attn.q_proj", names::block(stack, l, "cross_attn.query"));
      fused(src + "encoder_attn.", {"k_proj", "v_proj"}, names::block(stack, l, "cross_attn.kv"));
      linear(src + "encoder_attn.out_proj", names::block(stack, l, "cross_attn.out"));
    }
  }
  ModelMetadata meta;
  meta.dims = b.infer_dims(cfg.value("encoder_attention_heads", 0), cfg.value("decoder_attention_heads", 0));
  if (fs::exists(root / "generation_config.json")) {
    const json gen = read_json(root / "generation_config.json");
    meta.suppress_tokens = gen.value("suppress_tokens", std::vector<int>{});
    meta.suppress_tokens_begin = gen.value("begin_suppress_tokens", std::vector<int>{});
    if (gen.contains("lang_to_id")) {
      for (auto it = gen["lang_to_id"].begin(); it != gen["lang_to_id"].end(); ++it) {
        meta.lang_ids.push_back(it.value().get<int>());
      }
      std::sort(meta.lang_ids.begin(), meta.lang_ids.end());
    }
    meta.alignment_heads = gen.value("alignment_heads", std::vector<std::pair<int, int>>{});
  }
  // Vocabulary: tokenizer.json (HF fast tokenizer), else vocab.json + added_tokens.json, else CT2 files.
  std::vector<std::string> bpe;
  auto place = [&](const std::string& tok, int id) {
    if (id < 0) return;
    if (static_cast<size_t>(id) >= bpe.size()) bpe.resize(static_cast<size_t>(id) + 1);
    bpe[static_cast<size_t>(id)] = tok;
  };
  if (fs::exists(root / "tokenizer.json")) {
    const json tok = read_json(root / "tokenizer.json");
    for (auto it = tok.at("model").at("vocab").begin(); it != tok.at("model").at("vocab").end(); ++it) {
      place(it.key(), it.value().get<int>());
    }
    for (const auto& a : tok.value("added_tokens", json::array())) place(a.at("content"), a.at("id"));
  } else if (fs::exists(root / "vocab.json")) {
    const json v = read_json(root / "vocab.json");
    for (auto it = v.begin(); it != v.end(); ++it) place(it.key(), it.value().get<int>());
    if (fs::exists(root / "added_tokens.json")) {
      const json a = read_json(root / "added_tokens.json");
      for (auto it = a.begin(); it != a.end(); ++it) place(it.key(), it.value().get<int>());
    }
  } else if (fs::exists(root / "vocabulary.json")) {
    bpe = read_json(root / "vocabulary.json").get<std::vector<std::string>>();
  } else if (fs::exists(root / "vocabulary.txt")) {
    bpe = read_lines(root / "vocabulary.txt");
  } else {
    throw ModelError(dir + ": no tokenizer.json, vocab.json or vocabulary file");
  }
  if (static_cast<int>(bpe.size()) > meta.dims.n_vocab) bpe.resize(static_cast<size_t>(meta.dims.n_vocab));
  if (meta.suppress_tokens_begin.empty()) {
    // The reference's default: blank and end-of-text at the first sampled step.
    meta.suppress_tokens_begin = {220, meta.dims.n_vocab == 51864 ? 50256 : 50257};
  }
  meta.name = meta.dims.n_vocab == 51864 ? "english-only" : "multilingual";
  meta.source = {{"importer", "safetensors"}, {"path", fs::absolute(root).string()}};
  const int n_vocab = meta.dims.n_vocab;
  b.finish(std::move(meta), vocabulary_from_strings(bpe, n_vocab), opts, writer);
}

namespace {

// For int8 / int4: every block linear layer whose input norm has calibrated statistics in `f`
// (names::norm_stats) gets the column scale of ops::search_column_scaling, unless plain rounding is as good.
// Returns a summary for the file's provenance ("" when the source has no statistics).
std::string scale_by_activations(const EngineFile& f, const ModelDims& d, const ConvertOptions& opts, ModelBuilder& b) {
  const int bits = opts.weights == WeightType::kInt8 ? 8 : opts.weights == WeightType::kInt4 ? 4 : 0;
  if (bits == 0) return "";
  int measured = 0, scaled = 0;
  double exponents = 0.0, gain = 0.0;
  for (const bool decoder : {false, true}) {
    const std::string stack = decoder ? "decoder" : "encoder";
    for (int i = 0; i < (decoder ? d.n_text_layer : d.n_audio_layer); ++i) {
      for (const names::NormedLinear& p : names::kNormedLinears) {
        if (p.decoder_only && !decoder) continue;
        const std::string stats_name = names::norm_stats(stack, i, p.norm);
        if (!f.has(stats_name)) continue;
        const Tensor stats = f.tensor(stats_name).to_f32();
        const std::string weight = names::block(stack, i, std::string(p.linear) + ".weight");
        const Tensor& w = b.get(weight);
        if (stats.rank() != 2 || stats.dim(0) != 2 || w.rank() != 2 || stats.dim(1) != w.dim(1)) {
          throw ModelError(stats_name + " is " + stats.describe() + ", its layer's weight " + w.describe());
        }
        // Layers that stay float (finish()) are not rounded: nothing to scale, and their norm stays as it is.
        if ((bits == 4 && w.dim(1) % opts.group_size != 0) || kept_float(weight, opts)) continue;
        const int64_t k = w.dim(1);
        const std::span<const float> mean_abs(stats.data<float>(), size_t(k)),
            mean_sq(stats.data<float>() + k, size_t(k));
        ops::ColumnScaling c = ops::search_column_scaling(w, mean_abs, mean_sq, bits, opts.group_size);
        ++measured;
        if (c.exponent == 0.0f) continue;
        ++scaled;
        exponents += c.exponent;
        gain += c.plain_error > 0.0 ? c.error / c.plain_error : 1.0;
        b.scale_columns(weight, names::block(stack, i, p.norm), std::move(c.scale));
      }
    }
  }
  if (measured == 0) return "";
  std::ostringstream s;
  s << scaled << " of " << measured << " layers after a norm";
  if (scaled > 0) s << ", mean exponent " << exponents / scaled << ", error model " << gain / scaled << "x plain";
  return s.str();
}

// For int8 / int4: every block linear layer with a calibrated input Gram matrix in `f` (names::input_gram) gets
// GPTQ's codes. Returns a summary for the file's provenance ("" when the source has no Gram matrices).
std::string round_by_gptq(const EngineFile& f, const ModelDims& d, const ConvertOptions& opts, ModelBuilder& b) {
  int rounded = 0;
  for (const bool decoder : {false, true}) {
    const std::string stack = decoder ? "decoder" : "encoder";
    for (int i = 0; i < (decoder ? d.n_text_layer : d.n_audio_layer); ++i) {
      for (const names::BlockLinearName& l : names::kBlockLinears) {
        if (l.decoder_only && !decoder) continue;
        const std::string gram_name = names::input_gram(stack, i, l.linear);
        const std::string weight = names::block(stack, i, std::string(l.linear) + ".weight");
        if (!f.has(gram_name) || kept_float(weight, opts)) continue;
        const Tensor& w = b.get(weight);
        if (opts.weights == WeightType::kInt4 && w.dim(1) % opts.group_size != 0) continue;
        const Tensor gram = f.tensor(gram_name).to_f32();
        if (gram.rank() != 2 || w.rank() != 2 || gram.dim(0) != w.dim(1) || gram.dim(1) != w.dim(1)) {
          throw ModelError(gram_name + " is " + gram.describe() + ", its layer's weight " + w.describe());
        }
        b.set_quantized(weight, opts.weights == WeightType::kInt8 ? ops::gptq_int8(w, gram)
                                                                  : ops::gptq_int4(w, gram, opts.group_size));
        ++rounded;
      }
    }
  }
  return rounded == 0 ? "" : std::to_string(rounded) + " block linear layers rounded by GPTQ";
}

}  // namespace

void import_engine(const std::string& path, const ConvertOptions& opts, EngineWriter& writer) {
  const EngineFile f = EngineFile::open(path);
  ModelMetadata meta = f.metadata();
  if (meta.weight_quantization == WeightQuantization::kInt8 || meta.weight_quantization == WeightQuantization::kInt4) {
    throw InvalidArgument("'" + path + "' holds " + weight_quantization_name(meta.weight_quantization) +
                          " weights; convert from the f16 or f32 model instead");
  }
  ModelBuilder b(path);
  for (const TensorEntry& e : f.entries()) b.put(e.name, f.tensor(e.name));
  meta.source["converted_from"] = fs::absolute(path).string();
  // A conversion step that rests on calibration statistics: it returns its summary (recorded in the metadata
  // under `key`), or nothing when the source has none of its statistics.
  const auto calibrated_step = [&](const char* key, const std::string& summary, const std::string& needs) {
    if (summary.empty()) throw InvalidArgument(needs + "; '" + path + "' has none");
    meta.source[key] = summary;
  };
  if (opts.activation_scaling) {
    calibrated_step("activation_scaling", scale_by_activations(f, meta.dims, opts, b),
                    "activation scaling needs the input statistics of `wisp calibrate`");
  }
  if (opts.gptq) {
    calibrated_step("gptq", round_by_gptq(f, meta.dims, opts, b),
                    "GPTQ needs the input Gram matrices of `wisp calibrate --input-gram`");
  }
  const int n_text_layer = meta.dims.n_text_layer;
  b.finish(std::move(meta), f.vocabulary(), opts, writer);
  // The K/V calibration (`wisp calibrate`) travels with the weights, so that a calibrated model quantised to
  // int8/int4 still runs the int8 K/V cache. Its maxima were measured with the source's weights, which the
  // quantisation moves by a rounding each; `wisp calibrate` on the result measures them with its own.
  for (int l = 0; l < n_text_layer; ++l) {
    for (const bool cross : {false, true}) {
      const std::string name = names::kv_amax(l, cross);
      if (f.has(name)) writer.add_tensor(name, f.tensor(name));
    }
  }
}

void convert_model(const std::string& src, const std::string& dst, const ConvertOptions& opts) {
  if (opts.weights == WeightType::kInt4 && opts.group_size != 64 && opts.group_size != 128) {
    throw InvalidArgument("int4 group size " + std::to_string(opts.group_size) + " is not supported (64 or 128)");
  }
  if (!fs::exists(src)) throw IoError("model source '" + src + "' does not exist");
  if (opts.activation_scaling && opts.weights != WeightType::kInt8 && opts.weights != WeightType::kInt4) {
    throw InvalidArgument("activation scaling applies to int8 and int4 weights only");
  }
  if (!opts.keep_float.empty() && opts.weights != WeightType::kInt8 && opts.weights != WeightType::kInt4) {
    throw InvalidArgument("--keep-float applies to int8 and int4 weights only");
  }
  if (opts.gptq && opts.weights != WeightType::kInt8 && opts.weights != WeightType::kInt4) {
    throw InvalidArgument("GPTQ applies to int8 and int4 weights only");
  }
  if (opts.gptq && opts.activation_scaling) {
    throw InvalidArgument(
        "GPTQ and activation scaling cannot be combined (the Gram matrices are of the unscaled inputs)");
  }
  if (opts.gptq && detect_source(src) != SourceKind::kEngine) {
    throw InvalidArgument("GPTQ needs a .wisp source measured by `wisp calibrate --input-gram`, not '" + src + "'");
  }
  if (opts.activation_scaling && detect_source(src) != SourceKind::kEngine) {
    throw InvalidArgument("activation scaling needs a .wisp source measured by `wisp calibrate`, not '" + src + "'");
  }
  EngineWriter writer;
  switch (detect_source(src)) {
    case SourceKind::kCTranslate2:
      import_ctranslate2(src, opts, writer);
      break;
    case SourceKind::kSafetensors:
      import_safetensors(src, opts, writer);
      break;
    case SourceKind::kEngine:
      import_engine(src, opts, writer);
      break;
    case SourceKind::kUnknown:
      throw ModelError("'" + src +
                       "' is neither a CTranslate2 directory (model.bin) nor a Hugging Face directory "
                       "(model.safetensors)");
  }
  writer.write(dst);
}

}  // namespace wisp::format
