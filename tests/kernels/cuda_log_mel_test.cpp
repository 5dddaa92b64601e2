// The log-mel on the GPU (src/kernels/cuda/log_mel.h) against the fp64 reference of
// tests/support/log_mel_reference.h, which audio_mel_reference_test proves equal to wisp::LogMel::compute (the
// CPU, faster-whisper's semantics). Cases: 30 s of tones and noise with a silent second (the floor), short and
// odd lengths, inputs shorter than the reflect padding (the reflection bounces), no padding, 80 and 128 mels,
// silence, reuse of one object across sizes, and the argument checks.
//
// Tolerance: max |gpu − ref| ≤ kRefLogMelTolerance (2e-4 in the final scaled units) over every bin; the
// header explains the number (about twice what fp32 implementations measure against the fp64 reference).
// Outputs are poisoned with NaN before each call, so an unwritten value fails.
//
// Without a CUDA device every test but the host-side argument checks skips with "no CUDA device".
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cuda/log_mel.h"
#include "kernels/cuda_test_support.h"
#include "support/log_mel_reference.h"

namespace wisp::test {
namespace {

namespace cuda = wisp::kernels::cuda;
using cuda::DeviceLogMel;
using cuda::Status;

static_assert(cuda::kLogMelNFft == kRefNFft && cuda::kLogMelHop == kRefHop && cuda::kLogMelBins == kRefNBins);

class CudaLogMel : public DeviceTest {
 protected:
  void SetUp() override {
    DeviceTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  // A ready DeviceLogMel with the reference filterbank.
  DeviceLogMel make(int n_mels, int64_t max_samples, int max_pad = cuda::kLogMelDefaultPad) {
    DeviceLogMel mel;
    const std::vector<float> filters = ref_mel_filters(n_mels);  // [n_mels, 201]
    EXPECT_STATUS_OK(mel.init(n_mels, filters.data(), max_samples, max_pad));
    EXPECT_TRUE(mel.ready());
    return mel;
  }

  // The log-mel of `samples` on stream_, into an output poisoned with NaN: [n_mels, n_frames] on the host.
  std::vector<float> run(DeviceLogMel& mel, const std::vector<float>& samples, int pad) {
    const auto d_samples = upload(samples);
    const int64_t frames = DeviceLogMel::n_frames(static_cast<int64_t>(samples.size()), pad);
    Dev<float> d_out(static_cast<size_t>(mel.n_mels() * frames));
    d_out.poison();
    EXPECT_STATUS_OK(mel.compute(d_samples->get(), static_cast<int64_t>(samples.size()), d_out.get(), stream_, pad));
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    return download(d_out.get(), d_out.size());
  }

  cudaStream_t stream_ = nullptr;
};

// Checks a GPU log-mel against the fp64 reference and prints the error.
void expect_near_reference(const std::vector<float>& gpu, const std::vector<double>& ref, int n_mels, int64_t frames,
                           const std::string& what) {
  ASSERT_EQ(gpu.size(), static_cast<size_t>(n_mels * frames)) << what;
  ASSERT_EQ(ref.size(), gpu.size()) << what;
  size_t not_finite = 0;
  for (float v : gpu) not_finite += std::isfinite(v) ? 0 : 1;
  const RefMaxDiff d = ref_max_abs_diff(gpu, ref);
  std::printf("  %-44s %4d mels %5lld frames  max|gpu - ref| = %.3g (bound %.3g)\n", what.c_str(), n_mels,
              static_cast<long long>(frames), d.value, kRefLogMelTolerance);
  EXPECT_EQ(not_finite, 0u) << what << ": unwritten or non-finite outputs";
  EXPECT_LE(d.value, kRefLogMelTolerance)
      << what << ": at mel " << d.index / static_cast<size_t>(frames) << ", frame "
      << d.index % static_cast<size_t>(frames) << " (ref " << ref[d.index] << ", gpu " << gpu[d.index] << ")";
}

// 30 s (480000 samples) of tones and noise with a silent second (samples [160000, 176000)), padded by 160 as
// transcribe does: 3001 frames, frames 1002..1098 entirely silent and so on the floor.
TEST_F(CudaLogMel, ThirtySecondsMatchReference) {
  constexpr size_t kN = 480000;
  constexpr int kPad = 160;
  const std::vector<float> x = ref_test_signal(kN, 7, 160000, 176000);
  const int frames = ref_log_mel_frames(kN, kPad);
  ASSERT_EQ(frames, 3001);
  const std::vector<double> power = ref_power_spectrum(x, kPad);  // [frames, 201]
  for (int n_mels : {80, 128}) {
    DeviceLogMel mel = make(n_mels, kN);
    const std::vector<float> gpu = run(mel, x, kPad);
    const std::vector<double> ref = ref_log_mel_from_power(power, frames, ref_mel_filters(n_mels), n_mels);
    expect_near_reference(gpu, ref, n_mels, frames, "30 s, silent second, pad 160");
    // The silent frames sit exactly on the GPU's floor, the smallest value of the output, which lies 8 decades
    // (2 in scaled units) below the largest.
    const float lo = *std::min_element(gpu.begin(), gpu.end());
    const float hi = *std::max_element(gpu.begin(), gpu.end());
    EXPECT_NEAR(hi - lo, 2.0f, 4e-6f);  // two float roundings of values near 1
    for (int m = 0; m < n_mels; ++m) {
      for (int t = 1002; t <= 1098; ++t) {
        ASSERT_EQ(gpu[static_cast<size_t>(m) * frames + t], lo) << "mel " << m << ", frame " << t;
      }
    }

    // Time it (informative only: nothing is asserted about speed).
    const auto d_x = upload(x);
    Dev<float> d_out(static_cast<size_t>(n_mels) * frames);
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    for (int i = 0; i < 3; ++i) EXPECT_STATUS_OK(mel.compute(d_x->get(), kN, d_out.get(), stream_, kPad));
    constexpr int kReps = 20;
    cudaEventRecord(start, stream_);
    for (int i = 0; i < kReps; ++i) EXPECT_STATUS_OK(mel.compute(d_x->get(), kN, d_out.get(), stream_, kPad));
    cudaEventRecord(stop, stream_);
    ASSERT_EQ(cudaEventSynchronize(stop), cudaSuccess);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    std::printf("  30 s, %d mels: %.1f us per call (device buffers %.1f MB)\n", n_mels, 1000.0f * ms / kReps,
                mel.device_bytes() / 1e6);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
}

struct ShortCase {
  size_t n;
  int pad;
  const char* what;
};

// Short and odd lengths, no padding, and inputs shorter than the 200-sample reflect padding, where reflected
// indices land in the zero padding or bounce off both ends (150 + 10: index −200 reflects to 200, then to 118).
TEST_F(CudaLogMel, ShortInputsMatchReference) {
  const ShortCase cases[] = {
      {1234, 160, "1234 samples, pad 160"},
      {1234, 0, "1234 samples, pad 0"},
      {16000, 0, "16000 samples, pad 0"},
      {4321, 77, "4321 samples, pad 77"},
      {100, 160, "100 samples, pad 160 (reflection into zeros)"},
      {150, 10, "150 samples, pad 10 (reflection bounces)"},
      {1, 159, "1 sample, pad 159"},
      {160, 0, "160 samples, pad 0 (one frame, bounces)"},
  };
  for (int n_mels : {80, 128}) {
    // A large object (the small plans of its ladder) and one sized for these inputs exactly.
    DeviceLogMel large = make(n_mels, 480000);
    DeviceLogMel small = make(n_mels, 16000);
    const std::vector<float> filters = ref_mel_filters(n_mels);
    for (const ShortCase& c : cases) {
      const std::vector<float> x = ref_test_signal(c.n, static_cast<uint32_t>(c.n));
      const int frames = ref_log_mel_frames(c.n, c.pad);
      const std::vector<double> ref = ref_log_mel(x, c.pad, filters, n_mels);
      expect_near_reference(run(large, x, c.pad), ref, n_mels, frames, c.what);
      expect_near_reference(run(small, x, c.pad), ref, n_mels, frames, std::string(c.what) + ", small");
    }
  }
}

// compute_host: a recording longer than init's input, in chunks (the floor from the maximum of all of them),
// against the fp64 reference, and against compute() of the whole signal on an object sized for it. The loud
// part sits in a late chunk, so an early chunk's own maximum would give a wrong floor.
TEST_F(CudaLogMel, LongInputInChunksMatchesReference) {
  constexpr size_t kN = 16000 * 47 + 123;  // 47 s and a bit: 5 chunks of 10 s and a short one
  constexpr int kPad = 160;
  std::vector<float> x = ref_test_signal(kN, 21, 16000, 16000 * 9);
  for (size_t i = 16000 * 40; i < 16000 * 41; ++i) x[i] *= 8.0f;  // the loudest second, in chunk 4
  const int frames = ref_log_mel_frames(kN, kPad);
  for (int n_mels : {80, 128}) {
    const std::vector<double> ref = ref_log_mel(x, kPad, ref_mel_filters(n_mels), n_mels);
    DeviceLogMel chunked = make(n_mels, 16000 * 10);
    std::vector<float> got(static_cast<size_t>(n_mels) * static_cast<size_t>(frames), NAN);
    EXPECT_STATUS_OK(chunked.compute_host(x.data(), static_cast<int64_t>(kN), got.data(), stream_, kPad));
    expect_near_reference(got, ref, n_mels, frames, "47 s in chunks of 10 s (compute_host)");
    DeviceLogMel whole = make(n_mels, static_cast<int64_t>(kN));
    const std::vector<float> one_pass = run(whole, x, kPad);
    float diff = 0;
    for (size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::fabs(got[i] - one_pass[i]));
    std::printf("  chunks vs one pass: max difference %.3g\n", diff);
    EXPECT_LE(diff, kRefLogMelTolerance);
  }
  DeviceLogMel mel = make(80, 16000);
  std::vector<float> out(80 * 200);
  EXPECT_EQ(mel.compute_host(nullptr, 16000, out.data(), stream_), Status::kInvalidArgument);
  EXPECT_EQ(mel.compute_host(x.data(), 0, out.data(), stream_), Status::kInvalidArgument);
  EXPECT_EQ(mel.compute_host(x.data(), 100, out.data(), stream_, 0), Status::kInvalidArgument);  // no frame
}

// All zeros: every mel is log10(1e-10) = −10, the maximum is −10, the floor −18, so every value is exactly
// (−10 + 4) / 4 = −1.5, as on the CPU.
TEST_F(CudaLogMel, SilenceIsExactlyConstant) {
  for (int n_mels : {80, 128}) {
    DeviceLogMel mel = make(n_mels, 16000);
    const std::vector<float> gpu = run(mel, std::vector<float>(16000, 0.0f), 160);
    ASSERT_EQ(gpu.size(), static_cast<size_t>(n_mels) * 101);
    for (size_t i = 0; i < gpu.size(); ++i) ASSERT_EQ(gpu[i], -1.5f) << "at " << i;
  }
}

// One object serves inputs of any size up to its maximum: results do not depend on what ran before.
TEST_F(CudaLogMel, ReuseAcrossSizesIsDeterministic) {
  DeviceLogMel mel = make(80, 480000);
  const std::vector<float> long_x = ref_test_signal(480000, 3);
  const std::vector<float> short_x = ref_test_signal(1234, 5);
  const std::vector<float> a = run(mel, long_x, 160);
  const std::vector<float> b = run(mel, short_x, 160);
  const std::vector<float> c = run(mel, std::vector<float>(400, 0.0f), 0);
  EXPECT_EQ(run(mel, long_x, 160), a);
  EXPECT_EQ(run(mel, short_x, 160), b);
  EXPECT_EQ(run(mel, std::vector<float>(400, 0.0f), 0), c);
  expect_near_reference(b, ref_log_mel(short_x, 160, ref_mel_filters(80), 80), 80, 8, "1234 samples after 30 s");
}

TEST_F(CudaLogMel, RejectsBadArguments) {
  DeviceLogMel mel = make(80, 16000, 160);
  const auto d_x = upload(std::vector<float>(16001, 0.25f));
  Dev<float> d_out(80 * 102);
  d_out.poison();
  const float* x = d_x->get();
  float* out = d_out.get();
  EXPECT_EQ(mel.compute(x, 0, out, stream_), Status::kInvalidArgument);      // no samples
  EXPECT_EQ(mel.compute(x, -5, out, stream_), Status::kInvalidArgument);     // negative count
  EXPECT_EQ(mel.compute(x, 16001, out, stream_), Status::kInvalidArgument);  // more than init's maximum
  EXPECT_EQ(mel.compute(nullptr, 16000, out, stream_), Status::kInvalidArgument);
  EXPECT_EQ(mel.compute(x, 16000, nullptr, stream_), Status::kInvalidArgument);
  EXPECT_EQ(mel.compute(x, 16000, out, stream_, -1), Status::kInvalidArgument);   // negative padding
  EXPECT_EQ(mel.compute(x, 16000, out, stream_, 161), Status::kInvalidArgument);  // more than init's maximum
  EXPECT_EQ(mel.compute(x, 100, out, stream_, 0), Status::kInvalidArgument);      // no complete frame
  EXPECT_EQ(mel.compute(x, 159, out, stream_, 0), Status::kInvalidArgument);
  // None of them launched anything: the output is still NaN.
  for (float v : download(out, d_out.size())) ASSERT_TRUE(std::isnan(v));
  // The limits themselves are accepted.
  EXPECT_STATUS_OK(mel.compute(x, 16000, out, stream_, 160));
  EXPECT_STATUS_OK(mel.compute(x, 160, out, stream_, 0));
  sync_ok();
}

// Host-side checks: no device needed (init refuses before touching CUDA).
TEST(CudaLogMelArgs, InitAndComputeRejectBadArguments) {
  const std::vector<float> filters = ref_mel_filters(80);  // [80, 201]
  DeviceLogMel mel;
  EXPECT_FALSE(mel.ready());
  EXPECT_EQ(mel.n_mels(), 0);
  EXPECT_EQ(mel.init(0, filters.data(), 16000), Status::kInvalidArgument);
  EXPECT_EQ(mel.init(-80, filters.data(), 16000), Status::kInvalidArgument);
  EXPECT_EQ(mel.init(cuda::kLogMelMaxMels + 1, filters.data(), 16000), Status::kInvalidArgument);
  EXPECT_EQ(mel.init(80, nullptr, 16000), Status::kInvalidArgument);
  EXPECT_EQ(mel.init(80, filters.data(), 0), Status::kInvalidArgument);
  EXPECT_EQ(mel.init(80, filters.data(), 16000, -1), Status::kInvalidArgument);
  EXPECT_EQ(mel.init(80, filters.data(), 100, 0), Status::kInvalidArgument);  // not one frame
  EXPECT_EQ(mel.init(80, filters.data(), (cuda::kLogMelMaxFrames + 1) * cuda::kLogMelHop, 0), Status::kInvalidArgument);
  EXPECT_EQ(mel.init(80, filters.data(), INT64_MAX), Status::kInvalidArgument);
  EXPECT_FALSE(mel.ready());
  // Not ready: compute refuses before looking at the pointers.
  float dummy = 0.0f;
  EXPECT_EQ(mel.compute(&dummy, 1, &dummy, nullptr), Status::kInvalidArgument);

  EXPECT_EQ(DeviceLogMel::n_frames(480000, 160), 3001);
  EXPECT_EQ(DeviceLogMel::n_frames(480000, 0), 3000);
  EXPECT_EQ(DeviceLogMel::n_frames(159, 0), 0);
  EXPECT_EQ(DeviceLogMel::n_frames(1, 159), 1);
  for (size_t n : {size_t{1}, size_t{1234}, size_t{480000}}) {
    for (int pad : {0, 60, 160})
      EXPECT_EQ(DeviceLogMel::n_frames(static_cast<int64_t>(n), pad), ref_log_mel_frames(n, pad));
  }
}

}  // namespace
}  // namespace wisp::test
