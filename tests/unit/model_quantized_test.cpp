// WhisperModel on quantised engine files: an int8 or int4 model, also one with some block matrices left float
// (`convert --keep-float`), computes what the float model over its dequantised weights computes (so the scales
// reach the right layers), and a missing, mis-shaped, mistyped or truncated scale, or codes that disagree with
// the header, are ModelErrors naming the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "format/importers.h"
#include "kernels/cpu/quantize.h"
#include "model/whisper.h"
#include "support/expect_error.h"
#include "support/synthetic_model.h"
#include "wisp/errors.h"

namespace wisp::model {
namespace {

using core::DType;
using core::Tensor;
using format::WeightQuantization;
using test::ScratchDir;

const std::string kScale = "decoder.blocks.1.cross_attn.kv.weight_scale";  // any block matrix's scale

using test::expect_error;

// Converts the synthetic f32 model at `src` to `weights` at `dst` (the block matrices `keep_float` names stay
// float: a mixed-precision file).
void convert(const std::string& src, const std::string& dst, format::WeightType weights, int group = 64,
             const std::vector<std::string>& keep_float = {}) {
  format::ConvertOptions o;
  o.weights = weights;
  o.group_size = group;
  o.keep_float = keep_float;
  format::convert_model(src, dst, o);
}

// The quantised file's tensors with every block matrix replaced by its dequantised f32 values: the float
// model that the quantised one must reproduce.
std::map<std::string, Tensor> dequantized_model(const format::EngineFile& q) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : test::model_tensors(q)) {
    if (name.size() > 6 && name.compare(name.size() - 6, 6, "_scale") == 0) continue;
    if (t.dtype() != DType::kI8 && t.dtype() != DType::kU8) {
      out[name] = t;
      continue;
    }
    const Tensor s = q.tensor(name + "_scale");
    const int64_t n = t.dim(0);
    const int64_t k = t.dtype() == DType::kU8 ? 2 * t.dim(1) : t.dim(1);
    Tensor w = Tensor::empty({n, k}, DType::kF32);
    if (t.dtype() == DType::kI8) {
      kernels::cpu::dequantize_i8(t.data<int8_t>(), s.data<float>(), w.data<float>(), n, k);
    } else {
      kernels::cpu::dequantize_i4(t.data<uint8_t>(), s.data<float>(), w.data<float>(), n, k, k / s.dim(1));
    }
    out[name] = w;
  }
  return out;
}

// max |a - b| / max |b|
double rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double d = 0.0, m = 0.0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
    m = std::max(m, std::fabs(static_cast<double>(b.data<float>()[i])));
  }
  return d / m;
}

// Encoder output and cross K/V (16 frames: the BLAS path of the linear layers), the logits of a 10-token
// prompt (BLAS path) and of one step (GEMV path).
struct Outputs {
  Tensor features, cross0, logits_prompt, logits_step;
};

Outputs run(const WhisperModel& m) {
  const auto& d = m.dims();
  Tensor mel = Tensor::empty({d.n_mels, 2 * d.n_audio_ctx}, DType::kF32);
  for (int64_t i = 0; i < mel.numel(); ++i) mel.data<float>()[i] = std::sin(0.37f * static_cast<float>(i));
  Outputs o;
  o.features = m.encode(mel);
  const CrossKV cross = m.cross_kv(o.features);
  o.cross0 = cross.kv[0];
  KVCache cache = m.new_cache();
  const std::vector<int> prompt = {1, 5, 7, 0, 11, 2, 2, 9, 4, 6};
  o.logits_prompt = m.logits(m.decode(prompt, cross, cache));
  const std::vector<int> step = {3};
  o.logits_step = m.logits(m.decode(step, cross, cache));
  return o;
}

TEST(QuantizedModel, MatchesTheFloatModelOverDequantizedWeights) {
  ScratchDir dir;
  const std::string src = dir.file("f32.wisp");
  test::write_synthetic(src, test::synthetic_tensors(7));
  const std::vector<std::string> mixed = {"decoder.blocks.*.mlp.fc2.weight", "encoder.blocks.1.attn.qkv.weight"};
  const std::vector<std::tuple<std::string, format::WeightType, int, std::vector<std::string>>> cases = {
      {"int8", format::WeightType::kInt8, 64, {}},
      {"int4-64", format::WeightType::kInt4, 64, {}},
      {"int4-128", format::WeightType::kInt4, 128, {}},
      {"int8-mixed", format::WeightType::kInt8, 64, mixed},
      {"int4-64-mixed", format::WeightType::kInt4, 64, mixed}};
  for (const auto& [label, weights, group, keep_float] : cases) {
    SCOPED_TRACE(label);
    const std::string q = dir.file(label + ".wisp"), deq = dir.file(label + "-deq.wisp");
    convert(src, q, weights, group, keep_float);
    test::write_synthetic(deq, dequantized_model(format::EngineFile::open(q)));
    const auto qm = WhisperModel::load(q);
    const auto fm = WhisperModel::load(deq);
    EXPECT_EQ(qm->metadata().weight_quantization,
              weights == format::WeightType::kInt8 ? WeightQuantization::kInt8 : WeightQuantization::kInt4);
    const Outputs a = run(*qm), b = run(*fm);
    // Same weights, same f32 arithmetic; only the order of the sums differs (scales applied after a sum).
    EXPECT_LT(rel_diff(a.features, b.features), 1e-5);
    EXPECT_LT(rel_diff(a.cross0, b.cross0), 1e-5);
    EXPECT_LT(rel_diff(a.logits_prompt, b.logits_prompt), 1e-5);
    EXPECT_LT(rel_diff(a.logits_step, b.logits_step), 1e-5);
    // ...while quantising does change the network (the comparison above is not vacuous).
    const Outputs f = run(*WhisperModel::load(src));
    EXPECT_GT(rel_diff(a.features, f.features), 1e-4);
  }
}

class BrokenScale : public ::testing::Test {
 protected:
  void SetUp() override {
    test::write_synthetic(dir_.file("f32.wisp"), test::synthetic_tensors(8));
    convert(dir_.file("f32.wisp"), dir_.file("int8.wisp"), format::WeightType::kInt8);
    convert(dir_.file("f32.wisp"), dir_.file("int4.wisp"), format::WeightType::kInt4, 128);
  }
  // The quantised file at `from` with its tensors edited, written as `name`; returns its path.
  std::string rewrite(const std::string& from, const std::string& name,
                      const std::function<void(std::map<std::string, Tensor>&)>& edit) {
    const format::EngineFile f = format::EngineFile::open(dir_.file(from));
    std::map<std::string, Tensor> t = test::model_tensors(f);
    edit(t);
    const format::ModelMetadata meta = f.metadata();
    test::write_synthetic(dir_.file(name), t, [&](format::ModelMetadata& m) {
      m.weight_quantization = meta.weight_quantization;
      m.group_size = meta.group_size;
    });
    return dir_.file(name);
  }

  ScratchDir dir_;
};

TEST_F(BrokenScale, IntactFilesLoad) {
  EXPECT_NO_THROW(WhisperModel::load(dir_.file("int8.wisp")));
  EXPECT_NO_THROW(WhisperModel::load(dir_.file("int4.wisp")));
}

TEST_F(BrokenScale, MissingScale) {
  for (const char* from : {"int8.wisp", "int4.wisp"}) {
    const std::string p = rewrite(from, "missing.wisp", [](auto& t) { t.erase(kScale); });
    expect_error<ModelError>([&] { WhisperModel::load(p); }, kScale);
  }
}

TEST_F(BrokenScale, MisShapedScale) {
  // int8 scales are [n]; int4 scales [n, k / group]: one of the wrong length or rank each.
  const std::string p8 = rewrite("int8.wisp", "short8.wisp", [](auto& t) { t[kScale] = t[kScale].rows(0, 10); });
  expect_error<ModelError>([&] { WhisperModel::load(p8); }, kScale);
  const std::string p4 =
      rewrite("int4.wisp", "flat4.wisp", [](auto& t) { t[kScale] = t[kScale].reshape({t[kScale].numel()}); });
  expect_error<ModelError>([&] { WhisperModel::load(p4); }, kScale);
  // int4 scales for group 64 in a file that says 128.
  const std::string pg = rewrite("int4.wisp", "group.wisp", [](auto& t) {
    const Tensor s = t[kScale];
    t[kScale] = Tensor::zeros({s.dim(0), 2 * s.dim(1)}, DType::kF32);
  });
  expect_error<ModelError>([&] { WhisperModel::load(pg); }, kScale);
}

TEST_F(BrokenScale, MistypedScaleOrCodes) {
  const std::string p = rewrite("int8.wisp", "f16scale.wisp", [](auto& t) {
    Tensor s = Tensor::zeros(t[kScale].shape(), DType::kF16);
    t[kScale] = s;
  });
  expect_error<ModelError>([&] { WhisperModel::load(p); }, kScale);
  // Float weights in a file whose header says int8.
  const std::string w = "encoder.blocks.0.attn.out.weight";
  const std::string pw =
      rewrite("int8.wisp", "floatcodes.wisp", [&](auto& t) { t[w] = Tensor::zeros(t[w].shape(), DType::kF32); });
  expect_error<ModelError>([&] { WhisperModel::load(pw); }, w);
}

TEST_F(BrokenScale, TruncatedScale) {
  // Cut the file in the middle of the scale stored last: its entry then ends past the end of the file.
  const std::string p = dir_.file("truncated.wisp");
  std::filesystem::copy_file(dir_.file("int8.wisp"), p);
  uint64_t cut = 0;
  {
    const format::EngineFile f = format::EngineFile::open(p);
    uint64_t last = 0;
    for (const auto& e : f.entries()) {
      if (e.name.find("_scale") != std::string::npos && e.offset >= last) {
        last = e.offset;
        cut = e.offset + e.nbytes / 2;
      }
    }
  }
  ASSERT_GT(cut, 0u);
  std::filesystem::resize_file(p, cut);
  expect_error<ModelError>([&] { WhisperModel::load(p); }, "truncated");
}

}  // namespace
}  // namespace wisp::model
