// Quantised engine files (docs/engine-format.md, docs/quantization.md): the header keys and the quantised
// tensors written and read back, files without the keys read as f16, bad header values refused, and
// `convert` from an engine file: which tensors it quantises, with exactly the quantisers' codes, which it keeps
// byte for byte, and the option and source errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "format/engine_file.h"
#include "format/importers.h"
#include "format/tensor_names.h"
#include "ops/column_scaling.h"
#include "ops/ops.h"
#include "support/expect_error.h"
#include "support/synthetic_model.h"
#include "support/test_paths.h"
#include "wisp/errors.h"

namespace wisp::format {
namespace {

using core::DType;
using core::Shape;
using core::Tensor;
using nlohmann::json;
using test::ScratchDir;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// The file's JSON header and where it sits (after the 24-byte preamble).
json read_header(const std::string& bytes) {
  uint64_t len;
  std::memcpy(&len, bytes.data() + 16, 8);
  return json::parse(bytes.substr(24, len));
}

// Rewrites the header of the file at `path` in place (same length, padded with spaces).
void edit_header(const std::string& path, const std::function<void(json&)>& edit) {
  std::string bytes = slurp(path);
  uint64_t len;
  std::memcpy(&len, bytes.data() + 16, 8);
  json h = json::parse(bytes.substr(24, len));
  edit(h);
  std::string text = h.dump();
  ASSERT_LE(text.size(), len);
  text.resize(len, ' ');
  bytes.replace(24, len, text);
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

using test::expect_error;

// Every block matrix the converter quantises (docs/quantization.md), by engine-file name.
std::vector<std::string> block_linear_weights(const ModelDims& d) {
  std::vector<std::string> names;
  for (const std::string stack : {"encoder", "decoder"}) {
    const int layers = stack == "encoder" ? d.n_audio_layer : d.n_text_layer;
    for (int i = 0; i < layers; ++i) {
      for (const char* leaf : {"attn.qkv", "attn.out", "mlp.fc1", "mlp.fc2"}) {
        names.push_back(names::block(stack, i, std::string(leaf) + ".weight"));
      }
      if (stack == "decoder") {
        for (const char* leaf : {"cross_attn.query", "cross_attn.kv", "cross_attn.out"}) {
          names.push_back(names::block(stack, i, std::string(leaf) + ".weight"));
        }
      }
    }
  }
  return names;
}

// ---------------------------------------------------------------- header keys and tensors

TEST(QuantizedEngineFile, WritesAndReadsCodesScalesAndHeaderKeys) {
  ScratchDir dir;
  const std::string path = dir.file("q.wisp");
  Tensor codes8 = Tensor::empty({3, 5}, DType::kI8);
  Tensor packed = Tensor::empty({3, 64}, DType::kU8);
  Tensor scale = Tensor::empty({3, 1}, DType::kF32);
  for (int64_t i = 0; i < codes8.numel(); ++i) codes8.data<int8_t>()[i] = static_cast<int8_t>(i * 17 - 127);
  for (int64_t i = 0; i < packed.numel(); ++i) packed.data<uint8_t>()[i] = static_cast<uint8_t>(i * 7);
  for (int64_t i = 0; i < scale.numel(); ++i) scale.data<float>()[i] = 0.25f * static_cast<float>(i + 1);
  EngineWriter w;
  ModelMetadata meta;
  meta.weight_quantization = WeightQuantization::kInt4;
  meta.group_size = 128;
  w.set_metadata(meta);
  w.set_vocabulary({"a", "b"});
  w.add_tensor("x.weight", packed);
  w.add_tensor("x.weight_scale", scale);
  w.add_tensor("y.weight", codes8);
  w.write(path);

  const json h = read_header(slurp(path));
  EXPECT_EQ(h.at("weight_quantization"), "int4");
  EXPECT_EQ(h.at("group_size"), 128);
  const EngineFile f = EngineFile::open(path);
  EXPECT_EQ(f.metadata().weight_quantization, WeightQuantization::kInt4);
  EXPECT_EQ(f.metadata().group_size, 128);
  EXPECT_TRUE(same_bytes(f.tensor("x.weight"), packed));
  EXPECT_TRUE(same_bytes(f.tensor("x.weight_scale"), scale));
  EXPECT_TRUE(same_bytes(f.tensor("y.weight"), codes8));
}

TEST(QuantizedEngineFile, FileWithoutTheKeysReadsAsF16) {
  ScratchDir dir;
  const std::string path = dir.file("old.wisp");
  EngineWriter w;
  w.set_vocabulary({"a", "b"});
  w.write(path);
  edit_header(path, [](json& h) {
    h.erase("weight_quantization");
    h.erase("group_size");
  });
  const EngineFile f = EngineFile::open(path);
  EXPECT_EQ(f.metadata().weight_quantization, WeightQuantization::kF16);
  EXPECT_EQ(f.metadata().group_size, 0);
}

TEST(QuantizedEngineFile, BadHeaderValuesAreModelErrors) {
  ScratchDir dir;
  const std::string path = dir.file("bad.wisp");
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& h) { h["weight_quantization"] = "int3"; }, "int3"},
      {[](json& h) { h["weight_quantization"] = 8; }, "corrupt header"},
      {[](json& h) {
         h["weight_quantization"] = "int4";
         h["group_size"] = 32;
       },
       "group_size 32"},
      {[](json& h) {
         h["weight_quantization"] = "int4";
         h["group_size"] = 0;
       },
       "group_size 0"},
      {[](json& h) {
         h["weight_quantization"] = "int8";
         h["group_size"] = 64;
       },
       "group_size 64"},
  };
  for (const auto& [edit, fragment] : cases) {
    SCOPED_TRACE(fragment);
    EngineWriter w;
    w.set_vocabulary({"a", "b"});
    w.write(path);
    edit_header(path, edit);
    expect_error<ModelError>([&] { EngineFile::open(path); }, fragment);
  }
}

// ---------------------------------------------------------------- convert from an engine file

TEST(ConvertEngine, Int8QuantizesExactlyTheBlockMatrices) {
  ScratchDir dir;
  const std::string src = dir.file("f32.wisp"), dst = dir.file("int8.wisp");
  test::write_synthetic(src, test::synthetic_tensors(1));
  ConvertOptions o;
  o.weights = WeightType::kInt8;
  convert_model(src, dst, o);

  const EngineFile in = EngineFile::open(src), out = EngineFile::open(dst);
  EXPECT_EQ(out.metadata().weight_quantization, WeightQuantization::kInt8);
  EXPECT_EQ(out.metadata().group_size, 0);
  EXPECT_EQ(out.metadata().name, "synthetic");
  EXPECT_EQ(out.metadata().source.at("converted_from"), std::filesystem::absolute(src).string());
  EXPECT_EQ(out.vocabulary(), in.vocabulary());
  const std::vector<std::string> quantized = block_linear_weights(in.metadata().dims);
  for (const std::string& name : quantized) {
    SCOPED_TRACE(name);
    const ops::QuantizedWeight want = ops::quantize_int8(in.tensor(name));
    EXPECT_TRUE(same_bytes(out.tensor(name), want.codes));
    EXPECT_TRUE(same_bytes(out.tensor(name + "_scale"), want.scale));
  }
  // Everything else (convolutions, embeddings, norms, biases) is copied unchanged.
  size_t kept = 0;
  for (const auto& [name, t] : test::model_tensors(in)) {
    if (std::find(quantized.begin(), quantized.end(), name) != quantized.end()) continue;
    EXPECT_TRUE(same_bytes(out.tensor(name), t)) << name;
    ++kept;
  }
  EXPECT_EQ(test::model_tensors(out).size(), kept + 2 * quantized.size());
}

TEST(ConvertEngine, Int4QuantizesWithTheGroupSize) {
  ScratchDir dir;
  const std::string src = dir.file("f32.wisp");
  test::write_synthetic(src, test::synthetic_tensors(2));
  const EngineFile in = EngineFile::open(src);
  for (int group : {64, 128}) {
    SCOPED_TRACE(group);
    const std::string dst = dir.file("int4-" + std::to_string(group) + ".wisp");
    ConvertOptions o;
    o.weights = WeightType::kInt4;
    o.group_size = group;
    convert_model(src, dst, o);
    const EngineFile out = EngineFile::open(dst);
    EXPECT_EQ(out.metadata().weight_quantization, WeightQuantization::kInt4);
    EXPECT_EQ(out.metadata().group_size, group);
    for (const std::string& name : block_linear_weights(in.metadata().dims)) {
      const Tensor w = in.tensor(name);
      const ops::QuantizedWeight want = ops::quantize_int4(w, group);
      EXPECT_EQ(out.tensor(name).shape(), (Shape{w.dim(0), w.dim(1) / 2})) << name;
      EXPECT_TRUE(same_bytes(out.tensor(name), want.codes)) << name;
      EXPECT_TRUE(same_bytes(out.tensor(name + "_scale"), want.scale)) << name;
    }
  }
}

// `--keep-float`: the block matrices a pattern names keep the source's float type (no scale tensor), the others
// are quantised as usual, and the mixed file loads; patterns that name nothing, and the option without int8/int4,
// are refused.
TEST(ConvertEngine, KeepFloatLeavesTheNamedMatricesFloat) {
  ScratchDir dir;
  const std::string src = dir.file("f32.wisp"), dst = dir.file("mixed.wisp");
  test::write_synthetic(src, test::synthetic_tensors(5));
  ConvertOptions o;
  o.weights = WeightType::kInt8;
  o.keep_float = {"decoder.blocks.*.mlp.*", "encoder.blocks.0.attn.out.weight"};
  convert_model(src, dst, o);
  const EngineFile in = EngineFile::open(src), out = EngineFile::open(dst);
  EXPECT_EQ(out.metadata().weight_quantization, WeightQuantization::kInt8);
  size_t kept = 0, quantised = 0;
  for (const std::string& name : block_linear_weights(in.metadata().dims)) {
    SCOPED_TRACE(name);
    const bool keep = (name.rfind("decoder.blocks.", 0) == 0 && name.find(".mlp.") != std::string::npos) ||
                      name == "encoder.blocks.0.attn.out.weight";
    if (keep) {
      EXPECT_TRUE(same_bytes(out.tensor(name), in.tensor(name)));
      EXPECT_FALSE(out.has(name + "_scale"));
      ++kept;
    } else {
      EXPECT_TRUE(same_bytes(out.tensor(name), ops::quantize_int8(in.tensor(name)).codes));
      ++quantised;
    }
  }
  EXPECT_EQ(kept, 2 * in.metadata().dims.n_text_layer + 1);
  EXPECT_GT(quantised, 0u);  // the mixed file loads and computes: model_quantized_test.cpp

  o.keep_float = {"decoder.blocks.*.mlp.fc3.*"};
  expect_error<InvalidArgument>([&] { convert_model(src, dir.file("x.wisp"), o); }, "matches no block matrix");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.wisp")));
  o.weights = WeightType::kF16;
  o.keep_float = {"decoder.blocks.*.mlp.*"};
  expect_error<InvalidArgument>([&] { convert_model(src, dir.file("y.wisp"), o); }, "int8 and int4 weights only");
}

TEST(ConvertEngine, FloatConversionsRecordTheirType) {
  ScratchDir dir;
  const std::string src = dir.file("f32.wisp");
  test::write_synthetic(src, test::synthetic_tensors(3));
  ConvertOptions o;
  o.weights = WeightType::kKeep;
  convert_model(src, dir.file("keep.wisp"), o);
  EXPECT_EQ(EngineFile::open(dir.file("keep.wisp")).metadata().weight_quantization, WeightQuantization::kF32);
  o.weights = WeightType::kF16;
  convert_model(src, dir.file("f16.wisp"), o);
  const EngineFile f16 = EngineFile::open(dir.file("f16.wisp"));
  EXPECT_EQ(f16.metadata().weight_quantization, WeightQuantization::kF16);
  EXPECT_EQ(f16.tensor("encoder.blocks.0.mlp.fc1.weight").dtype(), DType::kF16);
}

TEST(ConvertEngine, RealModelToInt8) {
  const std::string src = test::models_dir() + "/tiny.en.wisp";
  WISP_REQUIRE_PATH(src);
  ScratchDir dir;
  ConvertOptions o;
  o.weights = WeightType::kInt8;
  convert_model(src, dir.file("tiny.en-int8.wisp"), o);
  const EngineFile in = EngineFile::open(src), out = EngineFile::open(dir.file("tiny.en-int8.wisp"));
  EXPECT_EQ(out.metadata().dims.n_vocab, in.metadata().dims.n_vocab);
  EXPECT_EQ(out.metadata().alignment_heads, in.metadata().alignment_heads);
  EXPECT_EQ(out.metadata().suppress_tokens, in.metadata().suppress_tokens);
  const std::string name = "decoder.blocks.3.mlp.fc2.weight";
  EXPECT_TRUE(same_bytes(out.tensor(name), ops::quantize_int8(in.tensor(name)).codes));
  EXPECT_TRUE(same_bytes(out.tensor("decoder.token_embedding.weight"), in.tensor("decoder.token_embedding.weight")));
}

// A calibrated model (`wisp calibrate` adds the K/V maxima) keeps its calibration through `convert --weights`,
// byte for byte, with the note of where it came from.
TEST(ConvertEngine, QuantisingKeepsTheKvCalibration) {
  ScratchDir dir;
  const std::string src = dir.file("calibrated.wisp");
  std::map<std::string, Tensor> tensors = test::synthetic_tensors(5);
  const ModelDims d = test::synthetic_dims();
  for (int l = 0; l < d.n_text_layer; ++l) {
    for (const bool cross : {false, true}) {
      Tensor amax = Tensor::empty({2 * int64_t(d.n_text_head)}, DType::kF32);
      for (int64_t i = 0; i < amax.numel(); ++i)
        amax.data<float>()[i] = 1.5f + float(l) + (cross ? 0.25f : 0.0f) + float(i);
      tensors[names::kv_amax(l, cross)] = amax;
    }
  }
  test::write_synthetic(src, tensors, [](ModelMetadata& m) { m.source["kv_calibration"] = "3 clips"; });
  for (const WeightType w : {WeightType::kInt8, WeightType::kInt4, WeightType::kF16}) {
    ConvertOptions o;
    o.weights = w;
    const std::string dst = dir.file("out.wisp");
    convert_model(src, dst, o);
    const EngineFile out = EngineFile::open(dst);
    for (int l = 0; l < d.n_text_layer; ++l) {
      for (const bool cross : {false, true}) {
        const std::string name = names::kv_amax(l, cross);
        ASSERT_TRUE(out.has(name)) << name;
        EXPECT_TRUE(same_bytes(out.tensor(name), tensors.at(name))) << name;
      }
    }
    EXPECT_EQ(out.metadata().source.at("kv_calibration"), "3 clips");
  }
}

// A model with calibrated norm statistics (`wisp calibrate`): int8 / int4 scale the layer after each measured norm
// when asked (ops::search_column_scaling's scale multiplies its columns, the norm's gamma and beta are divided by
// it, as f32), so that the converted model computes the same function with differently rounded weights; plain
// rounding by default and where nothing was measured; a statistics tensor of the wrong shape is an error.
TEST(ConvertEngine, CalibratedNormStatisticsScaleTheirLayers) {
  ScratchDir dir;
  const std::string src = dir.file("calibrated.wisp");
  std::map<std::string, Tensor> tensors = test::synthetic_tensors(6);
  const ModelDims d = test::synthetic_dims();
  struct Pair {
    std::string norm, linear;
  };
  std::vector<Pair> measured;  // every norm of the decoder's block 1 and the encoder's block 0; not decoder 0
  for (const char* norm : {"attn_ln", "cross_attn_ln", "mlp_ln"}) {
    const std::string linear = std::string(norm) == "attn_ln"         ? "attn.qkv"
                               : std::string(norm) == "cross_attn_ln" ? "cross_attn.query"
                                                                      : "mlp.fc1";
    measured.push_back({names::block("decoder", 1, norm), names::block("decoder", 1, linear)});
    if (std::string(norm) != "cross_attn_ln") {
      measured.push_back({names::block("encoder", 0, norm), names::block("encoder", 0, linear)});
    }
  }
  for (const Pair& p : measured) {
    Tensor stats = Tensor::empty({2, int64_t(d.n_text_state)}, DType::kF32);
    for (int64_t c = 0; c < stats.dim(1); ++c) {
      const float a = c % 29 == 3 ? 25.0f : 0.5f + 0.05f * float(c % 11);  // a few outlier columns
      stats.data<float>()[c] = a;
      stats.data<float>()[stats.dim(1) + c] = 1.2f * a * a;
    }
    tensors[p.norm + ".output_stats"] = stats;
  }
  test::write_synthetic(src, tensors);
  const EngineFile in = EngineFile::open(src);

  for (const WeightType w : {WeightType::kInt8, WeightType::kInt4}) {
    SCOPED_TRACE(w == WeightType::kInt8 ? "int8" : "int4");
    ConvertOptions o;
    o.weights = w;
    const std::string scaled_path = dir.file("scaled.wisp"), plain_path = dir.file("plain.wisp");
    convert_model(src, plain_path, o);  // the default: plain rounding
    o.activation_scaling = true;
    convert_model(src, scaled_path, o);
    const EngineFile scaled = EngineFile::open(scaled_path), plain = EngineFile::open(plain_path);
    EXPECT_EQ(scaled.metadata().source.count("activation_scaling"), 1u);
    EXPECT_EQ(plain.metadata().source.count("activation_scaling"), 0u);
    for (const Pair& p : measured) {
      SCOPED_TRACE(p.linear);
      const Tensor stats = in.tensor(p.norm + ".output_stats");
      const int64_t k = stats.dim(1);
      const std::span<const float> mean_abs(stats.data<float>(), size_t(k)),
          mean_sq(stats.data<float>() + k, size_t(k));
      const Tensor weight = in.tensor(p.linear + ".weight");
      const ops::ColumnScaling want =
          ops::search_column_scaling(weight, mean_abs, mean_sq, w == WeightType::kInt8 ? 8 : 4, 64);
      ASSERT_GT(want.exponent, 0.0f);
      // the norm divided by the scale, in f32
      for (const char* leaf : {".weight", ".bias"}) {
        const Tensor before = in.tensor(p.norm + leaf), after = scaled.tensor(p.norm + leaf);
        ASSERT_EQ(after.dtype(), DType::kF32);
        for (int64_t i = 0; i < k; ++i) {
          EXPECT_EQ(after.data<float>()[i], before.data<float>()[i] / want.scale[size_t(i)]) << leaf << " " << i;
        }
        EXPECT_TRUE(same_bytes(plain.tensor(p.norm + leaf), before));
      }
      // the layer quantised from its scaled columns
      Tensor cols = weight.to_f32();
      for (int64_t j = 0; j < cols.dim(0); ++j)
        for (int64_t i = 0; i < k; ++i) cols.data<float>()[j * k + i] *= want.scale[size_t(i)];
      const ops::QuantizedWeight q = w == WeightType::kInt8 ? ops::quantize_int8(cols) : ops::quantize_int4(cols, 64);
      EXPECT_TRUE(same_bytes(scaled.tensor(p.linear + ".weight"), q.codes));
      EXPECT_TRUE(same_bytes(scaled.tensor(p.linear + ".weight_scale"), q.scale));
      // the same function: ln(x)·Wᵀ = (ln(x) / s)·(W·diag(s))ᵀ, here through the dequantised weights' sums
      Tensor x = Tensor::empty({3, k}, DType::kF32);
      for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = std::sin(0.37f * float(i)) * 2.0f;
      const Tensor h_plain =
          ops::layer_norm(x, plain.tensor(p.norm + ".weight").to_f32(), plain.tensor(p.norm + ".bias").to_f32());
      const Tensor h_scaled = ops::layer_norm(x, scaled.tensor(p.norm + ".weight"), scaled.tensor(p.norm + ".bias"));
      const Tensor y_float = ops::linear(h_plain, weight.to_f32(), Tensor());
      const Tensor y_scaled = ops::linear(h_scaled, scaled.tensor(p.linear + ".weight"),
                                          scaled.tensor(p.linear + ".weight_scale"), Tensor());
      double worst = 0.0, top = 0.0;
      for (int64_t i = 0; i < y_float.numel(); ++i) {
        worst = std::max(worst, std::fabs(double(y_scaled.data<float>()[i]) - y_float.data<float>()[i]));
        top = std::max(top, std::fabs(double(y_float.data<float>()[i])));
      }
      EXPECT_LT(worst, (w == WeightType::kInt8 ? 0.02 : 0.2) * top);  // a rounding, not another function
    }
    // decoder block 0 has no statistics: plain rounding there
    const std::string unmeasured = names::block("decoder", 0, "mlp.fc1.weight");
    EXPECT_TRUE(same_bytes(scaled.tensor(unmeasured), plain.tensor(unmeasured)));
    EXPECT_TRUE(same_bytes(scaled.tensor(names::block("decoder", 0, "mlp_ln.weight")),
                           in.tensor(names::block("decoder", 0, "mlp_ln.weight"))));
    // the statistics describe the source's inputs: not carried into the converted file
    EXPECT_FALSE(scaled.has(measured[0].norm + ".output_stats"));

    // A measured layer that `keep_float` keeps is not rounded, so neither it nor its norm is scaled; the others
    // still are.
    const std::string fc1 = names::block("decoder", 1, "mlp.fc1.weight"), ln = names::block("decoder", 1, "mlp_ln");
    o.keep_float = {fc1};
    convert_model(src, dir.file("kept.wisp"), o);
    const EngineFile kept = EngineFile::open(dir.file("kept.wisp"));
    EXPECT_TRUE(same_bytes(kept.tensor(fc1), in.tensor(fc1)));
    EXPECT_FALSE(kept.has(fc1 + "_scale"));
    EXPECT_TRUE(same_bytes(kept.tensor(ln + ".weight"), in.tensor(ln + ".weight")));
    EXPECT_TRUE(same_bytes(kept.tensor(ln + ".bias"), in.tensor(ln + ".bias")));
    const std::string qkv = names::block("decoder", 1, "attn.qkv.weight");
    EXPECT_TRUE(same_bytes(kept.tensor(qkv), scaled.tensor(qkv)));
  }

  // Asked for where it cannot apply: float weights, a source without statistics.
  ConvertOptions f16;
  f16.weights = WeightType::kF16;
  f16.activation_scaling = true;
  expect_error<InvalidArgument>([&] { convert_model(src, dir.file("f16.wisp"), f16); }, "int8 and int4");
  const std::string uncalibrated = dir.file("uncalibrated.wisp");
  test::write_synthetic(uncalibrated, test::synthetic_tensors(7));
  ConvertOptions int4;
  int4.weights = WeightType::kInt4;
  int4.activation_scaling = true;
  expect_error<InvalidArgument>([&] { convert_model(uncalibrated, dir.file("u.wisp"), int4); }, "wisp calibrate");
  EXPECT_FALSE(std::filesystem::exists(dir.file("f16.wisp")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("u.wisp")));

  // Statistics of the wrong width are refused.
  tensors[measured[0].norm + ".output_stats"] = Tensor::zeros({2, 64}, DType::kF32);
  test::write_synthetic(src, tensors);
  ConvertOptions o;
  o.weights = WeightType::kInt8;
  o.activation_scaling = true;
  expect_error<ModelError>([&] { convert_model(src, dir.file("bad.wisp"), o); }, "output_stats");
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad.wisp")));
}

// --gptq: a layer with a calibrated input gram gets exactly ops::gptq_int8's / gptq_int4's codes, a layer without
// one plain rounding; the grams are not carried into the result; the option's errors.
TEST(ConvertEngine, InputGramsRoundTheirLayersByGptq) {
  ScratchDir dir;
  const std::string src = dir.file("grams.wisp");
  std::map<std::string, Tensor> tensors = test::synthetic_tensors(8);
  const std::vector<std::string> measured = {names::block("encoder", 0, "mlp.fc2"),
                                             names::block("decoder", 1, "attn.qkv"),
                                             names::block("decoder", 1, "cross_attn.kv")};
  for (const std::string& layer : measured) {
    const int64_t k = tensors.at(layer + ".weight").dim(1);
    Tensor gram = Tensor::empty({k, k}, DType::kF32);  // AR(1)-correlated inputs: positive definite
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b) gram.data<float>()[a * k + b] = std::pow(0.8f, float(std::abs(a - b)));
    tensors[layer + ".input_gram"] = gram;
  }
  test::write_synthetic(src, tensors);
  const EngineFile in = EngineFile::open(src);

  for (const WeightType w : {WeightType::kInt8, WeightType::kInt4}) {
    SCOPED_TRACE(w == WeightType::kInt8 ? "int8" : "int4");
    ConvertOptions o;
    o.weights = w;
    const std::string plain_path = dir.file("plain.wisp"), gptq_path = dir.file("gptq.wisp");
    convert_model(src, plain_path, o);
    o.gptq = true;
    convert_model(src, gptq_path, o);
    const EngineFile plain = EngineFile::open(plain_path), gptq = EngineFile::open(gptq_path);
    EXPECT_EQ(gptq.metadata().source.count("gptq"), 1u);
    for (const std::string& layer : measured) {
      SCOPED_TRACE(layer);
      const Tensor weight = in.tensor(layer + ".weight"), gram = in.tensor(layer + ".input_gram");
      const ops::QuantizedWeight q =
          w == WeightType::kInt8 ? ops::gptq_int8(weight, gram) : ops::gptq_int4(weight, gram, 64);
      EXPECT_TRUE(same_bytes(gptq.tensor(layer + ".weight"), q.codes));
      EXPECT_TRUE(same_bytes(gptq.tensor(layer + ".weight_scale"), q.scale));
      EXPECT_FALSE(same_bytes(gptq.tensor(layer + ".weight"), plain.tensor(layer + ".weight")));
      EXPECT_FALSE(gptq.has(layer + ".input_gram"));
    }
    const std::string unmeasured = names::block("decoder", 0, "attn.qkv.weight");
    EXPECT_TRUE(same_bytes(gptq.tensor(unmeasured), plain.tensor(unmeasured)));
  }

  ConvertOptions o;
  o.gptq = true;
  o.weights = WeightType::kF16;
  expect_error<InvalidArgument>([&] { convert_model(src, dir.file("x.wisp"), o); }, "int8 and int4");
  o.weights = WeightType::kInt8;
  o.activation_scaling = true;
  expect_error<InvalidArgument>([&] { convert_model(src, dir.file("x.wisp"), o); }, "cannot be combined");
  o.activation_scaling = false;
  const std::string bare = dir.file("bare.wisp");
  test::write_synthetic(bare, test::synthetic_tensors(8));
  expect_error<InvalidArgument>([&] { convert_model(bare, dir.file("x.wisp"), o); }, "--input-gram");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.wisp")));
}

TEST(ConvertEngine, OptionAndSourceErrors) {
  ScratchDir dir;
  const std::string src = dir.file("f32.wisp");
  test::write_synthetic(src, test::synthetic_tensors(4));
  ConvertOptions o;
  o.weights = WeightType::kInt4;
  o.group_size = 32;
  expect_error<InvalidArgument>([&] { convert_model(src, dir.file("x.wisp"), o); }, "group size 32");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.wisp")));

  // A quantised file is no source: its weights would be rounded twice.
  o.weights = WeightType::kInt8;
  convert_model(src, dir.file("int8.wisp"), o);
  o.weights = WeightType::kInt4;
  o.group_size = 64;
  expect_error<InvalidArgument>([&] { convert_model(dir.file("int8.wisp"), dir.file("y.wisp"), o); }, "int8");
  EXPECT_FALSE(std::filesystem::exists(dir.file("y.wisp")));

  // An engine file that lacks the model's tensors is a ModelError naming the missing one.
  EngineWriter w;
  w.set_vocabulary({"a", "b"});
  w.write(dir.file("empty.wisp"));
  expect_error<ModelError>([&] { convert_model(dir.file("empty.wisp"), dir.file("z.wisp"), o); },
                           "encoder.conv1.weight");
}

}  // namespace
}  // namespace wisp::format
