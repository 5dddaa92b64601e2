// GpuWhisper (src/runtime) against the CPU model on tiny.en: encoder output of window 0 of the JFK clip
// (the log-mel fixture, zero-padded to 30 s) and the greedy tokens (plain argmax, no logit filters) after the
// <|startoftranscript|><|notimestamps|> prompt. Skips with "no CUDA device" without a GPU (CI).
// With WISP_GPU_REF_OUT=dir it first writes the CPU results and the weights as a bundle for
// tests/kernels/gpu_whisper_ref_test.cpp, which runs the same check on a kernels-only GPU machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "kernels/gpu_whisper_check.h"
#include "model/whisper.h"
#include "support/npy.h"
#include "support/test_paths.h"

namespace wisp::test {
namespace {

constexpr int kMaxTokens = 64;

int token_id(const model::WhisperModel& m, const std::string& text) {
  const auto& v = m.vocabulary();
  const auto it = std::find(v.begin(), v.end(), text);
  if (it == v.end()) throw std::runtime_error("no token " + text);
  return int(it - v.begin());
}

int argmax_last(const core::Tensor& logits) {
  const int64_t n = logits.dim(1);
  const float* row = logits.data<float>() + (logits.dim(0) - 1) * n;
  return int(std::max_element(row, row + n) - row);
}

TEST(GpuWhisper, MatchesCpuOnTinyEnJfk) {
  const std::string path = models_dir() + "/tiny.en.wisp";
  WISP_REQUIRE_PATH(path);
  const std::string mel_path = fixtures_dir() + "/audio/mel_jfk_80.npy";
  WISP_REQUIRE_PATH(mel_path);
  const char* out_dir = std::getenv("WISP_GPU_REF_OUT");
  if (!out_dir && !runtime::gpu_available()) GTEST_SKIP() << "no CUDA device";

  const auto cpu = model::WhisperModel::load(path);
  GpuReference ref;
  const runtime::TensorSource source = runtime::open_engine_file(path, ref.dims);
  const int frames = 2 * ref.dims.n_audio_ctx;
  {  // window 0: the first 30 s of the log-mel, zero-padded
    const NpyArray a = read_npy(mel_path);
    const std::vector<float> mel = a.as<float>();
    const size_t n_mels = a.shape[0], n = a.shape[1];
    ref.mel.assign(n_mels * size_t(frames), 0.0f);
    for (size_t c = 0; c < n_mels; ++c) {
      std::copy_n(mel.begin() + long(c * n), std::min<size_t>(n, size_t(frames)), ref.mel.begin() + long(c * frames));
    }
  }
  core::Tensor mel = core::Tensor::empty({ref.dims.n_mels, frames}, core::DType::kF32);
  std::copy(ref.mel.begin(), ref.mel.end(), mel.data<float>());
  const core::Tensor features = cpu->encode(mel);
  ref.features.assign(features.data<float>(), features.data<float>() + features.numel());

  const model::CrossKV cross = cpu->cross_kv(features);
  model::KVCache cache = cpu->new_cache();
  ref.prompt = {token_id(*cpu, "<|startoftranscript|>"), token_id(*cpu, "<|notimestamps|>")};
  const int eot = token_id(*cpu, "<|endoftext|>");
  int next = argmax_last(cpu->logits(cpu->decode(ref.prompt, cross, cache)));
  while (true) {
    ref.tokens.push_back(next);
    if (next == eot || int(ref.tokens.size()) == kMaxTokens) break;
    const int t = next;
    next = argmax_last(cpu->logits(cpu->decode(std::span<const int>(&t, 1), cross, cache)));
  }
  ASSERT_GT(ref.tokens.size(), 5u);

  if (out_dir) {  // the bundle for a kernels-only GPU machine
    const std::string dir = out_dir;
    std::filesystem::create_directories(dir);
    write_dims(dir + "/dims.txt", ref.dims);
    write_floats(dir + "/mel.f32", ref.mel);
    write_floats(dir + "/features.f32", ref.features);
    std::ofstream tok(dir + "/tokens.txt");
    for (int t : ref.prompt) tok << t << " ";
    tok << "\n";
    for (int t : ref.tokens) tok << t << " ";
    tok << "\n";
    std::ofstream idx(dir + "/index.txt"), bin(dir + "/weights.bin", std::ios::binary);
    int64_t offset = 0;
    for (const std::string& name : runtime::weight_names(ref.dims)) {
      const core::Tensor t = source(name);
      idx << name << " " << (t.dtype() == core::DType::kF16 ? "f16" : "f32") << " " << t.numel() << " " << offset
          << "\n";
      bin.write(static_cast<const char*>(t.raw()), std::streamsize(t.nbytes()));
      const int64_t pad = (256 - int64_t(t.nbytes()) % 256) % 256;  // keep every tensor 256-byte aligned
      for (int64_t i = 0; i < pad; ++i) bin.put('\0');
      offset += int64_t(t.nbytes()) + pad;
    }
  }
  if (!runtime::gpu_available()) GTEST_SKIP() << "no CUDA device";
  check_gpu_against(ref, source);
}

}  // namespace
}  // namespace wisp::test
