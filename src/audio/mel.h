// Whisper's log-mel spectrogram, computed exactly as faster-whisper's FeatureExtractor.__call__ does, so the
// encoder sees the same input features as in the reference implementation.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace wisp {

inline constexpr int kNFft = 400;                 // 25 ms window at 16 kHz
inline constexpr int kHopLength = 160;            // 10 ms hop: 100 frames per second
inline constexpr int kNFreqBins = kNFft / 2 + 1;  // 201 one-sided FFT bins

class LogMel {
 public:
  // n_mels: 80 (all models up to large-v2) or 128 (large-v3). Throws InvalidArgument otherwise.
  explicit LogMel(int n_mels);

  // samples: [n_samples] 16 kHz mono. pad_samples zeros are appended first (FeatureExtractor's `padding`;
  // 160 by default, as faster-whisper's transcribe uses), then a centered STFT runs with reflect padding.
  // Returns [n_mels, n_frames] row-major with n_frames = n_frames(samples.size(), pad_samples).
  // Throws InvalidArgument when there are no samples or the padded input is shorter than one hop.
  // Safe to call from several threads at once.
  std::vector<float> compute(std::span<const float> samples, int pad_samples = 160) const;

  // Frames compute() returns: one per hop of the padded input (the STFT's last, partial frame is dropped).
  int n_frames(size_t n_samples, int pad) const;

  int n_mels() const { return n_mels_; }

  // Slaney-normalized mel filterbank (librosa's mel(sr=16000, n_fft=400, n_mels), as faster-whisper builds
  // it), computed in double and rounded to float: [n_mels, 201] row-major.
  static std::vector<float> filters(int n_mels);

 private:
  struct Plan;  // owns the FFTW plan; shared so LogMel stays cheap to copy

  int n_mels_;
  std::vector<float> filters_;   // [n_mels, kNFreqBins]
  std::vector<int> band_begin_;  // [n_mels] first nonzero bin of each filter
  std::vector<int> band_end_;    // [n_mels] one past the last nonzero bin
  std::vector<float> window_;    // [kNFft] periodic Hann
  std::shared_ptr<const Plan> plan_;
};

}  // namespace wisp
