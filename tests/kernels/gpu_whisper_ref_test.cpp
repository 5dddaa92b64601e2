// GpuWhisper against the CPU model's results for window 0 of the JFK clip, read from a bundle that
// tests/model/gpu_whisper_test.cpp writes (WISP_GPU_REF_OUT=dir) on a machine with the full build. For GPU
// machines that build with WISP_KERNELS_ONLY (no engine-file reader, no CPU model). WISP_GPU_REF=dir points at
// the bundle; bench/gpu/ref_bundle.py packs it small enough to carry. Skips without a device or a bundle.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "kernels/gpu_whisper_check.h"

namespace wisp::test {
namespace {

// Reads the bundle at $WISP_GPU_REF and checks the GPU runner against it with the encoder's GELU `gelu`.
void check_bundle(runtime::GpuWhisper::EncoderGelu gelu) {
  if (!runtime::gpu_available()) GTEST_SKIP() << "no CUDA device";
  const char* dir_env = std::getenv("WISP_GPU_REF");
  if (!dir_env) GTEST_SKIP() << "WISP_GPU_REF not set (no CPU reference bundle)";
  const std::string dir = dir_env;
  if (!std::ifstream(dir + "/index.txt")) GTEST_SKIP() << "missing " << dir << "/index.txt";

  GpuReference ref;
  ref.dims = read_dims(dir + "/dims.txt");
  ref.mel = read_floats(dir + "/mel.f32");
  ref.features = read_floats(dir + "/features.f32");
  {
    std::ifstream f(dir + "/tokens.txt");
    std::string line;
    for (std::vector<int>* v : {&ref.prompt, &ref.tokens}) {
      std::getline(f, line);
      std::istringstream s(line);
      for (int t; s >> t;) v->push_back(t);
    }
  }
  std::ifstream wf(dir + "/weights.bin", std::ios::binary | std::ios::ate);
  ASSERT_TRUE(wf) << "missing " << dir << "/weights.bin";
  auto blob = std::shared_ptr<char[]>(new char[size_t(wf.tellg())]);
  const auto blob_size = wf.tellg();
  wf.seekg(0);
  wf.read(blob.get(), blob_size);
  std::map<std::string, core::Tensor> tensors;
  std::ifstream idx(dir + "/index.txt");
  std::string name, dtype;
  int64_t count = 0, offset = 0;
  while (idx >> name >> dtype >> count >> offset) {
    const core::DType t = dtype == "f16" ? core::DType::kF16 : core::DType::kF32;
    tensors[name] = core::Tensor::wrap(std::shared_ptr<const void>(blob, blob.get()), blob.get() + offset, {count}, t);
  }
  check_gpu_against(
      ref,
      [&](const std::string& n) {
        auto it = tensors.find(n);
        if (it == tensors.end()) throw std::runtime_error("bundle lacks " + n);
        return it->second;
      },
      gelu);
}

TEST(GpuWhisperReference, MatchesCpuBundle) { check_bundle(runtime::GpuWhisper::EncoderGelu::kErf); }

// The fused tanh GELU (`--encoder-gelu tanh`) against the same CPU (erf) results: the same bounds and tokens.
TEST(GpuWhisperReference, MatchesCpuBundleWithTheTanhGelu) { check_bundle(runtime::GpuWhisper::EncoderGelu::kTanh); }

}  // namespace
}  // namespace wisp::test
