// The fp64 log-mel reference of tests/support/log_mel_reference.h (used by the GPU test,
// tests/kernels/cuda_log_mel_test.cpp) against wisp::LogMel::compute, which audio_mel_test checks against
// faster-whisper: this proves the reference has the CPU's semantics (reflect padding, framing, window, floor
// and scaling; the filterbank is shared, core/mel_filters.h), so that the GPU test compares against the right
// thing.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "audio/mel.h"
#include "support/log_mel_reference.h"

namespace wisp {
namespace {

static_assert(test::kRefNFft == kNFft && test::kRefHop == kHopLength && test::kRefNBins == kNFreqBins);

struct Case {
  size_t n;
  int pad;
  size_t silent_from, silent_to;  // samples [from, to) set to zero
};

// The cases of the GPU test that the CPU can afford to run (and a 2 s one with a silent stretch): odd lengths,
// no padding, and inputs shorter than the reflect padding, where reflected indices land in the zero padding
// (100 + 160) or bounce off both ends (150 + 10, 160 + 0).
TEST(LogMelReference, MatchesLogMelCompute) {
  const Case cases[] = {{1234, 160, 0, 0}, {1234, 0, 0, 0},  {16000, 0, 0, 0},
                        {4321, 77, 0, 0},  {100, 160, 0, 0}, {150, 10, 0, 0},
                        {1, 159, 0, 0},    {160, 0, 0, 0},   {32000, 160, 8000, 24000}};
  for (int n_mels : {80, 128}) {
    const LogMel mel(n_mels);
    const std::vector<float> filters = test::ref_mel_filters(n_mels);
    for (const Case& c : cases) {
      const std::vector<float> x = test::ref_test_signal(c.n, static_cast<uint32_t>(c.n), c.silent_from, c.silent_to);
      const int frames = test::ref_log_mel_frames(c.n, c.pad);
      SCOPED_TRACE(std::to_string(c.n) + " samples, pad " + std::to_string(c.pad) + ", " + std::to_string(n_mels) +
                   " mels");
      ASSERT_EQ(frames, mel.n_frames(c.n, c.pad));
      const std::vector<float> cpu = mel.compute(x, c.pad);                          // [n_mels, frames]
      const std::vector<double> ref = test::ref_log_mel(x, c.pad, filters, n_mels);  // [n_mels, frames]
      ASSERT_EQ(cpu.size(), ref.size());
      const test::RefMaxDiff d = test::ref_max_abs_diff(cpu, ref);
      std::printf("  %6zu samples, pad %3d, %3d mels: max|cpu - ref| = %.3g\n", c.n, c.pad, n_mels, d.value);
      EXPECT_LE(d.value, test::kRefLogMelTolerance) << "at mel " << d.index / frames << ", frame " << d.index % frames
                                                    << " (ref " << ref[d.index] << ", cpu " << cpu[d.index] << ")";
    }
  }
}

// Silence: both give exactly (−10 + 4) / 4 everywhere (the GPU test asserts the same of the GPU).
TEST(LogMelReference, SilenceIsExactlyConstant) {
  const std::vector<float> silence(16000, 0.0f);
  const std::vector<float> cpu = LogMel(80).compute(silence, 160);
  const std::vector<double> ref = test::ref_log_mel(silence, 160, test::ref_mel_filters(80), 80);
  ASSERT_EQ(cpu.size(), 80u * 101);
  ASSERT_EQ(ref.size(), cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_EQ(cpu[i], -1.5f) << i;
    ASSERT_EQ(ref[i], -1.5) << i;
  }
}

// The tolerance is tight enough to see semantic mistakes: the input one sample late is far outside it.
TEST(LogMelReference, ToleranceSeesSmallSemanticErrors) {
  const std::vector<float> x = test::ref_test_signal(4000, 11);
  const std::vector<float> filters = test::ref_mel_filters(80);
  const std::vector<float> cpu = LogMel(80).compute(x, 160);
  // One sample of delay: the signal with a zero in front, one sample dropped at the end.
  std::vector<float> shifted(x.size());
  shifted[0] = 0.0f;
  std::copy(x.begin(), x.end() - 1, shifted.begin() + 1);
  const double shift_error = test::ref_max_abs_diff(cpu, test::ref_log_mel(shifted, 160, filters, 80)).value;
  std::printf("  one-sample shift: max|cpu - ref| = %.3g\n", shift_error);
  EXPECT_GT(shift_error, 20 * test::kRefLogMelTolerance);
}

}  // namespace
}  // namespace wisp
