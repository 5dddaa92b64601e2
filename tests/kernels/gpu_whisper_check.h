// Shared by tests/model/gpu_whisper_test.cpp (full build: CPU model and GPU runner side by side) and
// tests/kernels/gpu_whisper_ref_test.cpp (kernels-only GPU machine: CPU results read from a bundle written by
// the first test). Runs GpuWhisper on one 30 s window and checks it against the CPU model's results.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/gpu_whisper.h"

namespace wisp::test {

struct GpuReference {
  runtime::GpuDims dims;
  std::vector<float> mel;       // [n_mels, 2·n_audio_ctx]
  std::vector<float> features;  // CPU encoder output [n_audio_ctx, n_audio_state]
  std::vector<int> prompt;      // decoder prompt
  std::vector<int> tokens;      // CPU greedy (plain argmax) tokens after the prompt, up to and with EOT
};

// Tolerances. The CPU model keeps activations in fp32; the runner stores every activation in fp16 (2^-11
// relative rounding) between kernels, ~10 roundings per layer, so its encoder output differs by a few 1e-3
// relative (rms). The bound is 20x one rounding on the rms of the difference, and 0.25 absolute on one of
// 576,000 LayerNorm outputs of order 1 (the worst element collects the largest cancellations).
inline constexpr double kFeatureRelRms = 1e-2;
inline constexpr double kFeatureMaxAbs = 0.25;

// `gelu`: the GPU encoder's GELU (GpuWhisper::set_encoder_gelu); the CPU's is always erf, and the tanh form's
// difference (at most 4.7e-4 on a GELU output of order 1) is far inside the bounds above.
inline void check_gpu_against(const GpuReference& ref, const runtime::TensorSource& source,
                              runtime::GpuWhisper::EncoderGelu gelu = runtime::GpuWhisper::EncoderGelu::kErf) {
  auto m = runtime::GpuWhisper::create(ref.dims, 1, source);
  m->set_encoder_gelu(gelu);
  m->encode(ref.mel.data(), 1);
  const std::vector<float> g = m->features(0);
  ASSERT_EQ(g.size(), ref.features.size());
  double diff2 = 0, ref2 = 0, max_abs = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double e = double(g[i]) - double(ref.features[i]);
    ASSERT_TRUE(std::isfinite(g[i])) << "element " << i;
    diff2 += e * e, ref2 += double(ref.features[i]) * ref.features[i];
    max_abs = std::max(max_abs, std::fabs(e));
  }
  const double rel_rms = std::sqrt(diff2 / ref2);
  std::printf("encoder features (%s, %s GELU): rel rms %.3e, max abs %.3e\n", m->device_name().c_str(),
              gelu == runtime::GpuWhisper::EncoderGelu::kTanh ? "tanh" : "erf", rel_rms, max_abs);
  EXPECT_LE(rel_rms, kFeatureRelRms);
  EXPECT_LE(max_abs, kFeatureMaxAbs);

  m->cross_kv(1);
  m->reset(1);
  std::vector<int> next;
  for (int t : ref.prompt) next = m->decode_step(&t, 1);
  std::vector<int> got;
  for (size_t i = 0; i < ref.tokens.size(); ++i) {
    got.push_back(next[0]);
    if (i + 1 < ref.tokens.size()) next = m->decode_step(&got.back(), 1);
  }
  std::string a, b;
  for (int t : ref.tokens) a += std::to_string(t) + " ";
  for (int t : got) b += std::to_string(t) + " ";
  std::printf("cpu greedy: %s\ngpu greedy: %s\n", a.c_str(), b.c_str());
  EXPECT_EQ(got, ref.tokens);
}

// The bundle: dims.txt, index.txt ("name dtype count offset" per tensor), weights.bin, mel.f32,
// features.f32, tokens.txt (prompt line, tokens line).
inline void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 4));
}
inline std::vector<float> read_floats(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  std::vector<float> v(size_t(f.tellg()) / 4);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 4));
  return v;
}
inline void write_dims(const std::string& path, const runtime::GpuDims& d) {
  std::ofstream(path) << d.n_mels << " " << d.n_vocab << " " << d.n_audio_ctx << " " << d.n_audio_state << " "
                      << d.n_audio_head << " " << d.n_audio_layer << " " << d.n_text_ctx << " " << d.n_text_state << " "
                      << d.n_text_head << " " << d.n_text_layer << "\n";
}
inline runtime::GpuDims read_dims(const std::string& path) {
  runtime::GpuDims d;
  std::ifstream(path) >> d.n_mels >> d.n_vocab >> d.n_audio_ctx >> d.n_audio_state >> d.n_audio_head >>
      d.n_audio_layer >> d.n_text_ctx >> d.n_text_state >> d.n_text_head >> d.n_text_layer;
  return d;
}

}  // namespace wisp::test
