#include "format/engine_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "format/mapped_file.h"
#include "wisp/errors.h"

namespace wisp::format {

namespace {

using nlohmann::json;

constexpr size_t kPreambleSize = 8 + 4 + 4 + 8;  // magic, version, reserved, header length

uint64_t align_up(uint64_t v) { return (v + kAlignment - 1) / kAlignment * kAlignment; }

json dims_to_json(const ModelDims& d) {
  return {{"n_mels", d.n_mels},
          {"n_vocab", d.n_vocab},
          {"n_audio_ctx", d.n_audio_ctx},
          {"n_audio_state", d.n_audio_state},
          {"n_audio_head", d.n_audio_head},
          {"n_audio_layer", d.n_audio_layer},
          {"n_text_ctx", d.n_text_ctx},
          {"n_text_state", d.n_text_state},
          {"n_text_head", d.n_text_head},
          {"n_text_layer", d.n_text_layer}};
}

ModelDims dims_from_json(const json& j) {
  ModelDims d;
  d.n_mels = j.at("n_mels");
  d.n_vocab = j.at("n_vocab");
  d.n_audio_ctx = j.at("n_audio_ctx");
  d.n_audio_state = j.at("n_audio_state");
  d.n_audio_head = j.at("n_audio_head");
  d.n_audio_layer = j.at("n_audio_layer");
  d.n_text_ctx = j.at("n_text_ctx");
  d.n_text_state = j.at("n_text_state");
  d.n_text_head = j.at("n_text_head");
  d.n_text_layer = j.at("n_text_layer");
  return d;
}

constexpr WeightQuantization kWeightQuantizations[] = {WeightQuantization::kF32, WeightQuantization::kF16,
                                                       WeightQuantization::kInt8, WeightQuantization::kInt4};

WeightQuantization weight_quantization_from_name(const std::string& name) {
  for (const WeightQuantization q : kWeightQuantizations) {
    if (name == weight_quantization_name(q)) return q;
  }
  throw ModelError("unknown weight_quantization '" + name + "'");
}

const char* kVocabBytes = "tokenizer.vocab_bytes";
const char* kVocabOffsets = "tokenizer.vocab_offsets";

}  // namespace

const char* weight_quantization_name(WeightQuantization q) {
  switch (q) {
    case WeightQuantization::kF32:
      return "f32";
    case WeightQuantization::kF16:
      return "f16";
    case WeightQuantization::kInt8:
      return "int8";
    case WeightQuantization::kInt4:
      return "int4";
  }
  return "?";
}

EngineFile EngineFile::open(const std::string& path) {
  EngineFile f;
  f.path_ = path;
  const MappedFile file(path);
  f.size_ = file.size();
  f.mapping_ = file.owner();
  if (f.size_ < kPreambleSize) {
    throw ModelError("'" + path + "' is not a wisp engine file (too short); convert a model with `wisp convert`");
  }
  const uint64_t size = f.size_;
  const char* base = file.data();

  if (std::memcmp(base, kMagic, sizeof(kMagic)) != 0) {
    throw ModelError("'" + path + "' is not a wisp engine file (bad magic); convert a model with `wisp convert`");
  }
  uint32_t version;
  uint64_t header_len;
  std::memcpy(&version, base + 8, 4);
  std::memcpy(&header_len, base + 16, 8);
  if (version != kVersion) {
    throw ModelError("'" + path + "' is engine file version " + std::to_string(version) + ", this wisp reads version " +
                     std::to_string(kVersion) + "; re-run `wisp convert`");
  }
  if (header_len > size - kPreambleSize) throw ModelError("'" + path + "' is truncated (header)");

  json header;
  try {
    header = json::parse(base + kPreambleSize, base + kPreambleSize + header_len);
    f.meta_.name = header.value("name", "");
    f.meta_.dims = dims_from_json(header.at("dims"));
    f.meta_.suppress_tokens = header.at("suppress_tokens").get<std::vector<int>>();
    f.meta_.suppress_tokens_begin = header.at("suppress_tokens_begin").get<std::vector<int>>();
    f.meta_.lang_ids = header.at("lang_ids").get<std::vector<int>>();
    f.meta_.alignment_heads = header.at("alignment_heads").get<std::vector<std::pair<int, int>>>();
    f.meta_.source = header.value("source", std::map<std::string, std::string>{});
    f.meta_.weight_quantization = weight_quantization_from_name(header.value("weight_quantization", "f16"));
    f.meta_.group_size = header.value("group_size", 0);
    for (const auto& t : header.at("tensors")) {
      TensorEntry e;
      e.name = t.at("name");
      e.dtype = core::dtype_from_name(t.at("dtype"));
      e.shape = t.at("shape").get<core::Shape>();
      e.offset = t.at("offset");
      e.nbytes = t.at("nbytes");
      f.entries_.push_back(std::move(e));
    }
  } catch (const json::exception& e) {
    throw ModelError("'" + path + "' has a corrupt header: " + e.what());
  } catch (const ModelError& e) {  // an unknown dtype name: the message must still name the file
    throw ModelError("'" + path + "' has a corrupt header: " + e.what());
  }

  const bool int4 = f.meta_.weight_quantization == WeightQuantization::kInt4;
  if (int4 ? f.meta_.group_size != 64 && f.meta_.group_size != 128 : f.meta_.group_size != 0) {
    throw ModelError("'" + path + "': group_size " + std::to_string(f.meta_.group_size) + " does not fit " +
                     weight_quantization_name(f.meta_.weight_quantization) + " weights (int4: 64 or 128, else 0)");
  }

  for (size_t i = 0; i < f.entries_.size(); ++i) {
    const TensorEntry& e = f.entries_[i];
    const uint64_t expect = static_cast<uint64_t>(core::shape_numel(e.shape)) * core::dtype_size(e.dtype);
    if (expect != e.nbytes) throw ModelError("'" + path + "': tensor " + e.name + " has an inconsistent size");
    if (e.offset % kAlignment != 0) throw ModelError("'" + path + "': tensor " + e.name + " is not aligned");
    if (e.offset > size || e.nbytes > size - e.offset) {
      throw ModelError("'" + path + "' is truncated: tensor " + e.name + " ends past the end of the file");
    }
    if (!f.index_.emplace(e.name, i).second) throw ModelError("'" + path + "': duplicate tensor " + e.name);
  }

  const core::Tensor bytes = f.tensor(kVocabBytes);
  const core::Tensor offsets = f.tensor(kVocabOffsets);
  if (bytes.dtype() != core::DType::kU8 || offsets.dtype() != core::DType::kI32 || offsets.rank() != 1 ||
      offsets.dim(0) < 2) {
    throw ModelError("'" + path + "': malformed vocabulary");
  }
  const auto* off = offsets.data<int32_t>();
  const auto* chars = reinterpret_cast<const char*>(bytes.data<uint8_t>());
  const int64_t n_tokens = offsets.dim(0) - 1;
  f.vocab_.reserve(static_cast<size_t>(n_tokens));
  for (int64_t i = 0; i < n_tokens; ++i) {
    if (off[i] < 0 || off[i + 1] < off[i] || off[i + 1] > bytes.numel()) {
      throw ModelError("'" + path + "': malformed vocabulary offsets");
    }
    f.vocab_.emplace_back(chars + off[i], chars + off[i + 1]);
  }
  return f;
}

bool EngineFile::has(const std::string& name) const { return index_.count(name) != 0; }

core::Tensor EngineFile::tensor(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw ModelError("'" + path_ + "' has no tensor '" + name + "'");
  const TensorEntry& e = entries_[it->second];
  const auto* base = static_cast<const char*>(mapping_.get());
  return core::Tensor::wrap(mapping_, base + e.offset, e.shape, e.dtype);
}

void EngineWriter::add_tensor(const std::string& name, core::Tensor t) {
  for (const auto& [n, _] : tensors_) {
    if (n == name) throw InternalError("tensor " + name + " added twice");
  }
  tensors_.emplace_back(name, std::move(t));
}

void EngineWriter::write(const std::string& path) const {
  // The vocabulary travels as two tensors so that reading it needs no parsing of escaped strings.
  std::vector<std::pair<std::string, core::Tensor>> all = tensors_;
  size_t total = 0;
  for (const auto& t : vocab_) total += t.size();
  core::Tensor bytes = core::Tensor::empty({static_cast<int64_t>(total)}, core::DType::kU8);
  core::Tensor offsets = core::Tensor::empty({static_cast<int64_t>(vocab_.size() + 1)}, core::DType::kI32);
  {
    auto* b = bytes.data<uint8_t>();
    auto* o = offsets.data<int32_t>();
    size_t pos = 0;
    for (size_t i = 0; i < vocab_.size(); ++i) {
      o[i] = static_cast<int32_t>(pos);
      std::memcpy(b + pos, vocab_[i].data(), vocab_[i].size());
      pos += vocab_[i].size();
    }
    o[vocab_.size()] = static_cast<int32_t>(pos);
  }
  all.emplace_back(kVocabBytes, bytes);
  all.emplace_back(kVocabOffsets, offsets);

  json tensors = json::array();
  // Offsets depend on the header length, which depends on the offsets: lay the data out after a header
  // reservation computed with worst-case (20-digit) offsets.
  for (const auto& [name, t] : all) {
    tensors.push_back({{"name", name},
                       {"dtype", core::dtype_name(t.dtype())},
                       {"shape", t.shape()},
                       {"offset", uint64_t{99999999999999999}},
                       {"nbytes", t.nbytes()}});
  }
  json header = {{"format", "wisp-engine"},
                 {"version", kVersion},
                 {"name", meta_.name},
                 {"dims", dims_to_json(meta_.dims)},
                 {"suppress_tokens", meta_.suppress_tokens},
                 {"suppress_tokens_begin", meta_.suppress_tokens_begin},
                 {"lang_ids", meta_.lang_ids},
                 {"alignment_heads", meta_.alignment_heads},
                 {"source", meta_.source},
                 {"weight_quantization", weight_quantization_name(meta_.weight_quantization)},
                 {"group_size", meta_.group_size},
                 {"tensors", tensors}};
  const uint64_t reserved = align_up(kPreambleSize + header.dump().size() + 64);
  uint64_t pos = reserved;
  for (size_t i = 0; i < all.size(); ++i) {
    header["tensors"][i]["offset"] = pos;
    pos = align_up(pos + all[i].second.nbytes());
  }
  std::string text = header.dump();
  text.resize(reserved - kPreambleSize, ' ');  // JSON allows trailing whitespace

  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError("cannot write '" + path + "': " + std::strerror(errno));
    out.write(kMagic, sizeof(kMagic));
    const uint32_t version = kVersion, zero = 0;
    const uint64_t header_len = text.size();
    out.write(reinterpret_cast<const char*>(&version), 4);
    out.write(reinterpret_cast<const char*>(&zero), 4);
    out.write(reinterpret_cast<const char*>(&header_len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    uint64_t at = reserved;
    const std::string pad(kAlignment, '\0');
    for (const auto& [name, t] : all) {
      out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
      const uint64_t next = align_up(at + t.nbytes());
      out.write(pad.data(), static_cast<std::streamsize>(next - at - t.nbytes()));
      at = next;
    }
    out.flush();
    if (!out) {
      std::filesystem::remove(tmp);
      throw IoError("cannot write '" + path + "' (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    throw IoError("cannot write '" + path + "': " + ec.message());
  }
}

}  // namespace wisp::format
