// Writes the GPU transcript kit: the eval clips decoded to 16 kHz samples and the CPU transcripts of every
// mode in gpu_transcript_modes.h, for tests/gpu/gpu_transcripts_test.cpp to repeat on a GPU machine that has
// no FFmpeg (docs/cuda.md, "End to end on the GPU machine").
//   [WISP_GPU_KIT_MODES=greedy,...] gpu_kit_make MANIFEST.tsv MODEL.wisp OUT_DIR
// OUT_DIR/clips/N.f32 (raw little-endian f32 samples) and OUT_DIR/expected.json. WISP_GPU_KIT_MODES lists the
// modes to record (all by default): a larger model's kit in a few minutes of CPU.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "gpu/gpu_transcript_modes.h"
#include "wisp/audio.h"
#include "wisp/model.h"

namespace fs = std::filesystem;
using nlohmann::json;

json transcript_json(const wisp::Transcript& t, const std::vector<std::vector<int>>& windows) {
  json words = json::array();
  for (const auto& s : t.segments) {
    for (const auto& w : s.words) words.push_back({w.word, w.start, w.end});
  }
  return {{"text", t.text()}, {"language", t.language}, {"windows", windows}, {"words", words}};
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: gpu_kit_make MANIFEST.tsv MODEL.wisp OUT_DIR\n";
    return 2;
  }
  try {
    const fs::path manifest = argv[1], out = argv[3];
    fs::create_directories(out / "clips");
    const auto model = wisp::Model::load(argv[2], 0, "cpu");
    std::ifstream in(manifest);
    std::string line;
    std::getline(in, line);  // header
    json clips = json::array();
    for (int n = 0; std::getline(in, line); ++n) {
      std::istringstream row(line);
      std::string file, language;
      std::getline(row, file, '\t');
      std::getline(row, language, '\t');
      const std::vector<float> samples = wisp::load_audio((manifest.parent_path() / file).string());
      const std::string raw = "clips/" + std::to_string(n) + ".f32";
      std::ofstream(out / raw, std::ios::binary)
          .write(reinterpret_cast<const char*>(samples.data()), static_cast<std::streamsize>(samples.size() * 4));
      json clip = {{"file", file}, {"language", language}, {"samples", raw}};
      for (const auto& mode : wisp::test::transcript_modes()) {
        if (const char* only = std::getenv("WISP_GPU_KIT_MODES")) {
          if (("," + std::string(only) + ",").find("," + mode.name + ",") == std::string::npos) continue;
        }
        std::vector<std::vector<int>> windows;
        wisp::TranscribeOptions o = mode.options;
        o.on_window = [&](const wisp::WindowTrace& w) { windows.push_back(w.tokens); };
        clip[mode.name] = transcript_json(model->transcribe(samples, o), windows);
      }
      clips.push_back(clip);
      std::fprintf(stderr, "%s\n", file.c_str());
    }
    std::ofstream(out / "expected.json") << json{
        {"model", fs::path(argv[2]).filename().string()},
        {"clips", clips}}.dump(1);
  } catch (const std::exception& e) {
    std::cerr << "gpu_kit_make: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
