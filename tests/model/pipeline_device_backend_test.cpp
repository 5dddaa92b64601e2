// The device route of the model layer and the KV-cache calibration, on the CPU:
//   - a Model whose WhisperModel runs behind a model::DeviceBackend (the calibration's recording backend,
//     which computes with a plain CPU model) transcribes exactly as the CPU model does, with beam search,
//     the fallback and word timestamps: every window, cache copy, broadcast and reorder goes through the
//     backend interface the GPU backend implements;
//   - calibrate_kv_cache writes the K/V maxima of every layer and head and the block norms' output statistics,
//     keeps the rest of the file, and the calibrated file transcribes as before;
//   - the CPU rounding of K/V rows as the GPU's int8/FP8 caches store them (accuracy studies);
//   - the load options reject what cannot run (unknown device, cache type or GELU form, quantised caches or the
//     tanh GELU on the CPU).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "format/engine_file.h"
#include "format/tensor_names.h"
#include "model/whisper.h"
#include "pipeline/kv_calibration.h"
#include "pipeline/model_access.h"
#include "support/test_paths.h"
#include "wisp/audio.h"
#include "wisp/calibrate.h"
#include "wisp/errors.h"
#include "wisp/model.h"

namespace {

namespace fs = std::filesystem;
using wisp::test::models_dir;
using wisp::test::shared_data;

std::string tiny() { return models_dir() + "/tiny.en.wisp"; }
std::string jfk() { return shared_data() + "/eval/en/openai_whisper__jfk.flac"; }

std::vector<std::vector<int>> segment_tokens(const wisp::Transcript& t) {
  std::vector<std::vector<int>> out;
  for (const auto& s : t.segments) out.push_back(s.tokens);
  return out;
}

// tiny.en whose network runs behind the calibration's recording backend (a device backend computing on the CPU).
std::unique_ptr<wisp::Model> routed_tiny() {
  auto net = wisp::model::WhisperModel::load(
      tiny(), [](const wisp::model::WhisperModel& m) { return wisp::make_recording_backend(m.path()); });
  EXPECT_EQ(net->device_name(), "cpu (recording K/V maxima)");
  return wisp::ModelAccess::wrap(net);
}

TEST(DeviceBackend, RecordingBackendTranscribesAsTheCpu) {
  WISP_REQUIRE_PATH(tiny());
  WISP_REQUIRE_PATH(jfk());
  const auto cpu = wisp::Model::load(tiny(), 0, "cpu");
  const auto routed = routed_tiny();
  const std::vector<float> samples = wisp::load_audio(jfk());
  wisp::TranscribeOptions beam;  // beam 5 + fallback: broadcast and reorder of the batch caches
  wisp::TranscribeOptions words;
  words.beam_size = 1;
  words.temperatures = {0.0};
  words.word_timestamps = true;  // the alignment pass reads the window back (to_host)
  wisp::TranscribeOptions sampled = words;
  sampled.word_timestamps = false;
  sampled.temperatures = {0.6};  // best-of-5 sampling: batches that shrink as samples finish
  sampled.seed = 7;
  for (const auto* o : {&beam, &words, &sampled}) {
    const wisp::Transcript a = cpu->transcribe(samples, *o), b = routed->transcribe(samples, *o);
    EXPECT_EQ(segment_tokens(a), segment_tokens(b));
    ASSERT_EQ(a.segments.size(), b.segments.size());
    for (size_t i = 0; i < a.segments.size(); ++i) {
      ASSERT_EQ(a.segments[i].words.size(), b.segments[i].words.size());
      for (size_t w = 0; w < a.segments[i].words.size(); ++w) {
        EXPECT_EQ(a.segments[i].words[w].start, b.segments[i].words[w].start);
      }
    }
  }
}

// More callers than the model was loaded for (concurrency 1): on a device backend they wait for a place, one
// seek loop at a time, instead of running out of device state. Each caller's windows (4 clips of the JFK clip)
// come one after another, never between another caller's, and every caller gets the CPU's transcript.
TEST(DeviceBackend, CallersBeyondTheConcurrencyWaitTheirTurn) {
  WISP_REQUIRE_PATH(tiny());
  WISP_REQUIRE_PATH(jfk());
  const auto cpu = wisp::Model::load(tiny(), 0, "cpu");
  const auto routed = routed_tiny();
  EXPECT_EQ(routed->info().concurrency, 1);
  const std::vector<float> samples = wisp::load_audio(jfk());
  wisp::TranscribeOptions greedy;
  greedy.beam_size = 1;
  greedy.temperatures = {0.0};
  greedy.clip_timestamps = {0, 3, 3, 6, 6, 9, 9, 11};
  const auto want = segment_tokens(cpu->transcribe(samples, greedy));
  std::mutex mu;
  std::vector<size_t> windows;  // the caller of each window, in order
  std::vector<std::vector<std::vector<int>>> got(3);
  std::vector<std::thread> callers;
  for (size_t i = 0; i < got.size(); ++i) {
    callers.emplace_back([&, i] {
      wisp::TranscribeOptions o = greedy;
      o.on_window = [&, i](const wisp::WindowTrace&) {
        std::lock_guard<std::mutex> lock(mu);
        windows.push_back(i);
      };
      got[i] = segment_tokens(routed->transcribe(samples, o));
    });
  }
  for (auto& t : callers) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
  ASSERT_EQ(windows.size(), 12u);
  for (size_t w = 0; w < windows.size(); ++w) {
    EXPECT_EQ(windows[w], windows[w / 4 * 4])
        << "window " << w << " of caller " << windows[w] << " ran between another caller's windows";
  }
}

TEST(Calibration, WritesMaximaOfEveryLayerAndHead) {
  WISP_REQUIRE_PATH(tiny());
  WISP_REQUIRE_PATH(jfk());
  const fs::path out = fs::temp_directory_path() / ("wisp_calibration_" + std::to_string(::getpid()) + ".wisp");
  const wisp::CalibrationResult r = wisp::calibrate_kv_cache(tiny(), {jfk()}, out.string());
  EXPECT_EQ(r.clips, 1);
  EXPECT_EQ(r.windows, 1);
  EXPECT_GT(r.tokens, 20);  // the prompt and about two dozen decoded tokens

  const auto in = wisp::format::EngineFile::open(tiny());
  const auto cal = wisp::format::EngineFile::open(out.string());
  const auto& d = cal.metadata().dims;
  for (int l = 0; l < d.n_text_layer; ++l) {
    for (const char* leaf : {"attn", "cross_attn"}) {
      const std::string name = "decoder.blocks." + std::to_string(l) + "." + leaf + ".kv_amax";
      ASSERT_TRUE(cal.has(name)) << name;
      const wisp::core::Tensor t = cal.tensor(name);
      ASSERT_EQ(t.numel(), 2 * d.n_text_head) << name;
      for (int64_t i = 0; i < t.numel(); ++i) {
        const float a = t.data<float>()[i];
        EXPECT_TRUE(std::isfinite(a) && a > 0.0f && a < 1e4f) << name << "[" << i << "] = " << a;
      }
    }
  }
  // The block norms' output statistics: mean |x| and mean x² of every column, for every norm that feeds one layer.
  for (const bool decoder : {false, true}) {
    const int layers = decoder ? d.n_text_layer : d.n_audio_layer;
    const int64_t width = decoder ? d.n_text_state : d.n_audio_state;
    for (int l = 0; l < layers; ++l) {
      for (const char* norm : {"attn_ln", "cross_attn_ln", "mlp_ln"}) {
        const std::string name = wisp::format::names::norm_stats(decoder ? "decoder" : "encoder", l, norm);
        if (!decoder && std::string(norm) == "cross_attn_ln") {
          EXPECT_FALSE(cal.has(name)) << name;
          continue;
        }
        ASSERT_TRUE(cal.has(name)) << name;
        const wisp::core::Tensor t = cal.tensor(name);
        ASSERT_EQ(t.shape(), (wisp::core::Shape{2, width})) << name;
        for (int64_t c = 0; c < width; ++c) {
          const float mean_abs = t.data<float>()[c], mean_sq = t.data<float>()[width + c];
          // mean |x| > 0 and, by Jensen, mean x² ≥ (mean |x|)²
          EXPECT_TRUE(mean_abs > 0.0f && mean_sq >= mean_abs * mean_abs * (1.0f - 1e-5f) && mean_sq < 1e8f)
              << name << " column " << c << ": " << mean_abs << ", " << mean_sq;
        }
      }
    }
  }
  // The model tensors are carried over unchanged.
  const wisp::core::Tensor w0 = in.tensor("decoder.blocks.0.mlp.fc1.weight"),
                           w1 = cal.tensor("decoder.blocks.0.mlp.fc1.weight");
  ASSERT_EQ(w0.nbytes(), w1.nbytes());
  EXPECT_EQ(0, std::memcmp(w0.raw(), w1.raw(), w0.nbytes()));
  EXPECT_EQ(wisp::Model::load(out.string(), 0, "cpu")->transcribe_file(jfk()).text(),
            wisp::Model::load(tiny(), 0, "cpu")->transcribe_file(jfk()).text());

  // Calibrating again (in place) replaces the maxima instead of adding a second set.
  wisp::calibrate_kv_cache(out.string(), {jfk()}, out.string());
  const auto again = wisp::format::EngineFile::open(out.string());
  EXPECT_EQ(again.entries().size(), cal.entries().size());
  const auto a = cal.tensor("decoder.blocks.1.attn.kv_amax"), b = again.tensor("decoder.blocks.1.attn.kv_amax");
  EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes()));
  fs::remove(out);
}

// --input-gram: the Gram matrix E[x xᵀ] of every block linear layer's inputs, symmetric, with a diagonal ≥ 0 that is
// mostly > 0, Cauchy–Schwarz between every pair; the encoder's qkv gram checked against
// the norm statistics of the same rows (its diagonal is their mean x²). Without the option, none.
TEST(Calibration, InputGramsOfEveryLayerWhenAsked) {
  WISP_REQUIRE_PATH(tiny());
  WISP_REQUIRE_PATH(jfk());
  const fs::path out = fs::temp_directory_path() / ("wisp_calibration_gram_" + std::to_string(::getpid()) + ".wisp");
  wisp::CalibrateOptions options;
  options.input_grams = true;
  wisp::calibrate_kv_cache(tiny(), {jfk()}, out.string(), options);
  const auto cal = wisp::format::EngineFile::open(out.string());
  const auto& d = cal.metadata().dims;
  for (const bool decoder : {false, true}) {
    const int layers = decoder ? d.n_text_layer : d.n_audio_layer;
    for (int l = 0; l < layers; ++l) {
      for (const auto& linear : wisp::format::names::kBlockLinears) {
        const std::string stack = decoder ? "decoder" : "encoder";
        const std::string name = wisp::format::names::input_gram(stack, l, linear.linear);
        if (linear.decoder_only && !decoder) {
          EXPECT_FALSE(cal.has(name)) << name;
          continue;
        }
        ASSERT_TRUE(cal.has(name)) << name;
        const wisp::core::Tensor g = cal.tensor(name);
        const int64_t k =
            cal.tensor(wisp::format::names::block(stack, l, std::string(linear.linear) + ".weight")).dim(1);
        ASSERT_EQ(g.shape(), (wisp::core::Shape{k, k})) << name;
        const float* v = g.data<float>();
        int64_t live = 0;  // inputs that were ever non-zero (tiny.en's last encoder fc2 has dead GELU units)
        for (int64_t a = 0; a < k; ++a) live += v[a * k + a] > 0.0f;
        EXPECT_GT(live, k * 3 / 4) << name;
        for (int64_t a = 0; a < k; a += 7) {
          EXPECT_GE(v[a * k + a], 0.0f) << name << " [" << a << ", " << a << "]";
          for (int64_t b = 0; b < k; b += 5) {
            EXPECT_EQ(v[a * k + b], v[b * k + a]) << name;
            EXPECT_LE(v[a * k + b] * v[a * k + b], v[a * k + a] * v[b * k + b] * (1.0f + 1e-3f)) << name;
          }
        }
      }
    }
  }
  const wisp::core::Tensor qkv = cal.tensor(wisp::format::names::input_gram("encoder", 0, "attn.qkv"));
  const wisp::core::Tensor stats = cal.tensor(wisp::format::names::norm_stats("encoder", 0, "attn_ln"));
  const int64_t width = stats.dim(1);
  for (int64_t c = 0; c < width; ++c) {
    const float mean_sq = stats.data<float>()[width + c];
    EXPECT_NEAR(qkv.data<float>()[c * width + c], mean_sq, 1e-3f * mean_sq) << c;
  }
  fs::remove(out);

  wisp::calibrate_kv_cache(tiny(), {jfk()}, out.string());
  EXPECT_FALSE(
      wisp::format::EngineFile::open(out.string()).has(wisp::format::names::input_gram("encoder", 0, "attn.qkv")));
  fs::remove(out);
}

TEST(Calibration, RejectsBadInput) {
  WISP_REQUIRE_PATH(tiny());
  EXPECT_THROW(wisp::calibrate_kv_cache(tiny(), {}, "/tmp/unused.wisp"), wisp::InvalidArgument);
  EXPECT_THROW(wisp::calibrate_kv_cache(tiny(), {"/nonexistent/clip.wav"}, "/tmp/unused.wisp"), wisp::Error);
  EXPECT_FALSE(fs::exists("/tmp/unused.wisp"));
}

TEST(KvRounding, E4m3ValuesAreThoseOfTheGpuConversion) {
  EXPECT_EQ(wisp::round_e4m3(1.0f), 1.0f);
  EXPECT_EQ(wisp::round_e4m3(1.0625f), 1.0f);  // the tie between 1 and 1.125 goes to the even mantissa
  EXPECT_EQ(wisp::round_e4m3(1.07f), 1.125f);
  EXPECT_EQ(wisp::round_e4m3(-3.3f), -3.25f);    // step 0.25 in [2, 4)
  EXPECT_EQ(wisp::round_e4m3(440.0f), 448.0f);   // step 32 in [256, 512): 440 → 448
  EXPECT_EQ(wisp::round_e4m3(1000.0f), 448.0f);  // saturates
  EXPECT_EQ(wisp::round_e4m3(-1e9f), -448.0f);
  EXPECT_EQ(wisp::round_e4m3(0.001f), 0.001953125f);  // subnormal step 2^-9
  EXPECT_EQ(wisp::round_e4m3(0.0009f), 0.0f);         // below half a subnormal step
  EXPECT_EQ(wisp::round_e4m3(0.0f), 0.0f);
}

TEST(KvRounding, RoundedCachesTranscribeJfkAlike) {
  WISP_REQUIRE_PATH(tiny());
  WISP_REQUIRE_PATH(jfk());
  const std::string plain = wisp::Model::load(tiny(), 0, "cpu")->transcribe_file(jfk()).text();
  // int8-dynamic needs no calibration; FP8 falls back to scale 1 without it
  for (const char* kv : {"int8-dynamic", "fp8"}) {
    const auto m = wisp::Model::load(tiny(), wisp::LoadOptions{0, "cpu", kv, true});
    EXPECT_EQ(m->info().device, std::string("cpu (K/V rounded as ") + kv + ")");
    EXPECT_EQ(m->transcribe_file(jfk()).text(), plain) << kv;
  }
  // static int8 scales come from `wisp calibrate`
  EXPECT_THROW(wisp::Model::load(tiny(), wisp::LoadOptions{0, "cpu", "int8", true}), wisp::InvalidArgument);
}

TEST(LoadOptions, RejectWhatCannotRun) {
  WISP_REQUIRE_PATH(tiny());
  EXPECT_THROW(wisp::Model::load(tiny(), wisp::LoadOptions{0, "tpu", "fp16"}), wisp::InvalidArgument);
  EXPECT_THROW(wisp::Model::load(tiny(), wisp::LoadOptions{0, "cpu", "int4"}), wisp::InvalidArgument);
  EXPECT_THROW(wisp::Model::load(tiny(), wisp::LoadOptions{0, "cpu", "int8"}), wisp::InvalidArgument);
  // the fused tanh GELU is the GPU encoder's ("auto" and "erf" run on the CPU); an unknown form is refused anywhere
  wisp::LoadOptions gelu{0, "cpu", "fp16"};
  gelu.encoder_gelu = "tanh";
  EXPECT_THROW(wisp::Model::load(tiny(), gelu), wisp::InvalidArgument);
  gelu.encoder_gelu = "erf";
  EXPECT_EQ(wisp::Model::load(tiny(), gelu)->info().device, "cpu");
  gelu.encoder_gelu = "relu";
  gelu.device = "auto";
  EXPECT_THROW(wisp::Model::load(tiny(), gelu), wisp::InvalidArgument);
  EXPECT_EQ(wisp::Model::load(tiny(), wisp::LoadOptions{0, "cpu", "fp16"})->info().device, "cpu");
}

}  // namespace
