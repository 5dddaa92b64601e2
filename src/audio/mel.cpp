#include "audio/mel.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "core/mel_filters.h"
#include "wisp/audio.h"
#include "wisp/errors.h"

namespace wisp {
namespace {

// FFTW's planner (plan creation and destruction) shares global state and is not thread-safe; executing a
// finished plan is. Every planner call in this file goes through this lock.
std::mutex& fftw_planner_mutex() {
  static std::mutex m;
  return m;
}

struct FftwFree {
  void operator()(void* p) const { fftwf_free(p); }
};
using FloatBuffer = std::unique_ptr<float[], FftwFree>;
using ComplexBuffer = std::unique_ptr<fftwf_complex[], FftwFree>;

FloatBuffer alloc_floats(size_t n) {
  FloatBuffer p(static_cast<float*>(fftwf_malloc(n * sizeof(float))));
  if (!p) throw std::bad_alloc();
  return p;
}
ComplexBuffer alloc_complex(size_t n) {
  ComplexBuffer p(static_cast<fftwf_complex*>(fftwf_malloc(n * sizeof(fftwf_complex))));
  if (!p) throw std::bad_alloc();
  return p;
}

// numpy's reflect padding (np.pad mode="reflect") of a length-`length` signal at index i, which may lie
// before 0 or past the end: the signal mirrored about its first and last samples without repeating them,
// repeatedly when the padding is longer than the signal (a triangle wave over the indices).
size_t reflect_index(ptrdiff_t i, size_t length) {
  if (length == 1) return 0;
  const ptrdiff_t period = 2 * static_cast<ptrdiff_t>(length - 1);
  ptrdiff_t r = i % period;
  if (r < 0) r += period;
  if (r >= static_cast<ptrdiff_t>(length)) r = period - r;
  return static_cast<size_t>(r);
}

}  // namespace

struct LogMel::Plan {
  fftwf_plan plan = nullptr;

  Plan() {
    // Plan against fftwf_malloc'd buffers so that the buffers compute() allocates the same way satisfy the
    // plan's alignment when used with fftwf_execute_dft_r2c. FFTW_ESTIMATE: no timing runs, so the
    // algorithm (and hence the rounding) is the same on every run and machine load.
    FloatBuffer in = alloc_floats(kNFft);
    ComplexBuffer out = alloc_complex(kNFreqBins);
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    plan = fftwf_plan_dft_r2c_1d(kNFft, in.get(), out.get(), FFTW_ESTIMATE);
    if (!plan) throw InternalError("FFTW could not plan a real FFT of size 400");
  }
  ~Plan() {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    fftwf_destroy_plan(plan);
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
};

std::vector<float> LogMel::filters(int n_mels) {
  if (n_mels <= 0) throw InvalidArgument("n_mels must be positive, got " + std::to_string(n_mels));
  return core::mel_filters(n_mels);
}

LogMel::LogMel(int n_mels) : n_mels_(n_mels) {
  if (n_mels != 80 && n_mels != 128) {
    throw InvalidArgument("n_mels must be 80 or 128, got " + std::to_string(n_mels));
  }
  filters_ = filters(n_mels);
  band_begin_.resize(n_mels);
  band_end_.resize(n_mels);
  // Each triangle spans only a few bins; the mel projection touches just those (~2 bins per frequency bin
  // in total instead of n_mels).
  for (int m = 0; m < n_mels; ++m) {
    const float* row = &filters_[static_cast<size_t>(m) * kNFreqBins];
    int begin = 0;
    while (begin < kNFreqBins && row[begin] == 0.0f) ++begin;
    int end = kNFreqBins;
    while (end > begin && row[end - 1] == 0.0f) --end;
    band_begin_[m] = begin;
    band_end_[m] = end;
  }
  // np.hanning(401)[:-1], the periodic Hann window, evaluated with numpy's formula (0.5 + 0.5 cos(pi n / M-1)
  // for n = -400, -398, ...) in double and rounded to float, so it is bit-identical to the reference's.
  window_.resize(kNFft);
  for (int i = 0; i < kNFft; ++i) {
    const double n = 2.0 * i - kNFft;
    window_[i] = static_cast<float>(0.5 + 0.5 * std::cos(M_PI * n / kNFft));
  }
  plan_ = std::make_shared<const Plan>();
}

int LogMel::n_frames(size_t n_samples, int pad) const {
  // The centered STFT of the padded signal (length L) has 1 + L / hop frames; the last is dropped.
  return static_cast<int>((n_samples + static_cast<size_t>(std::max(pad, 0))) / kHopLength);
}

std::vector<float> LogMel::compute(std::span<const float> samples, int pad_samples) const {
  if (samples.empty()) throw InvalidArgument("cannot compute a log-mel spectrogram of no samples");
  if (pad_samples < 0) {
    throw InvalidArgument("log-mel padding must be >= 0, got " + std::to_string(pad_samples));
  }
  const int frames = n_frames(samples.size(), pad_samples);
  if (frames <= 0) {
    throw InvalidArgument("audio of " + std::to_string(samples.size()) + " samples (+" + std::to_string(pad_samples) +
                          " padding) is shorter than one 10 ms frame");
  }

  // The signal with `pad_samples` trailing zeros (length L), extended by n_fft/2 reflected samples on both
  // sides for the centered STFT: [L + kNFft].
  const size_t n = samples.size();
  const size_t length = n + static_cast<size_t>(pad_samples);
  const ptrdiff_t half = kNFft / 2;
  std::vector<float> padded(length + kNFft, 0.0f);
  std::copy(samples.begin(), samples.end(), padded.begin() + half);
  for (ptrdiff_t i = 0; i < half; ++i) {
    const size_t left = reflect_index(i - half, length);
    const size_t right = reflect_index(static_cast<ptrdiff_t>(length) + i, length);
    padded[i] = left < n ? samples[left] : 0.0f;
    padded[length + half + i] = right < n ? samples[right] : 0.0f;
  }

  FloatBuffer in = alloc_floats(kNFft);
  ComplexBuffer out = alloc_complex(kNFreqBins);
  std::vector<float> power(kNFreqBins);                           // [kNFreqBins]
  std::vector<float> mel(static_cast<size_t>(n_mels_) * frames);  // [n_mels, n_frames]
  float max_log = -std::numeric_limits<float>::infinity();
  for (int t = 0; t < frames; ++t) {
    const float* frame = &padded[static_cast<size_t>(t) * kHopLength];
    for (int i = 0; i < kNFft; ++i) in[i] = frame[i] * window_[i];
    fftwf_execute_dft_r2c(plan_->plan, in.get(), out.get());
    for (int k = 0; k < kNFreqBins; ++k) power[k] = out[k][0] * out[k][0] + out[k][1] * out[k][1];
    for (int m = 0; m < n_mels_; ++m) {
      const float* row = &filters_[static_cast<size_t>(m) * kNFreqBins];
      // Accumulating in double makes the result independent of summation order (the reference uses a
      // float32 GEMM whose order we cannot know).
      double acc = 0.0;
      for (int k = band_begin_[m]; k < band_end_[m]; ++k) acc += static_cast<double>(row[k]) * power[k];
      const float v = std::log10(std::max(static_cast<float>(acc), 1e-10f));
      mel[static_cast<size_t>(m) * frames + t] = v;
      max_log = std::max(max_log, v);
    }
  }

  // Dynamic range compression to 8 decades below the loudest bin, then Whisper's fixed scaling to ~[-1, 1].
  const float floor = max_log - 8.0f;
  for (float& v : mel) v = (std::max(v, floor) + 4.0f) / 4.0f;
  return mel;
}

}  // namespace wisp
