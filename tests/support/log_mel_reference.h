// An fp64 reference of Whisper's log-mel spectrogram (the semantics of wisp::LogMel::compute, src/audio/mel.cpp),
// shared by the CPU check of the reference itself (tests/unit/audio_mel_reference_test.cpp) and the GPU test of
// DeviceLogMel (tests/kernels/cuda_log_mel_test.cpp). Header-only and free of the audio layer (FFTW) and of
// CUDA, so that the kernels-only build can use it.
//
// The reference is deliberately naive: the padded signal is built sample by sample with numpy's reflect
// padding, each frame's DFT is a direct sum in double, and the mel projection, log10, floor and scaling run in
// double. Its inputs are the values the real implementations use: the samples, the periodic Hann window and
// the filterbank, each rounded to float as mel.cpp rounds them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/mel_filters.h"

namespace wisp::test {

inline constexpr int kRefNFft = 400;                // 25 ms window at 16 kHz
inline constexpr int kRefHop = 160;                 // 10 ms hop
inline constexpr int kRefNBins = kRefNFft / 2 + 1;  // 201 one-sided bins
inline constexpr double kRefSampleRate = 16000.0;   // Hz
inline constexpr double kRefPi = 3.14159265358979323846;

// Frames of a padded input: (n + pad) / hop (the centered STFT's last, partial frame is dropped).
inline int ref_log_mel_frames(size_t n_samples, int pad) {
  return static_cast<int>((n_samples + static_cast<size_t>(std::max(pad, 0))) / kRefHop);
}

// numpy's reflect padding (np.pad mode="reflect") of a length-`length` signal at index i (which may lie
// before 0 or past the end), as mel.cpp's reflect_index: a triangle wave over the indices.
inline size_t ref_reflect_index(ptrdiff_t i, size_t length) {
  if (length == 1) return 0;
  const ptrdiff_t period = 2 * static_cast<ptrdiff_t>(length - 1);
  ptrdiff_t r = i % period;
  if (r < 0) r += period;
  if (r >= static_cast<ptrdiff_t>(length)) r = period - r;
  return static_cast<size_t>(r);
}

// np.hanning(401)[:-1] in double, rounded to float (as mel.cpp): [400].
inline std::vector<float> ref_hann_window() {
  std::vector<float> w(kRefNFft);
  for (int i = 0; i < kRefNFft; ++i) {
    const double n = 2.0 * i - kRefNFft;
    w[static_cast<size_t>(i)] = static_cast<float>(0.5 + 0.5 * std::cos(kRefPi * n / kRefNFft));
  }
  return w;
}

// The filterbank: the one definition both log-mels use (core/mel_filters.h); the reference is independent in
// everything else (framing, padding, the DFT, the projection, the log and the floor).
inline std::vector<float> ref_mel_filters(int n_mels) { return core::mel_filters(n_mels); }

// Sample p of the centered STFT's input (frame t reads p in [160·t, 160·t + 400)): the signal is
// `samples` followed by `pad` zeros (length L) and extended by 200 reflected values on each side. Reflected
// indices that land in the zero padding give 0, as in mel.cpp.
inline double ref_padded_sample(const std::vector<float>& samples, int pad, int64_t p) {
  const size_t n = samples.size();
  const size_t length = n + static_cast<size_t>(pad);
  const ptrdiff_t j = static_cast<ptrdiff_t>(p) - kRefNFft / 2;  // index into the zero-padded signal
  size_t r;
  if (j >= 0 && j < static_cast<ptrdiff_t>(length)) {
    r = static_cast<size_t>(j);
  } else {
    r = ref_reflect_index(j, length);
  }
  return r < n ? static_cast<double>(samples[r]) : 0.0;
}

// |DFT|² of each windowed frame, in double (direct summation with an fp64 twiddle table): [n_frames, 201].
inline std::vector<double> ref_power_spectrum(const std::vector<float>& samples, int pad) {
  const int frames = ref_log_mel_frames(samples.size(), pad);
  const std::vector<float> window = ref_hann_window();
  std::vector<double> cos_t(kRefNFft), sin_t(kRefNFft);  // [400] e^{-2πi r/400} = cos − i sin
  for (int r = 0; r < kRefNFft; ++r) {
    cos_t[static_cast<size_t>(r)] = std::cos(2.0 * kRefPi * r / kRefNFft);
    sin_t[static_cast<size_t>(r)] = std::sin(2.0 * kRefPi * r / kRefNFft);
  }
  std::vector<double> power(static_cast<size_t>(std::max(frames, 0)) * kRefNBins);  // [n_frames, 201]
  std::vector<double> x(kRefNFft);                                                  // [400] windowed frame
  for (int t = 0; t < frames; ++t) {
    for (int i = 0; i < kRefNFft; ++i) {
      x[static_cast<size_t>(i)] =
          ref_padded_sample(samples, pad, int64_t{t} * kRefHop + i) * window[static_cast<size_t>(i)];
    }
    for (int k = 0; k < kRefNBins; ++k) {
      double re = 0.0, im = 0.0;
      int r = 0;  // k·i mod 400
      for (int i = 0; i < kRefNFft; ++i) {
        re += x[static_cast<size_t>(i)] * cos_t[static_cast<size_t>(r)];
        im -= x[static_cast<size_t>(i)] * sin_t[static_cast<size_t>(r)];
        r += k;
        if (r >= kRefNFft) r -= kRefNFft;
      }
      power[static_cast<size_t>(t) * kRefNBins + static_cast<size_t>(k)] = re * re + im * im;
    }
  }
  return power;
}

// The rest of the pipeline in double: mel projection, log10(max(v, 1e-10)), floor at (global max − 8), then
// (v + 4) / 4. power: [n_frames, 201]; filters: [n_mels, 201]. Returns [n_mels, n_frames] row-major.
inline std::vector<double> ref_log_mel_from_power(const std::vector<double>& power, int frames,
                                                  const std::vector<float>& filters, int n_mels) {
  std::vector<double> mel(static_cast<size_t>(n_mels) * static_cast<size_t>(std::max(frames, 0)));
  double max_log = -std::numeric_limits<double>::infinity();
  for (int m = 0; m < n_mels; ++m) {
    for (int t = 0; t < frames; ++t) {
      double acc = 0.0;
      for (int k = 0; k < kRefNBins; ++k) {
        acc += static_cast<double>(filters[static_cast<size_t>(m) * kRefNBins + static_cast<size_t>(k)]) *
               power[static_cast<size_t>(t) * kRefNBins + static_cast<size_t>(k)];
      }
      const double v = std::log10(std::max(acc, 1e-10));
      mel[static_cast<size_t>(m) * static_cast<size_t>(frames) + static_cast<size_t>(t)] = v;
      max_log = std::max(max_log, v);
    }
  }
  for (double& v : mel) v = (std::max(v, max_log - 8.0) + 4.0) / 4.0;
  return mel;
}

// The whole reference: samples [n] (16 kHz) with `pad` trailing zeros, filters [n_mels, 201] → [n_mels, n_frames].
inline std::vector<double> ref_log_mel(const std::vector<float>& samples, int pad, const std::vector<float>& filters,
                                       int n_mels) {
  return ref_log_mel_from_power(ref_power_spectrum(samples, pad), ref_log_mel_frames(samples.size(), pad), filters,
                                n_mels);
}

// A deterministic test signal [n]: four sines (220, 1375.5, 3960 and 7123 Hz, amplitudes 0.3 down to 0.01) under a
// slow amplitude envelope, plus uniform noise of amplitude 1e-3. When `silent_from` < `silent_to`, samples
// [silent_from, silent_to) are exactly zero, so those frames sit on the floor.
inline std::vector<float> ref_test_signal(size_t n, uint32_t seed = 1, size_t silent_from = 0, size_t silent_to = 0) {
  std::vector<float> x(n);
  uint32_t state = seed;
  for (size_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    const double t = static_cast<double>(i) / kRefSampleRate;
    const double envelope = 0.6 + 0.4 * std::sin(2 * kRefPi * 0.37 * t);
    const double tones = 0.3 * std::sin(2 * kRefPi * 220.0 * t) + 0.1 * std::sin(2 * kRefPi * 1375.5 * t + 0.3) +
                         0.05 * std::sin(2 * kRefPi * 3960.0 * t + 1.1) + 0.01 * std::sin(2 * kRefPi * 7123.0 * t);
    const double noise = 2e-3 * ((state >> 8) / 16777216.0 - 0.5);
    x[i] = i >= silent_from && i < silent_to ? 0.0f : static_cast<float>(envelope * tones + noise);
  }
  return x;
}

// The tolerance of an fp32 log-mel against this reference, in the final scaled units ((log10 + 4) / 4): max
// |got − ref| ≤ 2e-4 over every bin. Measured on the signals of the tests (ref_test_signal: 30 s with a silent
// second, 1234 samples, 16000 samples without padding, 100 samples; 80 and 128 mels), the fp32 implementations
// differ from the fp64 reference by at most:
//   LogMel::compute (FFTW, fp32)                         8.9e-5  (128 mels, 30 s)
//   a direct fp32 DFT (fp32 twiddles and accumulation)   4.8e-5
// The error is the FFT's absolute rounding (relative to the frame's energy) over the bin's power, so it peaks
// in the quietest bins above the floor (here about 6.6 decades below the loudest); the clamp and the floor are
// 1-Lipschitz and do not amplify it (the floor moves with the error of the maximum). 2e-4 is about twice the
// worst measured. Semantic mistakes are far outside it (measured against LogMel::compute on 150..4000
// samples): the input one sample late 0.5, numpy's "symmetric" padding instead of "reflect" 0.5, the
// symmetric instead of the periodic Hann window 0.024.
inline constexpr double kRefLogMelTolerance = 2e-4;

// Largest |got − ref| over two equally long arrays, and where it is.
struct RefMaxDiff {
  double value = 0.0;
  size_t index = 0;
};
template <class T>
RefMaxDiff ref_max_abs_diff(const std::vector<T>& got, const std::vector<double>& ref) {
  RefMaxDiff d;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    double diff = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (std::isnan(diff)) diff = std::numeric_limits<double>::infinity();  // NaN: the largest difference
    if (diff > d.value) d = {diff, i};
  }
  return d;
}

}  // namespace wisp::test
