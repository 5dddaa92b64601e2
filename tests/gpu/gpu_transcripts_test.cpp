// End to end on a GPU machine: the transcripts of the kit's clips (gpu_kit_make, CPU) repeated with the
// model on the GPU, compared window by window (the tokens of every 30 s window), for every mode of
// gpu_transcript_modes.h with fp16 K/V caches, and greedy again with the int8 (calibrated: the kit's model
// must come from `wisp calibrate`), int8-dynamic and fp8 caches. WISP_GPU_KIT=DIR names the kit (DIR/expected.json,
// DIR/clips, DIR/model.wisp); WISP_GPU_KIT_OUT=DIR2 also writes the GPU transcripts and a summary there;
// WISP_GPU_KIT_ONLY=TEXT runs only the runs whose "mode kv cache" name contains TEXT. Skips without a CUDA
// device or a kit. docs/cuda.md, "End to end on the GPU machine", says how the kit and the weights get there.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gpu/gpu_transcript_modes.h"
#include "runtime/gpu_whisper.h"
#include "wisp/audio.h"
#include "wisp/model.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<float> read_samples(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<float> s(static_cast<size_t>(in.tellg()) / 4);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(s.data()), static_cast<std::streamsize>(s.size() * 4));
  return s;
}

struct ModeTally {
  int clips = 0, identical = 0, en_clips = 0, en_identical = 0, windows = 0, identical_windows = 0;
  double max_word_shift = 0.0;  // seconds, over clips with identical tokens
  double gpu_s = 0.0, cpu_s = 0.0;
};

// The GPU model's load options: `kv_cache`, and the encoder's GELU from $WISP_GPU_KIT_ENCODER_GELU (LoadOptions'
// default, auto, when unset: the run then checks what users get).
wisp::LoadOptions gpu_load_options(const std::string& kv_cache) {
  wisp::LoadOptions lo{0, "cuda", kv_cache};
  if (const char* gelu = std::getenv("WISP_GPU_KIT_ENCODER_GELU")) lo.encoder_gelu = gelu;
  return lo;
}

// Opens the kit that $WISP_GPU_KIT names: its CPU transcripts (expected.json) and model (model.wisp). Skips
// without a kit or a device; a broken kit fails.
class GpuTranscripts : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("WISP_GPU_KIT");
    if (!dir) GTEST_SKIP() << "WISP_GPU_KIT not set (no transcript kit)";
    if (!wisp::runtime::gpu_available()) GTEST_SKIP() << "no CUDA device";
    kit_ = dir;
    std::ifstream in(kit_ / "expected.json");
    ASSERT_TRUE(in) << "missing " << (kit_ / "expected.json");
    expected_ = json::parse(in);
    model_path_ = (kit_ / "model.wisp").string();
  }
  fs::path kit_;
  json expected_;
  std::string model_path_;
};

}  // namespace

TEST_F(GpuTranscripts, MatchCpuTranscripts) {
  const fs::path& kit = kit_;
  const json& expected = expected_;
  const std::string& model_path = model_path_;
  const auto cpu = wisp::Model::load(model_path, 0, "cpu");
  std::string device;

  struct Run {
    wisp::test::TranscriptMode mode;
    std::string kv_cache;
  };
  std::vector<Run> runs;
  for (const auto& mode : wisp::test::transcript_modes()) runs.push_back({mode, "fp16"});
  for (const char* kv : {"int8", "int8-dynamic", "fp8"}) runs.push_back({wisp::test::transcript_modes()[0], kv});

  json results = json::array();
  std::vector<std::pair<std::string, ModeTally>> tallies;
  const char* only = std::getenv("WISP_GPU_KIT_ONLY");  // runs whose name contains this (all when unset)
  for (const auto& [mode, kv_cache] : runs) {
    if (only && (mode.name + " kv " + kv_cache).find(only) == std::string::npos) continue;
    if (!expected["clips"][0].contains(mode.name)) {
      std::printf("[%s] not in the kit (gpu_kit_make WISP_GPU_KIT_MODES)\n", mode.name.c_str());
      continue;
    }
    const auto gpu = wisp::Model::load(model_path, gpu_load_options(kv_cache));
    device = gpu->info().device;
    const std::string name = mode.name + (kv_cache == "fp16" ? "" : " kv " + kv_cache);
    const bool time_cpu = kv_cache == "fp16";
    ModeTally t;
    for (const json& clip : expected["clips"]) {
      const std::vector<float> samples = read_samples(kit / clip["samples"].get<std::string>());
      const json& want = clip[mode.name];
      std::vector<std::vector<int>> windows;
      wisp::TranscribeOptions o = mode.options;
      o.on_window = [&](const wisp::WindowTrace& w) { windows.push_back(w.tokens); };
      auto t0 = std::chrono::steady_clock::now();
      const wisp::Transcript got = gpu->transcribe(samples, o);
      auto t1 = std::chrono::steady_clock::now();
      if (time_cpu) cpu->transcribe(samples, mode.options);  // the same work on this machine's CPU, for timing
      auto t2 = std::chrono::steady_clock::now();
      t.gpu_s += std::chrono::duration<double>(t1 - t0).count();
      t.cpu_s += std::chrono::duration<double>(t2 - t1).count();

      const auto want_windows = want["windows"].get<std::vector<std::vector<int>>>();
      const bool same = windows == want_windows;
      const bool en = clip["language"] == "en";
      ++t.clips, t.identical += same, t.en_clips += en, t.en_identical += en && same;
      t.windows += static_cast<int>(want_windows.size());
      for (size_t w = 0; w < std::min(windows.size(), want_windows.size()); ++w) {
        t.identical_windows += windows[w] == want_windows[w];
      }
      if (same && !want["words"].empty()) {
        size_t k = 0;
        for (const auto& s : got.segments) {
          for (const auto& word : s.words) {
            if (k < want["words"].size()) {
              const json& ww = want["words"][k++];
              t.max_word_shift = std::max({t.max_word_shift, std::abs(word.start - ww[1].get<double>()),
                                           std::abs(word.end - ww[2].get<double>())});
            }
          }
        }
      }
      if (!same) {
        std::printf("[%s] differs: %s\n  cpu: %s\n  gpu: %s\n", name.c_str(), clip["file"].get<std::string>().c_str(),
                    want["text"].get<std::string>().c_str(), got.text().c_str());
      }
      results.push_back(
          {{"mode", name}, {"file", clip["file"]}, {"identical", same}, {"text", got.text()}, {"windows", windows}});
    }
    tallies.emplace_back(name, t);
  }
  std::printf("model %s on %s\n", expected["model"].get<std::string>().c_str(), device.c_str());

  json summary = json::array();
  std::printf(
      "\n| mode | clips identical | English identical | windows identical | max word shift (s) | GPU s | CPU s |\n"
      "|---|---|---|---|---|---|---|\n");
  for (const auto& [name, t] : tallies) {
    std::printf("| %s | %d/%d | %d/%d | %d/%d | %.3f | %.2f | %.2f |\n", name.c_str(), t.identical, t.clips,
                t.en_identical, t.en_clips, t.identical_windows, t.windows, t.max_word_shift, t.gpu_s, t.cpu_s);
    summary.push_back({{"mode", name},
                       {"clips", t.clips},
                       {"identical", t.identical},
                       {"en_clips", t.en_clips},
                       {"en_identical", t.en_identical},
                       {"windows", t.windows},
                       {"identical_windows", t.identical_windows},
                       {"max_word_shift_s", t.max_word_shift},
                       {"gpu_s", t.gpu_s},
                       {"cpu_s", t.cpu_s}});
    // fp16 on the GPU against fp32 on the CPU: near-ties may flip a token, rarely. English transcripts with
    // fp16 caches must agree on at least 90% of the clips (non-English clips through an English-only model
    // loop and are reported only; so are the quantised caches, whose WER is scored from the JSON output).
    if (name.find(" kv ") == std::string::npos) EXPECT_GE(t.en_identical * 10, t.en_clips * 9) << name;
  }
  if (const char* out = std::getenv("WISP_GPU_KIT_OUT")) {
    fs::create_directories(out);
    std::ofstream(fs::path(out) / "gpu_transcripts.json")
        << json{{"device", device}, {"summary", summary}, {"results", results}}.dump(1);
  }
}

// Many clips at once (LoadOptions::concurrency, a thread per clip in flight): their decode steps and windows
// run as batched GPU calls (runtime/call_gatherer.h). The transcripts must match the CPU's as well as one clip
// at a time does (same rule as above), and the wall time of both ways is reported; each way also with the
// token choice on the host (LoadOptions::device_token_choice false: the logits come back), for comparison.
TEST_F(GpuTranscripts, ConcurrentClipsMatchCpuTranscripts) {
  const fs::path& kit = kit_;
  const json& expected = expected_;
  const std::string& model_path = model_path_;
  std::vector<std::vector<float>> clips;
  for (const json& clip : expected["clips"]) clips.push_back(read_samples(kit / clip["samples"].get<std::string>()));
  const size_t n = clips.size();
  constexpr int kConcurrency = 8;

  json summary = json::array();
  std::printf(
      "\n| mode | at once | token choice | English identical | clips identical | wall s | clips/s |\n"
      "|---|---|---|---|---|---|---|\n");
  for (const auto& mode : wisp::test::transcript_modes()) {
    if (mode.options.word_timestamps) continue;               // the alignment runs on the CPU: nothing batched to check
    if (!expected["clips"][0].contains(mode.name)) continue;  // not recorded in this kit
    for (const auto& [at_once, on_device] :
         {std::pair{1, true}, std::pair{1, false}, std::pair{kConcurrency, true}, std::pair{kConcurrency, false}}) {
      wisp::LoadOptions lo = gpu_load_options("fp16");
      lo.concurrency = at_once;
      lo.device_token_choice = on_device;
      const char* choice = on_device ? "device" : "host";
      const auto gpu = wisp::Model::load(model_path, lo);
      std::vector<std::vector<std::vector<int>>> windows(n);
      std::atomic<size_t> next{0};
      const auto worker = [&] {
        for (size_t i; (i = next++) < n;) {
          wisp::TranscribeOptions o = mode.options;
          o.on_window = [&windows, i](const wisp::WindowTrace& w) { windows[i].push_back(w.tokens); };
          gpu->transcribe(clips[i], o);
        }
      };
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> threads;
      for (int w = 0; w < at_once; ++w) threads.emplace_back(worker);
      for (auto& t : threads) t.join();
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      int identical = 0, en = 0, en_identical = 0;
      for (size_t i = 0; i < n; ++i) {
        const json& clip = expected["clips"][i];
        const bool same = windows[i] == clip[mode.name]["windows"].get<std::vector<std::vector<int>>>();
        const bool is_en = clip["language"] == "en";
        identical += same, en += is_en, en_identical += is_en && same;
      }
      std::printf("| %s | %d | %s | %d/%d | %d/%zu | %.2f | %.1f |\n", mode.name.c_str(), at_once, choice, en_identical,
                  en, identical, n, wall, double(n) / wall);
      summary.push_back({{"mode", mode.name},
                         {"at_once", at_once},
                         {"token_choice", choice},
                         {"en_identical", en_identical},
                         {"en_clips", en},
                         {"identical", identical},
                         {"clips", n},
                         {"wall_s", wall}});
      EXPECT_GE(en_identical * 10, en * 9) << mode.name << ", " << at_once << " at once, choice on the " << choice;
    }
  }
  // The longest clip as parts transcribed at once (TranscribeOptions::parts, greedy): in order, to the end.
  size_t longest = 0;
  for (size_t i = 1; i < n; ++i) longest = clips[i].size() > clips[longest].size() ? i : longest;
  const double seconds = double(clips[longest].size()) / wisp::kSampleRate;
  if (seconds >= 120.0) {
    wisp::LoadOptions lo = gpu_load_options("fp16");
    lo.concurrency = kConcurrency;
    const auto gpu = wisp::Model::load(model_path, lo);
    wisp::TranscribeOptions o = wisp::test::transcript_modes()[0].options;
    json parts_summary = json::array();
    for (int parts : {1, kConcurrency}) {
      o.parts = parts;
      gpu->transcribe(clips[longest], o);  // warm-up (graphs of the row counts)
      const auto t0 = std::chrono::steady_clock::now();
      const wisp::Transcript t = gpu->transcribe(clips[longest], o);
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%s (%.0f s), parts %d: %zu segments, %.3f s\n",
                  expected["clips"][longest]["file"].get<std::string>().c_str(), seconds, parts, t.segments.size(),
                  wall);
      parts_summary.push_back(
          {{"parts", parts}, {"segments", t.segments.size()}, {"wall_s", wall}, {"text", t.text()}});
      ASSERT_FALSE(t.segments.empty());
      for (size_t i = 1; i < t.segments.size(); ++i) EXPECT_GE(t.segments[i].start, t.segments[i - 1].end - 1e-9);
      EXPECT_GT(t.segments.back().end, seconds - 15.0);
    }
    summary.push_back(
        {{"long_clip", expected["clips"][longest]["file"]}, {"seconds", seconds}, {"parts", parts_summary}});
  }
  if (const char* out = std::getenv("WISP_GPU_KIT_OUT")) {
    fs::create_directories(out);
    std::ofstream(fs::path(out) / "gpu_concurrent.json") << json{{"summary", summary}}.dump(1);
  }
}
